"""The prepared data folder: the one owner of its file names, its reading checks and its writing order.

``python -m cmir_tf.prepare`` writes it (through :class:`PreparedData`); the input pipeline, training,
export and evaluation read it (through :class:`PreparedData` too)::

    OUT/manifest.json      counts {train, val, test} (records written), skipped [{song_id, reason}],
                           skipped_by_reason, stats, params, versions, shards {split: [file names]},
                           n_genres, cf_dim, w2v_dim, metadata_only, compressed
    OUT/splits.json        {"train": [song ids], "val": [...], "test": [...]}  (the songs written, sorted)
    OUT/vocab.json         [{"index": i, "code": "GN0101", "name": "..."}] ordered by index
    OUT/word2vec.npy       (n_genres, w2v_dim) float32, row i = vocabulary index i
    OUT/cf_song_ids.npy    (n,) int64 — the train+val songs that have a CF vector
    OUT/cf_factors.npy     (n, cf_dim) float32, row-aligned with cf_song_ids.npy
    OUT/{split}/<shard>    TFRecord shards, named by :func:`cmir_tf.data.tfrecords.shard_name`
    OUT/pairs/{train,val}/ what audio-pair training needs (cmir_tf.data.pairs), each (n, k) int64:
        playlist.npy  artist.npy  genre.npy   (group, song) rows of the split's songs, sorted
        records.npy          (song, shard, offset, length): where each song's Example lies (shard =
                             position in the split's sorted shard list); absent for GZIP shards
    OUT/.prepare/          prepare's resume state:
        plan.json            fingerprint, params, splits, shards {split: [{name, songs}]}, cf, seconds,
                             skipped [[song_id, reason]]
        vocab.json  word2vec.npy  cf_song_ids.npy  cf_factors.npy   the side inputs, computed once
        done/<shard>.json    a finished shard: {shard, split, written, skipped, bytes}
    OUT/library_ids.json   a music library's songs: {"next_id", "songs": [{"id", "path"}]} (cmir_tf.data.library);
                           written first, never cleared, so a rerun keeps the ids
    OUT/library_playlists.json  a music library's playlists as song ids: {"from": "m3u"|"albums"|"none",
                           "names": [the M3U's path in the library, or "album — artist"],
                           "playlists": [[song ids]]} (every song, of every split: what ``evaluate
                           playlists`` needs; written before the manifest)
    OUT/.cmir-lock         held by the prepare writing here (:mod:`cmir_tf.lock`)

Writing order is the folder's completeness rule: ``manifest.json`` is written last (its presence means
the folder is complete), ``.prepare/plan.json`` last of the state (its presence means the cached side
inputs are complete), and a shard is written under a temporary name (:mod:`cmir_tf.fileio`) then
renamed, its done-record after it. Every other file is written atomically too.

Ownership: prepare writes only into an empty folder, a new one, or one it prepared before
(:meth:`PreparedData.create`), and deletes only names it recorded (the shards of its plan and
manifest, its side inputs, its state, the temporary files of its dead writers): other files in the
folder, even in ``{split}/``, are left alone.

Reading never trusts the folder: each fault is one :class:`~cmir_tf.errors.DataError` naming the file
and the reason; a shard name read from ``manifest.json`` or ``plan.json`` must stay inside its split
folder (:func:`cmir_tf.fileio.inside`); ``manifest.json``'s counts must match the records of the
shards; ``.npy`` files are never unpickled.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from pathlib import Path

import numpy as np

from cmir_tf import fileio
from cmir_tf.constants import CF_DIM, SPLITS
from cmir_tf.data.tfrecords import is_compressed, is_shard_name
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.lock import LOCK_NAME

MANIFEST = "manifest.json"
SPLITS_FILE = "splits.json"
VOCAB = "vocab.json"
WORD2VEC = "word2vec.npy"
CF_SONG_IDS = "cf_song_ids.npy"
CF_FACTORS = "cf_factors.npy"
OUTPUT_FILES = (MANIFEST, SPLITS_FILE, VOCAB, WORD2VEC, CF_SONG_IDS, CF_FACTORS)
PAIRS_DIR = "pairs"
PAIR_SPLITS = ("train", "val")
RELATIONS = ("playlist", "artist", "genre")  # pairs/{split}/<relation>.npy
RECORDS_INDEX = "records"  # pairs/{split}/records.npy
STATE_DIR = ".prepare"
PLAN = "plan.json"
DONE_DIR = "done"
LIBRARY_IDS = "library_ids.json"  # a library's song ids ↔ files (cmir_tf.data.library); kept by an overwrite
LIBRARY_PLAYLISTS = "library_playlists.json"  # a library's playlists (or albums) as song ids
OWN_NAMES = (*OUTPUT_FILES, LIBRARY_PLAYLISTS, STATE_DIR, *SPLITS, PAIRS_DIR, LOCK_NAME, LIBRARY_IDS)
STATE_FILES = (PLAN, VOCAB, WORD2VEC, CF_SONG_IDS, CF_FACTORS)
MAKE = "python -m cmir_tf.prepare"


class _File:
    """A file of the folder by its relative name: ``data.manifest_path`` → ``<root>/manifest.json``."""

    def __init__(self, *parts: str):
        self.name = os.path.join(*parts)

    def __get__(self, data, owner=None):
        return self if data is None else os.path.join(data.root, self.name)


class PreparedData:
    """Paths, checked readers and the writer side of one prepared folder (see the module doc)."""

    manifest_path = _File(MANIFEST)
    splits_path = _File(SPLITS_FILE)
    vocab_path = _File(VOCAB)
    word2vec_path = _File(WORD2VEC)
    cf_song_ids_path = _File(CF_SONG_IDS)
    cf_factors_path = _File(CF_FACTORS)
    plan_path = _File(STATE_DIR, PLAN)
    done_dir = _File(STATE_DIR, DONE_DIR)

    def __init__(self, root):
        self.root = os.fspath(root)

    def __repr__(self):
        return f"PreparedData({self.root!r})"

    # ------------------------------------------------------------------------------------------ paths
    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def split_dir(self, split: str) -> str:
        return self.path(split)

    def shard_path(self, split: str, name: str) -> str:
        return os.path.join(self.root, split, name)

    @property
    def state(self) -> "PreparedData":
        """The state folder: it caches the side inputs under the folder's own names."""
        return PreparedData(self.path(STATE_DIR))

    def done_path(self, shard: str) -> str:
        return os.path.join(self.done_dir, shard + ".json")

    # ---------------------------------------------------------------------------------------- reading
    def is_complete(self) -> bool:
        """Whether prepare finished here (``manifest.json`` is written last)."""
        return os.path.isfile(self.manifest_path)

    def read_manifest(self) -> dict:
        """``manifest.json`` as a dict; ``{}`` when there is none (a folder of bare shards)."""
        if not os.path.exists(self.manifest_path):
            return {}
        manifest = fileio.read_json(self.manifest_path, "manifest")
        if not isinstance(manifest, dict):
            raise DataError(f"{self.manifest_path}: the manifest must be a JSON object")
        return manifest

    def cf_dim(self, manifest: dict | None = None) -> int:
        """CF vector length: the manifest's ``cf_dim``, else ``constants.CF_DIM``."""
        manifest = self.read_manifest() if manifest is None else manifest
        value = manifest.get("cf_dim", CF_DIM)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise DataError(f"{self.manifest_path}: cf_dim must be a positive integer, got {value!r}")
        return value

    def shards_on_disk(self, split: str) -> list[str]:
        """Paths of the shard files in ``{split}/`` (whatever the manifest says), sorted."""
        folder = self.split_dir(split)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(p for p in (os.path.join(folder, n) for n in names if is_shard_name(n)) if os.path.isfile(p))

    def shard_files(self, split: str, manifest: dict | None = None) -> list[str]:
        """The split's shard paths, sorted: the manifest's ``shards[split]`` if listed (each must exist),
        else the shard files in ``{split}/``. Raises ``DataError`` naming the folder when there are none."""
        if not os.path.isdir(self.root):
            raise DataError(f"{self.root}: prepared data folder not found")
        manifest = self.read_manifest() if manifest is None else manifest
        listed = manifest.get("shards")
        listed = listed.get(split) if isinstance(listed, dict) else None
        files = self.shards_on_disk(split) if listed is None else [self._listed_shard(split, n) for n in listed]
        files = sorted(files)
        if not files:
            raise DataError(f"{self.split_dir(split)}: no TFRecord shards for split {split!r}")
        if len({is_compressed(f) for f in files}) > 1:
            raise DataError(f"{self.split_dir(split)}: mixes GZIP (.gz) and uncompressed shards")
        return files

    def _listed_shard(self, split: str, name) -> str:
        # Names are relative to the split folder (prepare's layout); the folder-relative form is accepted too.
        for path in self._shard_candidates(split, name, self.manifest_path):
            if os.path.isfile(path):
                return path
        raise DataError(f"{self.manifest_path}: shard {name!r} of split {split!r} is listed but missing")

    def _shard_candidates(self, split: str, name, source) -> tuple[str, ...]:
        entry = f"shard of split {split!r}"
        if not isinstance(name, str) or not is_shard_name(os.path.basename(name)):
            raise DataError(f"{source}: {entry} {name!r} is not a shard file name (*.tfrecord, *.tfrecord.gz)")
        if os.path.dirname(name) not in ("", split):
            fileio.inside(self.split_dir(split), name, source, entry)  # refuses '..' and absolute names
            return (self.shard_path(split, name),)
        return (fileio.inside(self.split_dir(split), name, source, entry),
                fileio.inside(self.root, name, source, entry))

    def planned_shard(self, split: str, name) -> str:
        """The path of a shard named in ``plan.json``: a plain shard name inside ``{split}/``."""
        if isinstance(name, str) and os.path.basename(name) != name:
            fileio.inside(self.split_dir(split), name, self.plan_path, f"shard of split {split!r}")
        return self._shard_candidates(split, name, self.plan_path)[0]

    def pair_dir(self, split: str) -> str:
        """``pairs/{split}/``: the split's audio-pair data."""
        return os.path.join(self.root, PAIRS_DIR, split)

    def pair_path(self, split: str, name: str) -> str:
        """``pairs/{split}/{name}.npy`` (``name``: a relation of :data:`RELATIONS` or the records index)."""
        return os.path.join(self.pair_dir(split), f"{name}.npy")

    def _read_pair_file(self, split: str, name: str, what: str, columns: int) -> np.ndarray:
        path = self.pair_path(split, name)
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing: this folder was prepared before audio pairs existed; rerun `{MAKE}` "
                            "into it with the same Melon folder and options (it adds the pair data and rewrites "
                            "no shard)")
        rows = fileio.load_npy(path, what, ndim=2, kind="i").astype(np.int64, copy=False)
        if rows.shape[1] != columns:
            raise DataError(f"{path}: {what} must be (n, {columns}) rows, got shape {rows.shape}")
        return rows

    def read_relation(self, split: str, source: str) -> np.ndarray:
        """``pairs/{split}/{source}.npy``: ``(n, 2)`` int64 (group, song) rows."""
        if source not in RELATIONS:
            raise DataError(f"{self.root}: no pair source {source!r}; choose one of {', '.join(RELATIONS)}")
        return self._read_pair_file(split, source, f"{source} relation", 2)

    def read_records_index(self, split: str) -> tuple[list[str], np.ndarray]:
        """(the split's sorted shard paths, ``(n, 4)`` int64 (song, shard, offset, length) rows)."""
        files = self.shard_files(split)
        if is_compressed(files[0]):
            raise DataError(f"{self.split_dir(split)}: audio pairs read records by offset, which GZIP shards do "
                            "not allow; prepare the folder without compression")
        index = self._read_pair_file(split, RECORDS_INDEX, "records index", 4)
        _check_records_index(self.pair_path(split, RECORDS_INDEX), index, files)
        return files, index

    def read_vocab(self) -> list[dict]:
        """``vocab.json``: ``[{"index": i, "code", "name"}]`` with entry i holding index i."""
        vocab = fileio.read_json(self.vocab_path, "genre vocabulary")
        if not isinstance(vocab, list):
            raise DataError(f"{self.vocab_path}: the genre vocabulary must be a JSON list")
        for i, v in enumerate(vocab):
            if not isinstance(v, dict) or v.get("index") != i or not isinstance(v.get("code"), str):
                raise DataError(f"{self.vocab_path}: entry {i} is not {{\"index\": {i}, \"code\": …, \"name\": …}}")
        return vocab

    def read_word2vec(self) -> np.ndarray:
        """``word2vec.npy`` → ``(n_genres, w2v_dim)`` float32 (never unpickled)."""
        return fileio.load_npy(self.word2vec_path, "word2vec matrix", ndim=2, kind="f").astype(np.float32, copy=False)

    def read_cf(self) -> tuple[np.ndarray, np.ndarray]:
        """``(cf_song_ids int64 (n,), cf_factors float32 (n, cf_dim))``, row-aligned."""
        ids_path, factors_path = self.cf_song_ids_path, self.cf_factors_path
        ids = fileio.load_npy(ids_path, "CF song ids", ndim=1, kind="i").astype(np.int64, copy=False)
        factors = fileio.load_npy(factors_path, "CF factors", ndim=2, kind="f").astype(np.float32, copy=False)
        if len(ids) != len(factors):
            raise DataError(f"{factors_path}: {len(factors)} rows for the {len(ids)} songs of {CF_SONG_IDS}")
        return ids, factors

    def read_library_songs(self) -> dict[int, str] | None:
        """``library_ids.json`` → ``{song id: path relative to the library}``; None when the folder was not
        prepared from a library."""
        path = self.path(LIBRARY_IDS)
        if not os.path.exists(path):
            return None
        return {i: p for p, i in read_library_ids(path)[0].items()}

    def read_library_playlists(self) -> tuple[str, list[list[int]], list[str]]:
        """``library_playlists.json`` → ``(source "m3u"|"albums"|"none", [[song ids]], [names])``, checked."""
        path = self.path(LIBRARY_PLAYLISTS)
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing (a library folder prepared by an older cmir_tf, or not a library "
                            f"folder; rerun {MAKE} --library … --overwrite)")
        data = fileio.read_json(path, "library playlists")
        ok = isinstance(data, dict) and data.get("from") in ("m3u", "albums", "none")
        ok = ok and isinstance(data.get("playlists"), list)
        ok = ok and all(isinstance(pl, list) and all(type(v) is int for v in pl) for pl in data["playlists"])
        if not ok or not (isinstance(data.get("names"), list) and len(data["names"]) == len(data["playlists"])
                          and all(isinstance(n, str) for n in data["names"])):
            raise DataError(f"{path}: expected {{\"from\": \"m3u\"|\"albums\"|\"none\", \"names\": [one per playlist], "
                            f"\"playlists\": [[song ids]]}}")
        return data["from"], data["playlists"], data["names"]

    def write_library_playlists(self, source: str, playlists, names) -> None:
        fileio.write_json(self.path(LIBRARY_PLAYLISTS), {"from": source, "names": list(names),
                                                         "playlists": [list(map(int, pl)) for pl in playlists]})

    def read_splits(self) -> dict[str, list[int]]:
        """``splits.json`` → ``{"train": [ids], "val": [...], "test": [...]}`` (ints)."""
        path = self.splits_path
        if not os.path.isfile(path):
            raise DataError(f"{path}: missing (write it with {MAKE})")
        splits = fileio.read_json(path, "split file")
        if not isinstance(splits, dict) or not all(isinstance(splits.get(s), list) for s in SPLITS):
            raise DataError(f"{path}: expected {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
        for s in SPLITS:
            bad = [v for v in splits[s] if type(v) is not int]  # 0.9 or true: not song 0 or 1
            if bad:
                raise DataError(f"{path}: song ids must be integers, {s} holds {bad[0]!r}")
        return {s: list(splits[s]) for s in SPLITS}

    def check_trainable(self, splits=("train", "val")) -> dict:
        """Check that training can start here and return the manifest.

        Raises ``DataError`` naming the folder or file and what is wrong (and how to make it): no
        folder; no ``manifest.json`` / ``word2vec.npy`` / ``vocab.json``; counts that are not
        non-negative integers; a split of ``splits`` the manifest counts no record of, or whose shards
        hold another number of records than it counts (the framing is walked: a seek per record); a
        ``word2vec.npy`` whose rows are not the vocabulary's genres; a first record of a shard whose CF
        vector length is not ``cf_dim`` or whose genre index is outside the vocabulary.
        """
        if not os.path.isdir(self.root):
            raise DataError(f"{self.root}: no such folder (make one with `{MAKE} --melon DIR --out {self.root}`)")
        missing = [n for n in (MANIFEST, WORD2VEC, VOCAB) if not os.path.exists(self.path(n))]
        if missing:
            raise DataError(f"{self.root}: not a prepared folder, missing {', '.join(missing)} (run `{MAKE}`)")
        from cmir_tf.data.prepared_check import check_contents, read_counts

        manifest = self.read_manifest()
        if manifest.get("metadata_only"):
            raise DataError(f"{self.root}: prepared with --metadata-only (split, CF vectors and word2vec, no "
                            f"records): training needs the records; run `{MAKE}` into it again without "
                            "--metadata-only (with --overwrite)")
        counts = read_counts(self, manifest)
        for split in splits:
            if not counts.get(split):
                raise DataError(f"{self.root}: {MANIFEST} counts no {split} records")
            if not self.shards_on_disk(split):
                raise DataError(f"{self.root}: missing {split}/ shards (*.tfrecord)")
        check_contents(self, manifest, splits)
        return manifest

    # ------------------------------------------------------------------------------- writing (prepare)
    def create(self) -> None:
        """Create the folder for prepare: refused (``ConfigError``) if it is a file, or holds other files
        and no ``.prepare/`` state (not a folder prepare made: it would write, and on overwrite delete, there)."""
        fileio.create_output_folder(self.root, OWN_NAMES, STATE_DIR, "a prepared folder")
        for split in PAIR_SPLITS:  # found before the shards are written, not after
            for name in (*RELATIONS, RECORDS_INDEX):
                if os.path.isdir(self.pair_path(split, name)):
                    raise ConfigError(f"{self.pair_path(split, name)}: is a folder, not a file; move it away and rerun")

    def clear(self) -> None:
        """Remove what prepare wrote here: the shards its plan and manifest name, its outputs, its state and
        the temporary files of dead writers. Other files, even in ``{split}/``, are left alone."""
        for split, names in self.recorded_shards().items():
            for name in names:
                _unlink(self.shard_path(split, name))
                _unlink(self.done_path(name))
        pair_files = [self.pair_path(s, n) for s in PAIR_SPLITS for n in (*RELATIONS, RECORDS_INDEX)]
        outputs = [self.path(n) for n in (*OUTPUT_FILES, LIBRARY_PLAYLISTS)]
        for path in [*outputs, *(self.state.path(n) for n in STATE_FILES), *pair_files]:
            _unlink(path)
        pair_dirs = [*(self.pair_dir(s) for s in PAIR_SPLITS), self.path(PAIRS_DIR)]
        for folder in (*(self.split_dir(s) for s in SPLITS), self.done_dir, self.state.root, *pair_dirs):
            fileio.remove_stale_temps(folder)
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
        fileio.remove_stale_temps(self.root)

    def recorded_shards(self) -> dict[str, set]:
        """``{split: {shard names}}`` that ``plan.json`` and ``manifest.json`` record, each name checked to be
        a plain shard name; an unreadable record names nothing."""
        found = {s: set() for s in SPLITS}
        sources = []
        with contextlib.suppress(DataError):
            plan = (self.read_plan() or {}).get("shards")
            sources.append({s: [sh.get("name") for sh in v if isinstance(sh, dict)]
                            for s, v in (plan if isinstance(plan, dict) else {}).items() if isinstance(v, list)})
        with contextlib.suppress(DataError):
            sources.append(self.read_manifest().get("shards"))
        for shards in sources:
            for split in SPLITS:
                names = shards.get(split) if isinstance(shards, dict) else None
                for name in names if isinstance(names, list) else []:
                    with contextlib.suppress(DataError):
                        self.planned_shard(split, name)
                        found[split].add(name)
        return found

    def read_plan(self) -> dict | None:
        """``.prepare/plan.json`` of an earlier run here; None when no run got as far as writing it."""
        if not os.path.exists(self.plan_path):
            return None
        from cmir_tf.data.prepared_check import check_plan

        return check_plan(self, fileio.read_json(self.plan_path, "prepare plan"))

    def read_cache(self) -> dict:
        """The side inputs cached beside the plan: ``{"vocab", "word2vec", "cf_ids", "cf"}``."""
        cf_ids, cf = self.state.read_cf()
        return {"vocab": self.state.read_vocab(), "word2vec": self.state.read_word2vec(), "cf_ids": cf_ids, "cf": cf}

    def write_state(self, plan: dict, vocab, word2vec, cf_ids, cf) -> None:
        """Cache the side inputs, then the plan (last: its presence means the cache is complete)."""
        self.state._write_side_inputs(vocab, word2vec, cf_ids, cf, vocab_indent=None)
        fileio.write_json(self.plan_path, plan)

    def start(self) -> None:
        """Create the state folder; delete the temporary files a killed writer left (fileio's, only
        those whose process is gone) in the folder, its state and its split folders (partial shards)."""
        os.makedirs(self.done_dir, exist_ok=True)
        for folder in (self.root, self.state.root, self.done_dir, *(self.split_dir(s) for s in SPLITS)):
            fileio.remove_stale_temps(folder)

    def start_split(self, split: str) -> None:
        """Create ``{split}/``."""
        os.makedirs(self.split_dir(split), exist_ok=True)

    def write_done(self, record: dict) -> None:
        """Record a finished shard (``{"shard", "split", "written", "skipped", "bytes"}``)."""
        fileio.write_json(self.done_path(record["shard"]), record)

    def finished(self, split: str, name: str) -> dict | None:
        """The done-record of a shard that looks finished: record well-formed, shard present, same size.
        (Its records' checksums are checked by prepare's workers before it is trusted.)"""
        try:
            done = fileio.read_json(self.done_path(name), "done-record")
            ok = (done["shard"] == name and all(type(v) is int for v in done["written"])
                  and all(type(k) is int and isinstance(r, str) for k, r in done["skipped"]))
            return done if ok and os.path.getsize(self.shard_path(split, name)) == done["bytes"] else None
        except (OSError, DataError, KeyError, TypeError, ValueError):
            return None

    def write_outputs(self, *, splits: dict, vocab: list, word2vec, cf_ids, cf, manifest: dict) -> None:
        """Write the folder's files, ``manifest.json`` last (its presence means the folder is complete)."""
        self._write_side_inputs(vocab, word2vec, cf_ids, cf, vocab_indent=0)
        fileio.write_json(self.splits_path, splits)
        fileio.write_json(self.manifest_path, manifest, indent=1)

    def write_pair_data(self, split: str, relations: dict, index=None) -> None:
        """``pairs/{split}/``: each relation, then the records index (when the shards allow one)."""
        for name, rows in relations.items():
            fileio.save_npy(self.pair_path(split, name), np.asarray(rows, np.int64))
        if index is not None:
            fileio.save_npy(self.pair_path(split, RECORDS_INDEX), np.asarray(index, np.int64))

    def _write_side_inputs(self, vocab, word2vec, cf_ids, cf, *, vocab_indent) -> None:
        fileio.save_npy(self.cf_song_ids_path, cf_ids)
        fileio.save_npy(self.cf_factors_path, cf)
        fileio.save_npy(self.word2vec_path, word2vec)
        fileio.write_json(self.vocab_path, vocab, indent=vocab_indent)


def _check_records_index(path: str, index: np.ndarray, files: list[str]) -> None:
    """Rows sorted by song, each song once, each span inside its shard's framing → else ``DataError``
    naming the first bad row (the records themselves are checked as they are read)."""
    from cmir_tf.data.tfrecords import FOOTER_BYTES, HEADER_BYTES

    redo = f"; rerun `{MAKE}` into {os.path.dirname(os.path.dirname(os.path.dirname(path)))} to rewrite it"
    songs, shard, offset, length = index.T
    bad = np.flatnonzero(songs[1:] <= songs[:-1])
    if len(bad):
        raise DataError(f"{path}: rows {bad[0]} and {bad[0] + 1} (songs {songs[bad[0]]}, {songs[bad[0] + 1]}) are "
                        f"not in increasing song order{redo}")
    bad = np.flatnonzero((shard < 0) | (shard >= len(files)))
    if len(bad):
        raise DataError(f"{path}: row {bad[0]} names shard {shard[bad[0]]}, beyond the {len(files)} of its split{redo}")
    sizes = np.array([os.path.getsize(f) for f in files], np.int64)
    with np.errstate(over="ignore"):
        end = offset + length + FOOTER_BYTES
    bad = np.flatnonzero((offset < HEADER_BYTES) | (length < 0) | (end < offset) | (end > sizes[shard]))
    if len(bad):
        i = bad[0]
        raise DataError(f"{path}: row {i} (song {songs[i]}) places its record at byte {offset[i]}, length "
                        f"{length[i]}: outside {files[shard[i]]} ({sizes[shard[i]]} bytes){redo}")


def _unlink(path) -> None:
    with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
        os.unlink(path)


class PreparedFacts:
    """The facts of one prepared folder a model needs (training, export), each file read once when asked.

    A cached view over :class:`PreparedData`: ``manifest`` (``{}`` when absent), ``counts``, ``cf_dim``,
    ``word2vec`` (``(n_genres, w2v_dim)`` float32: the genre table and the vocabulary size),
    ``n_genres``, ``w2v_dim`` and ``vocab`` (display names for the exported ``tag_genres``).
    """

    def __init__(self, data, manifest: dict | None = None):
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.path = Path(self.data.root)
        if manifest is not None:
            self.__dict__["manifest"] = manifest

    @classmethod
    def for_training(cls, data) -> "PreparedFacts":
        """Check the folder as :meth:`PreparedData.check_trainable` does, then wrap it."""
        data = PreparedData(data)
        return cls(data, data.check_trainable())

    @functools.cached_property
    def manifest(self) -> dict:
        return self.data.read_manifest()

    @property
    def counts(self) -> dict:
        return dict(self.manifest.get("counts", {}))

    @functools.cached_property
    def cf_dim(self) -> int:
        return self.data.cf_dim(self.manifest)

    @functools.cached_property
    def word2vec(self) -> np.ndarray:
        return self.data.read_word2vec()

    @property
    def has_playlists(self) -> bool:
        """False for a library that had neither playlists nor albums (no CF vectors, no playlist pairs)."""
        return self.manifest.get("library", {}).get("playlists_from") != "none"

    @property
    def n_genres(self) -> int:
        return int(self.word2vec.shape[0])

    @property
    def w2v_dim(self) -> int:
        return int(self.word2vec.shape[1])

    @functools.cached_property
    def vocab(self) -> list:
        return self.data.read_vocab()


# ------------------------------------------------------------------------------ library id file
def read_library_ids(path) -> tuple[dict, int]:
    """``({rel path: id}, next_id)`` of a library id file, ``library_ids.json`` (none yet → empty)."""
    if not os.path.exists(path):
        return {}, 0
    data = fileio.read_json(path, "library id file")
    try:
        ids = {str(e["path"]): int(e["id"]) for e in data["songs"]}
        return ids, max(int(data["next_id"]), max(ids.values(), default=-1) + 1)
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: not a library id file (remove it to number the songs afresh)") from None


def write_library_ids(path, ids: dict, next_id: int) -> None:
    """The library id file ``{"next_id": n, "songs": [{"id", "path"}]}`` (ASCII JSON: a name that is not UTF-8 keeps its escapes)."""
    songs = [{"id": i, "path": p} for p, i in sorted(ids.items(), key=lambda kv: kv[1])]
    fileio.atomic_write_bytes(path, json.dumps({"next_id": next_id, "songs": songs}, indent=0).encode("ascii"))
