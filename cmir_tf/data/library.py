"""A user's own music library as a source for ``prepare``: the audio files of a folder, their tags and
playlists, turned into what a Melon folder gives (songs with genres, artists, albums; playlists), plus
each song's audio file for the records step.

``python -m cmir_tf.prepare --library DIR --out OUT`` (:mod:`cmir_tf.prepare.preparation`) uses a
:class:`LibrarySource`; the preparation after it (split, CF, word2vec, shards, resume, manifest) is
the Melon one.

**Scan** (:func:`scan`): every file under DIR with an audio suffix (:data:`LIBRARY_AUDIO`, any case)
and every ``.m3u``/``.m3u8``. Folders are walked without following folder links (no link loop can
trap the walk); a link to a file is followed. A file is skipped, with one line on stderr and a count in
the manifest, when it is not a regular file (FIFO, device, dangling link or link loop: never opened),
cannot be read, is empty, or holds the same bytes as a file met before it in path order
(``duplicate``: kept once; only files of equal size are hashed). Files with other suffixes are
ignored. Names that are not UTF-8 are kept as bytes (shown with ``\\x..`` escapes).

**Songs** get stable integer ids (:func:`assign_ids`) kept in the prepared folder's
``library_ids.json`` (:data:`IDS_FILE`): ``{"next_id": n, "songs": [{"id", "path"}]}`` with paths
relative to DIR (JSON ``\\udcXX`` escapes for bytes that are not UTF-8). A rerun over a grown library
keeps every known path's id and numbers new files from ``next_id`` in path order; an id is never reused.

**Metadata** (:func:`read_metadata`): tags (:mod:`cmir_tf.data.library_tags`) read in worker processes, a
sidecar's overrides, and where a file has no album or artist its folders stand in: the usual
``Artist/Album/track`` layout — the parent folder is the album, the one above it the artist (a file
directly in DIR has neither). An album is (album name, first artist), so two "Greatest Hits" of two
artists are two albums. Genres seen in fewer than ``min_genre_count`` songs are dropped and reported.

**Playlists**: the M3U files (:mod:`cmir_tf.data.library_playlists`); with none, each album is one playlist
(the manifest's ``library.playlists_from`` says ``albums``), so CF vectors and playlist pairs exist.
With neither (``none``), every song is kept, without CF vector or playlist pairs: only the modes without
CF or playlist terms train (``ss``, ``aim_artist``, and with genres ``aim_genre``, ``contr_g``, ``bline_g``).
As with Melon, a song in no playlist gets no CF vector and is skipped (``no_playlist``); a song with no
genre is skipped (``no_genres``) unless the library has no genre at all (or ``ignore_genres``): then
every song is kept, the vocabulary is empty and only modes without genre terms train.

**Mel** (:func:`audio_mel`): :func:`cmir_tf.audio.decoding.load_audio` (16 kHz mono) then
:func:`cmir_tf.audio.frontend.melspectrogram` — exactly ``embed``'s path, so training sees what inference
sees. A track shorter than one 256-frame patch (4.1 s) is skipped as ``too_short``; a file the decoder
refuses as ``undecodable`` (its message printed).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field

from cmir_tf.data.library_playlists import PLAYLIST_EXTENSIONS, read_playlists
from cmir_tf.data.library_tags import genre_code, read_sidecar, read_tags
from cmir_tf.data.melon import MelError, Song
from cmir_tf.data.prepared import LIBRARY_IDS as IDS_FILE
from cmir_tf.data.prepared import read_library_ids, write_library_ids
from cmir_tf.errors import DataError
from cmir_tf.workpool import imap, progress_bar

LIBRARY_AUDIO = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3")
TAG_CHUNK = 64  # files whose tags one worker task reads


def shown(path: str) -> str:
    """A path for a message: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- scan
@dataclass
class Scan:
    """What :func:`scan` found: audio files (relative paths, sorted), playlists (absolute), skips."""

    root: str
    files: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # rel path: (size, mtime_ns)
    playlists: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # [(rel path, reason)]


def _check_file(full: str) -> tuple[os.stat_result | None, str | None]:
    try:
        st = os.stat(full)  # follows a file link; a loop or a dangling link raises
    except OSError as e:
        return None, "link_loop" if e.errno == errno.ELOOP else "missing" if os.path.islink(full) else "unreadable"
    if not stat.S_ISREG(st.st_mode):
        return None, "not_a_file"
    if st.st_size == 0:
        return None, "empty"
    if not os.access(full, os.R_OK):
        return None, "unreadable"
    return st, None


def _walk(root: str, out: Scan) -> list:
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False, onerror=lambda e: out.skipped.append(
            (os.path.relpath(e.filename, root), "unreadable"))):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            ext = os.path.splitext(name)[1].lower()
            if ext in PLAYLIST_EXTENSIONS:
                out.playlists.append(full)
            elif ext in LIBRARY_AUDIO:
                st, reason = _check_file(full)
                rel = os.path.relpath(full, root)
                if reason:
                    out.skipped.append((rel, reason))
                else:
                    found.append((rel, st))
    return found


