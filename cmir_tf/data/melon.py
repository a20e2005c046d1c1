"""The Melon Playlist Dataset layout (docs/DATASETS.md): paths, JSON readers and safe mel loading.

A Melon folder holds ``song_meta.json``, ``genre_gn_all.json``, ``train.json``, ``val.json``,
``test.json`` and ``arena_mel/{id // 1000}/{id}.npy`` — one ``(48, n_frames)`` float32 dB array per
song (bands × frames). :func:`load_mel` returns it TIME-MAJOR, ``(n_frames, 48)`` float32.

Mel files are data, never code: they are read with ``np.load(..., allow_pickle=False)`` after their
``.npy`` header has been checked, so an object-dtype (pickled) file is refused before any byte of it is
unpickled. Every fault raises :class:`MelError` with a short machine-readable ``reason``:

===============  ===========================================================================
reason           meaning
===============  ===========================================================================
``missing``      no file at the song's path
``unreadable``   not an ``.npy`` file, a corrupt header, or truncated (fewer bytes than its header says)
``pickled``      an object-dtype ``.npy`` or a bare pickle — refused, never unpickled
``bad_dtype``    not a real floating-point array (e.g. int16, complex)
``bad_shape``    not two-dimensional
``wrong_bands``  first axis is not 48 mel bands
``too_short``    fewer frames than one 256-frame patch
``non_finite``   holds ``inf`` or ``NaN``
``not_a_file``   the path is a folder, FIFO, socket or device — never opened in a way that could block
===============  ===========================================================================

Non-finite values are REJECTED, not repaired. Melon's documented chain (Essentia ``lin2db`` clips the
power at 1e-10, i.e. −200 dB) cannot produce ``inf``/``NaN``, so a file holding one was not made by that
chain or was damaged afterwards, and its finite values are suspect too; such files are a handful among
650k songs, so dropping them (recorded in the manifest's ``skipped``) costs nothing measurable, whereas
clipping to −200 dB would silently train on a spectrogram of unknown provenance.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np

from cmir_tf import fileio
from cmir_tf.constants import N_BANDS, PATCH_FRAMES
from cmir_tf.errors import DataError

MEL_REASONS = ("missing", "unreadable", "pickled", "bad_dtype", "bad_shape", "wrong_bands", "too_short",
               "non_finite", "not_a_file")
ID_MAX = 2**63 - 1  # ids are stored as int64
_DIGITS = re.compile(r"0|[1-9][0-9]{0,18}")
PLAYLIST_FILES = ("train", "val", "test")


class MelError(DataError):
    """A song's mel file cannot be used; ``reason`` is one of :data:`MEL_REASONS`."""

    def __init__(self, path, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        msg = f"{self.path}: {reason}"
        super().__init__(msg + (f" ({detail})" if detail else ""))

    def __reduce__(self):  # picklable across worker processes
        return (MelError, (self.path, self.reason, self.detail))


# --------------------------------------------------------------------------------------------- layout
class MelonLayout:
    """Paths of a Melon folder (real or synthetic)."""

    def __init__(self, root):
        self.root = os.fspath(root)

    @property
    def song_meta(self) -> str:
        return os.path.join(self.root, "song_meta.json")

    @property
    def genres(self) -> str:
        return os.path.join(self.root, "genre_gn_all.json")

    def playlists(self, split: str) -> str:
        """``train.json`` / ``val.json`` / ``test.json``."""
        if split not in PLAYLIST_FILES:
            raise ValueError(f"playlist file must be one of {PLAYLIST_FILES}, got {split!r}")
        return os.path.join(self.root, f"{split}.json")

    @property
    def mel_root(self) -> str:
        return os.path.join(self.root, "arena_mel")

    def mel_path(self, song_id: int) -> str:
        """``arena_mel/{id // 1000}/{id}.npy``."""
        song_id = int(song_id)
        return os.path.join(self.root, "arena_mel", str(song_id // 1000), f"{song_id}.npy")

    def check(self) -> None:
        """Raise :class:`DataError` naming the first required metadata file that is missing."""
        if not os.path.isdir(self.root):
            raise DataError(f"{self.root}: Melon folder does not exist")
        for p in (self.song_meta, self.genres, *(self.playlists(s) for s in PLAYLIST_FILES)):
            if not os.path.isfile(p):
                raise DataError(f"{p}: required Melon file is missing")


# ----------------------------------------------------------------------------------------------- JSON
@dataclass
class Song:
    """One ``song_meta.json`` entry, with the optional fields defaulted."""

    id: int
    major: list = field(default_factory=list)  # song_gn_gnr_basket
    detailed: list = field(default_factory=list)  # song_gn_dtl_gnr_basket
    album_id: int | None = None
    album_name: str = ""
    artist_id_basket: list = field(default_factory=list)
    artist_name_basket: list = field(default_factory=list)
    song_name: str = ""
    issue_date: str = ""

    @property
    def genres(self) -> list:
        """Major then detailed genre codes, duplicates removed, order kept."""
        return list(dict.fromkeys([*self.major, *self.detailed]))


def _read_json(path):
    return fileio.read_json(path, "Melon file")


def _int(value, where: str, *, minimum: int = 0) -> int:
    """A JSON integer (or a string of its decimal digits, ``"12"``) in ``[minimum, 2^63 − 1]``; anything
    else (``0.9``, ``true``, ``"abc"``, ``Infinity``, 10^30) → ``DataError`` naming ``where``. ``int()``
    would silently turn 0.9 into 0 and true into 1."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where} is {json_repr(value)}, not an integer")
    if not minimum <= value <= ID_MAX:
        raise DataError(f"{where} is {value}, outside {minimum}..2^63-1")
    return value


def _list(value, where: str) -> list:
    """A JSON list (``None`` → ``[]``); anything else → ``DataError`` naming ``where``."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where} is {json_repr(value)}, not a list")
    return value


def json_repr(value) -> str:
    """A short display of a JSON value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _codes(value, where: str) -> list:
    if isinstance(value, str):
        value = [value]
    codes = _list(value, where)
    for code in codes:
        if code is not None and not isinstance(code, str):
            raise DataError(f"{where} holds {json_repr(code)}, not a genre code")
    return [c for c in codes if c]


def _song(e, where: str) -> Song:
    """One ``song_meta.json`` entry, every field type checked (``where`` names the file and entry)."""
    album = e.get("album_id")
    return Song(
        id=_int(e.get("id"), f"{where}: id"),
        major=_codes(e.get("song_gn_gnr_basket"), f"{where}: song_gn_gnr_basket"),
        detailed=_codes(e.get("song_gn_dtl_gnr_basket"), f"{where}: song_gn_dtl_gnr_basket"),
        album_id=None if album is None else _int(album, f"{where}: album_id"),
        album_name=str(e.get("album_name") or ""),
        artist_id_basket=[_int(a, f"{where}: artist_id_basket")
                          for a in _list(e.get("artist_id_basket"), f"{where}: artist_id_basket")],
        artist_name_basket=list(_list(e.get("artist_name_basket"), f"{where}: artist_name_basket")),
        song_name=str(e.get("song_name") or ""),
        issue_date=str(e.get("issue_date") or ""),
    )


def read_song_meta(path) -> tuple[dict, int]:
    """Read ``song_meta.json`` → ``({id: Song}, n_duplicates)``.

    Every entry must be an object whose ``id`` is an integer in 0..2^63−1 (a JSON integer or its
    decimal digits as a string; ``0.9``, ``true``, ``"abc"``, ``Infinity`` are refused, not rounded); baskets must be lists, ``album_id`` and artist ids
    integers. Each fault is a :class:`DataError` naming the file and the entry. A repeated id keeps the
    FIRST entry and is counted. Missing optional fields default to empty.
    """
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of songs")
    songs: dict[int, Song] = {}
    dup = 0
    for i, e in enumerate(data):
        if not isinstance(e, dict) or "id" not in e:
            raise DataError(f"{path}: entry {i} has no integer 'id'")
        song = _song(e, f"{path}: entry {i}")
        if song.id in songs:
            dup += 1
            continue
        songs[song.id] = song
    return songs, dup


def read_genres(path) -> dict:
    """Read ``genre_gn_all.json`` → ``{code: name}`` (major codes end in ``00``)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object mapping genre code to name")
    return {str(k): str(v) for k, v in data.items()}


def _playlist(p, where: str) -> dict:
    return {
        "id": _int(p["id"], f"{where}: id"),
        "plylst_title": str(p.get("plylst_title") or ""),
        "tags": list(_list(p.get("tags"), f"{where}: tags")),
        "songs": [_int(s, f"{where}: song") for s in _list(p.get("songs"), f"{where}: songs")],
        "like_cnt": 0 if p.get("like_cnt") is None else _int(p["like_cnt"], f"{where}: like_cnt"),
        "updt_date": str(p.get("updt_date") or ""),
    }


def read_playlists(path) -> list[dict]:
    """Read a playlist file → list of ``{"id", "plylst_title", "tags", "songs", "like_cnt", "updt_date"}``.

    Missing fields default (``songs``/``tags`` to ``[]``); ids, song ids and ``like_cnt`` must be JSON
    integers (as in :func:`read_song_meta`), ``songs`` and ``tags`` lists; each fault is a
    :class:`DataError` naming the file and the playlist's position. Val/test files of the real dataset
    mask some fields, which is why everything but ``id`` is optional.
    """
    data = _read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of playlists")
    out = []
    for i, p in enumerate(data):
        if not isinstance(p, dict) or "id" not in p:
            raise DataError(f"{path}: playlist {i} has no 'id'")
        out.append(_playlist(p, f"{path}: playlist {i}"))
    return out


# ------------------------------------------------------------------------------------------------ mel
def _read_header(f, path):
    """Check the ``.npy`` header of open file ``f`` → ``(shape, dtype, data_offset)``; raise MelError."""
    fmt = np.lib.format
    head = f.read(6)
    if head != fmt.MAGIC_PREFIX:
        # 0x80 is the PROTO opcode every pickle of protocol ≥ 2 starts with (np.save of an object
        # array without the npy wrapper, or pickle.dump): refuse without unpickling.
        if head[:1] == b"\x80":
            raise MelError(path, "pickled", "bare pickle, refused")
        raise MelError(path, "unreadable", "not an .npy file")
    f.seek(0)
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f) if version == (2, 0) else \
                fmt._read_array_header(f, version)  # noqa: SLF001 (3.0 has no public reader)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as e:  # noqa: BLE001 — numpy's header parser raises many types on garbage
        raise MelError(path, "unreadable", f"corrupt header: {type(e).__name__}: {e}") from None
    if dtype.hasobject:
        raise MelError(path, "pickled", f"object dtype {dtype}, refused")
    return shape, dtype, f.tell()


def _check_layout(path, shape, dtype):
    if dtype.kind != "f":
        raise MelError(path, "bad_dtype", f"dtype {dtype}, expected floating point")
    if len(shape) != 2:
        raise MelError(path, "bad_shape", f"shape {shape}, expected ({N_BANDS}, n_frames)")
    if shape[0] != N_BANDS:
        raise MelError(path, "wrong_bands", f"{shape[0]} bands, expected {N_BANDS}")
    if shape[1] < PATCH_FRAMES:
        raise MelError(path, "too_short", f"{shape[1]} frames, need at least {PATCH_FRAMES}")


def _open_mel(path):
    """Open a mel file for reading; a missing path, a non-file (never blocking on a FIFO) or an unreadable
    one → :class:`MelError`."""
    try:
        return fileio.open_regular(path)
    except FileNotFoundError:
        raise MelError(path, "missing") from None
    except fileio.NotAFile as e:
        raise MelError(path, "not_a_file", e.kind) from None
    except OSError as e:
        raise MelError(path, "unreadable", e.strerror or str(e)) from None


def _inspect_open(f, path) -> tuple[tuple, np.dtype]:
    shape, dtype, offset = _read_header(f, path)
    _check_layout(path, shape, dtype)
    need = offset + int(np.prod(shape)) * dtype.itemsize
    size = os.fstat(f.fileno()).st_size
    if size < need:
        raise MelError(path, "unreadable", f"truncated: {size} bytes, header says {need}")
    return shape, dtype


def inspect_mel(path) -> int:
    """Check a mel file's header and size without reading its values → ``n_frames``.

    Catches every fault :func:`load_mel` does except ``non_finite`` (which needs the values) — a cheap
    pre-scan (a few hundred bytes a file) to decide which songs enter the split.
    """
    path = os.fspath(path)
    with _open_mel(path) as f:
        shape, _ = _inspect_open(f, path)
    return int(shape[1])


def load_mel(path) -> np.ndarray:
    """Load a Melon mel file → ``(n_frames, 48)`` float32, time-major (transposed from the file).

    Raises :class:`MelError` (a :class:`~cmir_tf.errors.DataError`) with ``reason`` among
    :data:`MEL_REASONS`. Never unpickles: the header is checked first and ``np.load`` runs with
    ``allow_pickle=False``, on the same open file (so the checked file is the one read).
    """
    path = os.fspath(path)
    with _open_mel(path) as f:
        _inspect_open(f, path)
        f.seek(0)
        try:
            arr = np.load(f, allow_pickle=False, mmap_mode=None)
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise MelError(path, "pickled", str(e)) from None
            raise MelError(path, "unreadable", str(e)) from None
        except Exception as e:  # noqa: BLE001 — a damaged body can fail in many ways
            raise MelError(path, "unreadable", f"{type(e).__name__}: {e}") from None
    if not isinstance(arr, np.ndarray):  # e.g. an .npz archive
        raise MelError(path, "unreadable", f"not a single array ({type(arr).__name__})")
    _check_layout(path, arr.shape, arr.dtype)
    mel = np.ascontiguousarray(arr.T, dtype=np.float32)
    if not np.isfinite(mel).all():
        n_bad = int(mel.size - np.isfinite(mel).sum())
        raise MelError(path, "non_finite", f"{n_bad} inf/NaN values")
    return mel


# ------------------------------------------------------------------------------------------- writing
def write_mel(layout: MelonLayout, song_id: int, mel_bands_major: np.ndarray) -> str:
    """Write a song's mel as Melon stores it: ``(48, n_frames)`` float32 at ``layout.mel_path(id)``."""
    path = layout.mel_path(song_id)
    fileio.save_npy(path, np.asarray(mel_bands_major, dtype=np.float32))
    return path