def _digest(full: str) -> str | None:
    h = hashlib.sha256()
    try:
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def scan(root) -> Scan:
    """Walk the library (module docstring); duplicates by inode, then by content among equal sizes."""
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(f"{root}: library folder does not exist")
    out = Scan(root)
    found = sorted(_walk(root, out))
    by_size, seen_inode = {}, {}
    for rel, st in found:
        key = (st.st_dev, st.st_ino)
        if key in seen_inode:
            out.skipped.append((rel, f"duplicate of {shown(seen_inode[key])}"))
            continue
        seen_inode[key] = rel
        by_size.setdefault(st.st_size, []).append(rel)
        out.stats[rel] = (st.st_size, st.st_mtime_ns)
    for group in (g for g in by_size.values() if len(g) > 1):
        first = {}
        for rel in group:
            d = _digest(os.path.join(root, rel))
            if d in first:
                out.skipped.append((rel, f"duplicate of {shown(first[d])}"))
                del out.stats[rel]
            elif d is not None:
                first[d] = rel
    out.files = sorted(out.stats)
    out.skipped.sort()
    return out


# -------------------------------------------------------------------------------------------- ids
def assign_ids(files, known: dict, next_id: int) -> tuple[dict, int]:
    """Known paths keep their ids; new ones are numbered from ``next_id`` in path order."""
    ids = {}
    for rel in sorted(files):
        if rel in known:
            ids[rel] = known[rel]
    for rel in sorted(files):
        if rel not in ids:
            ids[rel] = next_id
            next_id += 1
    return ids, next_id


# --------------------------------------------------------------------------------------- metadata
def _tags_chunk(args):
    root, rels = args
    return [read_tags(os.path.join(root, rel)) for rel in rels]


def _read_all_tags(root: str, files: list, workers: int, progress: bool) -> list:
    chunks = [(root, files[i:i + TAG_CHUNK]) for i in range(0, len(files), TAG_CHUNK)]
    bar, out = progress_bar(len(files), "read tags", progress), []
    for result in imap(_tags_chunk, chunks, workers):
        out.extend(result); bar.update(len(result))
    bar.close()
    for rel, (_, problem) in zip(files, out):
        if problem:
            _say(f"{shown(os.path.join(root, rel))}: {problem} (tags ignored, audio kept)")
    return [t for t, _ in out]


def _with_fallbacks(rel: str, tags: dict, override: dict) -> dict:
    """Sidecar over tags; the folders stand in for a missing album (parent) and artist (grandparent)."""
    t = {**tags, **override}
    folders = os.path.dirname(rel).split(os.sep) if os.path.dirname(rel) else []
    if not t["album"] and folders:
        t["album"] = folders[-1]
    if not t["artists"] and len(folders) >= 2:
        t["artists"] = [folders[-2]]
    return t


def _dense(keys) -> dict:
    return {k: i for i, k in enumerate(sorted(set(keys)))}


def _genre_vocabulary(tags: list, min_count: int) -> tuple[dict, dict]:
    """``({code: display name} kept, {display name: count} dropped)``: the most frequent spelling shows."""
    count, spellings = Counter(), {}
    for t in tags:
        for g in t["genres"]:
            count[genre_code(g)] += 1
            spellings.setdefault(genre_code(g), Counter())[g] += 1
    name = {c: sorted(sp.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for c, sp in spellings.items()}
    kept = {c: name[c] for c in sorted(count) if count[c] >= min_count}
    dropped = {name[c]: n for c, n in sorted(count.items()) if n < min_count}
    return kept, dropped


def build_songs(ids: dict, tags: dict, genre_names: dict) -> tuple[dict, dict]:
    """``({id: melon.Song}, {album key: [ids]})`` from each file's final tags ``{rel: tags}``."""
    artists = _dense(a.casefold() for t in tags.values() for a in t["artists"])
    album_key = {rel: (t["album"].casefold(), (t["artists"] or [""])[0].casefold())
                 for rel, t in tags.items() if t["album"]}
    albums = _dense(album_key.values())
    songs, members = {}, {}
    for rel, t in tags.items():
        sid = ids[rel]
        codes = [c for c in dict.fromkeys(genre_code(g) for g in t["genres"]) if c in genre_names]
        album = albums.get(album_key.get(rel))
        songs[sid] = Song(id=sid, major=codes, album_id=album,
                          artist_id_basket=list(dict.fromkeys(artists[a.casefold()] for a in t["artists"])),
                          artist_name_basket=list(t["artists"]), song_name=t["title"] or os.path.basename(rel))
        if album is not None:
            members.setdefault(album, []).append(sid)
    return songs, members


def read_metadata(scan_: Scan, ids: dict, *, sidecar=None, min_genre_count: int = 1,
                  ignore_genres: bool = False, workers: int = 1, progress: bool = True) -> dict:
    """The library as :func:`cmir_tf.prepare.song_split.load_metadata` gives a Melon folder (``songs``,
    ``genre_names``, ``playlists`` as id lists, ``stats``) plus ``library``: what the manifest records."""
    root, files = scan_.root, scan_.files
    overrides = read_sidecar(sidecar, root) if sidecar else {}
    raw = _read_all_tags(root, files, workers, progress)
    tags = {rel: _with_fallbacks(rel, t, overrides.get(os.path.normpath(rel), {})) for rel, t in zip(files, raw)}
    if ignore_genres:
        tags = {rel: {**t, "genres": []} for rel, t in tags.items()}
    genre_names, dropped = _genre_vocabulary(tags.values(), min_genre_count)
    if dropped:
        _say(f"{len(dropped)} genres in fewer than {min_genre_count} songs dropped: "
             + ", ".join(f"{g} ({n})" for g, n in list(dropped.items())[:20]) + (" …" if len(dropped) > 20 else ""))
    songs, albums = build_songs(ids, tags, genre_names)
    pl_names = []
    playlists, pl_stats = read_playlists(scan_.playlists, root, set(files), log=_say, names=pl_names)
    source = "m3u" if playlists else "albums" if albums else "none"
    id_lists = ([[ids[r] for r in pl] for pl in playlists] if playlists
                else [sorted(m) for _, m in sorted(albums.items())])
    if not playlists:  # an album is named "album — artist" as its first song's tags spell them
        rel_of = {i: r for r, i in ids.items()}
        first = [tags[rel_of[m[0]]] for m in id_lists]
        pl_names = [" — ".join([t["album"], *t["artists"][:1]]) for t in first]
    stats = {"songs_in_meta": len(songs), "duplicate_song_meta": 0, "playlists": len(id_lists),
             "playlist_entries": sum(len(p) for p in id_lists), "unknown_playlist_entries": 0}
    library = {"root": shown(root), "id_file": IDS_FILE, "audio_files": len(files) + len(scan_.skipped),
               "songs": len(files), "files_skipped": dict(sorted(Counter(
                   r.split(" of ")[0] for _, r in scan_.skipped).items())),
               "playlists_from": source, "playlist_files": pl_stats, "albums": len(albums),
               "artists": len({a for s in songs.values() for a in s.artist_id_basket}),
               "genres": {"kept": len(genre_names), "dropped": dropped, "min_count": min_genre_count,
                          "ignored": bool(ignore_genres),
                          "songs_with_genres": sum(1 for s in songs.values() if s.genres)},
               "sidecar": shown(os.path.abspath(sidecar)) if sidecar else None}
    return {"songs": songs, "genre_names": genre_names, "playlists": id_lists,
            "playlist_names": [shown(n) for n in pl_names], "stats": stats, "library": library}


# -------------------------------------------------------------------------------------------- mel
_MEL_FN = []


def audio_mel(path: str):
    """An audio file → its ``(n_frames, 48)`` float32 mel, ``embed``'s path; faults → ``MelError``
    (``undecodable`` with the decoder's message, ``too_short``)."""
    import numpy as np

    from cmir_tf.audio import decoding as audio
    from cmir_tf.constants import PATCH_FRAMES

    alias, fd = path, None
    try:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # libsndfile takes UTF-8 names only: reach the file by its descriptor
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            alias = f"/proc/self/fd/{fd}"
        x = audio.load_audio(alias)
    except (DataError, OSError, ValueError, RuntimeError) as e:
        raise MelError(path, "undecodable", str(e).removeprefix(f"{alias}: ")) from None
    finally:
        if fd is not None:
            os.close(fd)
    if not _MEL_FN:
        import tensorflow as tf

        from cmir_tf.audio import frontend

        _MEL_FN.append(tf.function(frontend.melspectrogram, input_signature=[tf.TensorSpec([None], tf.float32)]))
    mel = np.asarray(_MEL_FN[0](x), np.float32)
    if mel.shape[0] < PATCH_FRAMES:
        raise MelError(path, "too_short", f"{mel.shape[0]} frames, fewer than one {PATCH_FRAMES}-frame patch")
    return mel


# ----------------------------------------------------------------------------------------- source
class LibrarySource:
    """A library folder as prepare's source (see :mod:`cmir_tf.prepare.preparation`, which calls these in order:
    :meth:`check`, :meth:`open`, :meth:`fingerprint`, :meth:`load_metadata`, then :meth:`select`,
    :meth:`strata`, :meth:`task_fields` and :meth:`manifest_fields` from its steps)."""

    is_library = True

    def __init__(self, root, *, sidecar=None, min_genre_count: int = 1, ignore_genres: bool = False):
        self.root = os.path.abspath(os.fspath(root))
        self.sidecar, self.min_genre_count, self.ignore_genres = sidecar, int(min_genre_count), bool(ignore_genres)
        self.found: Scan | None = None
        self.ids: dict = {}
        self.next_id = 0
        self.meta: dict = {}

    def check(self) -> None:
        if not os.path.isdir(self.root):
            raise DataError(f"{self.root}: library folder does not exist")
        if self.sidecar is not None and not os.path.isfile(self.sidecar):
            raise DataError(f"{self.sidecar}: tags sidecar does not exist")
        if self.min_genre_count < 1:
            raise DataError(f"min_genre_count must be ≥ 1, got {self.min_genre_count}")

    def open(self, out) -> None:
        """Scan the library and number its songs, keeping the ids of ``out``'s id file (read before an
        overwrite clears the folder; the file itself is never cleared)."""
        self.found = scan(self.root)
        for rel, reason in self.found.skipped:
            _say(f"{shown(os.path.join(self.root, rel))}: skipped ({reason})")
        if not self.found.files:
            raise DataError(f"{self.root}: no usable audio file ({', '.join(LIBRARY_AUDIO)}) in the library")
        known, next_id = read_library_ids(out.path(IDS_FILE))
        self.ids, self.next_id = assign_ids(self.found.files, known, next_id)

    def write_ids(self, out) -> None:
        write_library_ids(out.path(IDS_FILE), self.ids, self.next_id)

    def fingerprint(self, params: dict) -> str:
        """SHA-256 of the parameters, the options and every audio/playlist file's path, size and mtime."""
        h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
        h.update(json.dumps([self.min_genre_count, self.ignore_genres]).encode())
        extra = [*self.found.playlists, *([os.path.abspath(self.sidecar)] if self.sidecar else [])]
        for path in extra:
            with_stat = os.stat(path) if os.path.isfile(path) else None
            h.update(f"{path}:{with_stat and with_stat.st_size}:{with_stat and with_stat.st_mtime_ns}".encode(
                "utf-8", "surrogateescape"))
        for rel in self.found.files:
            size, mtime = self.found.stats[rel]
            h.update(f"{rel}:{self.ids[rel]}:{size}:{mtime}".encode("utf-8", "surrogateescape"))
        return h.hexdigest()

    def load_metadata(self, workers: int, progress: bool) -> dict:
        self.meta = read_metadata(self.found, self.ids, sidecar=self.sidecar, min_genre_count=self.min_genre_count,
                                  ignore_genres=self.ignore_genres, workers=workers, progress=progress)
        return self.meta

    def select(self, meta: dict) -> tuple[list, dict]:
        """Songs in a playlist (any song when the library has neither playlists nor albums), with a genre
        unless the library has none → ``(sorted ids, {id: reason})``."""
        in_pl = {s for pl in meta["playlists"] for s in pl} if meta["playlists"] else set(meta["songs"])
        has_genres = bool(meta["genre_names"])
        ids, skipped = [], {}
        for sid in sorted(meta["songs"]):
            if sid not in in_pl:
                skipped[sid] = "no_playlist"
            elif has_genres and not meta["songs"][sid].genres:
                skipped[sid] = "no_genres"
            else:
                ids.append(sid)
        return ids, skipped

    def strata(self, sid: int) -> int | None:
        """The label the split also balances besides the genres: the song's album (so an album's songs
        are spread over train, val and test)."""
        return self.meta["songs"][sid].album_id

    def path(self, sid: int) -> str:
        if not hasattr(self, "_paths"):
            self._paths = {i: os.path.join(self.root, rel) for rel, i in self.ids.items()}
        return self._paths[sid]

    def task_fields(self, sids) -> dict:
        """What a shard task needs to compute its songs' mels: ``{"audio": {id: file}}``."""
        return {"audio": {int(s): self.path(s) for s in sids}}

    def manifest_fields(self) -> dict:
        lib = dict(self.meta["library"])
        lib["skipped_files"] = [{"path": shown(rel), "reason": r} for rel, r in self.found.skipped]
        return {"library": lib}


def library_summary(lib: dict) -> str:
    """The library lines of prepare's summary."""
    g = lib["genres"]
    skipped = ", ".join(f"{k} {v}" for k, v in lib["files_skipped"].items()) or "none"
    return (f"library {lib['root']}: {lib['songs']} audio files used of {lib['audio_files']} (skipped: {skipped}); "
            f"{lib['artists']} artists, {lib['albums']} albums; playlists from {lib['playlists_from']}; "
            f"{g['kept']} genres (dropped below {g['min_count']} songs: {len(g['dropped'])}); ids in {lib['id_file']}")
