"""Nearest tracks in the embedding space: an annoy (angular) index over a folder of embeddings.

A folder of embeddings holds one ``.npy`` per track (what ``python -m cmir_tf.embed`` writes): either
the track's patch embeddings ``(P, D)`` — their mean is the track vector, as in the paper's playlist
task — or a track vector ``(D,)``. A file ``X.mean.npy`` beside ``X.npy`` is taken as X's vector.
A track's id is its path relative to the folder without ``.npy``/``.mean.npy`` (``12/12345`` for
``12/12345.npy``); a query may also name a track by its file name alone when that is unambiguous.

Scores are cosine similarities, ``1 - d²/2`` from annoy's angular distance ``d = sqrt(2 - 2 cos)``.
The playlist-continuation protocol (``cmir_tf.evaluate.playlists``) uses the same :class:`SimilarityIndex`.

    python -m cmir_tf.similar EMB_DIR --id 12345 -k 10
    python -m cmir_tf.similar EMB_DIR --file song.mp3 --model export/ -k 10 --json

The CLI prints a ``#`` line saying what the score is, a header ``rank<TAB>cosine<TAB>id`` and one line per
track (or, with ``--json``, a list of ``{id, score}``, the score being that cosine); a bad folder, file,
track id, model folder or index ends as one ``error:`` line with exit code 2 (``cmir_tf.cli``).

A saved index is two files: ``INDEX`` (annoy's own format) and ``INDEX.ids.json`` ``{"dim", "n_trees",
"seed", "n_items", "ids", "fingerprint" (of the embedding folder), "index_size", "index_sha256",
"checksum"}``, where ``ids[r]`` is annoy item ``r``, ``index_sha256`` the SHA-256 of ``INDEX`` and
``checksum`` the SHA-256 of every other field. The index location is checked (its folder created and
written to) before the embedding folder is read. Loading verifies everything before a query: a
reordered, edited or truncated ids file, an ``INDEX`` that is not the one the ids file was written with,
a wrong ``dim``, or an item count that differs from the ids → one ``DataError`` line naming the file,
never a silently wrong answer; delete both files to rebuild. An index of the same folder built with
another number of trees is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Hashable, Iterable, Sequence

import numpy as np

from cmir_tf.errors import ConfigError, DataError
from cmir_tf.fileio import atomic_path, load_npy, read_json, require_output_file, write_json

__all__ = ["SimilarityIndex", "load_embedding", "load_embedding_folder", "find_similar"]

DEFAULT_TREES = 50
_MEAN_SUFFIX = ".mean.npy"


def load_embedding(path: str | os.PathLike, dim: int | None = None) -> np.ndarray:
    """One track vector from a ``.npy`` holding ``(D,)`` or patch embeddings ``(P, D)`` (→ their mean)."""
    path = Path(path)
    arr = load_npy(path, "embedding file", kind=None)  # never unpickled
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: embedding has dtype {arr.dtype}, expected a float array")
    if arr.ndim == 2 and arr.shape[0] > 0:
        arr = arr.mean(axis=0)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{path}: embedding has shape {arr.shape}, expected (D,) or (patches, D)")
    if dim is not None and arr.size != dim:
        raise DataError(f"{path}: embedding has {arr.size} dimensions, the others have {dim}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{path}: embedding holds NaN or inf")
    if not np.any(arr):
        raise DataError(f"{path}: embedding is all zeros (no direction for a cosine similarity)")
    return arr.astype(np.float32)


def _embedding_files(folder: Path) -> dict[str, Path]:
    """id → file, a ``.mean.npy`` taking precedence over the patches file of the same track."""
    files: dict[str, Path] = {}
    for p in sorted(folder.rglob("*.npy")):
        rel = p.relative_to(folder).as_posix()
        if rel.endswith(_MEAN_SUFFIX):
            files[rel[: -len(_MEAN_SUFFIX)]] = p
        else:
            files.setdefault(rel[: -len(".npy")], p)
    return files


def load_embedding_folder(folder: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """All track vectors of a folder: ``(ids, vectors (N, D) float32)``, ids sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: embedding folder does not exist")
    files = _embedding_files(folder)
    if not files:
        raise DataError(f"{folder}: no .npy embeddings found (expected one .npy per track)")
    ids = sorted(files)
    vectors, dim = [], None
    for i in ids:
        v = load_embedding(files[i], dim)
        dim = v.size
        vectors.append(v)
    return ids, np.stack(vectors)


def _folder_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    for i, p in sorted(_embedding_files(folder).items()):
        st = p.stat()
        # surrogatepass: ids of non-UTF-8 file names hold escaped bytes (the same digest for UTF-8 ones)
        h.update(f"{i}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


class SimilarityIndex:
    """An annoy angular index over track vectors, answering the top-k tracks with cosine scores."""

    def __init__(self, ids: Sequence[Hashable], vectors: np.ndarray, *, n_trees: int = DEFAULT_TREES,
                 seed: int = 0, search_k: int = -1, _annoy=None):
        from annoy import AnnoyIndex

        self.ids = list(ids)
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids must be unique")
        self.search_k, self.n_trees, self.seed = search_k, n_trees, seed
        self._row = {t: r for r, t in enumerate(self.ids)}
        if _annoy is not None:  # a loaded index: (annoy index, dim)
            self._index, self.dim = _annoy
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(self.ids) != vectors.shape[0] or vectors.shape[0] == 0:
            raise ValueError(f"need one vector per id, got {len(self.ids)} ids and vectors of shape {vectors.shape}")
        self.dim = int(vectors.shape[1])
        index = AnnoyIndex(self.dim, "angular")
        index.set_seed(seed)
        for r, v in enumerate(vectors):
            index.add_item(r, v)
        index.build(n_trees, n_jobs=1)
        self._index = index

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, track_id) -> bool:
        return track_id in self._row

    def vector(self, track_id) -> np.ndarray:
        return np.asarray(self._index.get_item_vector(self._row[track_id]), dtype=np.float32)

    def query(self, vector: np.ndarray, k: int, *, exclude: Iterable[Hashable] = ()) -> list[tuple[Hashable, float]]:
        """The ``k`` tracks nearest to ``vector`` (best first) as ``(id, cosine)``, skipping ``exclude``."""
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.size != self.dim:
            raise DataError(f"query has {vector.size} dimensions, the index has {self.dim}")
        exclude = {self._row[t] for t in exclude if t in self._row}
        n = min(len(self.ids), k + len(exclude))
        rows, dists = self._index.get_nns_by_vector(vector, n, search_k=self.search_k, include_distances=True)
        out = [(self.ids[r], float(1.0 - d * d / 2.0)) for r, d in zip(rows, dists) if r not in exclude]
        return out[:k]

    def query_id(self, track_id, k: int) -> list[tuple[Hashable, float]]:
        """The ``k`` tracks nearest to an indexed track, the track itself left out."""
        if track_id not in self._row:
            raise DataError(f"track id {track_id!r} is not in the index")
        return self.query(self.vector(track_id), k, exclude=[track_id])

    def save(self, path: str | os.PathLike, *, fingerprint: str = "") -> None:
        """Write ``path`` (annoy file) and ``path.ids.json`` (see the module doc), each atomically, the
        ids file first: an interrupted save leaves a pair that :meth:`load` refuses, never a wrong one."""
        with atomic_path(path) as tmp:
            self._index.save(tmp)  # annoy keeps the saved file memory-mapped; the object stays usable
            size, digest = _file_sha256(tmp)
            meta = {"dim": self.dim, "n_trees": self.n_trees, "seed": self.seed, "n_items": len(self.ids),
                    "ids": self.ids, "fingerprint": fingerprint, "index_size": size, "index_sha256": digest}
            write_json(_meta_path(path), {**meta, "checksum": _checksum(meta)}, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple["SimilarityIndex", str]:
        """The index saved at ``path`` and its folder fingerprint, verified (see the module doc)."""
        from annoy import AnnoyIndex

        path, meta_path = Path(path), _meta_path(path)
        if not path.is_file() or not meta_path.is_file():
            raise DataError(f"{path}: index file or its {meta_path.name} is missing")
        meta = _read_meta(meta_path)
        size, digest = _file_sha256(path)
        if (size, digest) != (meta["index_size"], meta["index_sha256"]):
            what = f"has {size} bytes, {meta_path.name} records {meta['index_size']}" if size != meta["index_size"] \
                else f"content differs from the one {meta_path.name} records"
            raise DataError(f"{path}: index file {what} (truncated, damaged or replaced){_REBUILD}")
        index = AnnoyIndex(meta["dim"], "angular")
        try:
            index.load(str(path))
        except OSError as e:
            raise DataError(f"{path}: not a readable {meta['dim']}-d annoy index ({e}){_REBUILD}") from None
        if index.get_n_items() != len(meta["ids"]):
            raise DataError(f"{path}: index holds {index.get_n_items()} items, {meta_path.name} lists "
                            f"{len(meta['ids'])} ids{_REBUILD}")
        loaded = cls(meta["ids"], None, n_trees=meta["n_trees"], seed=meta["seed"], _annoy=(index, meta["dim"]))
        return loaded, meta["fingerprint"]


_REBUILD = "; delete the index and its .ids.json to rebuild it"
_META_TYPES = {"dim": int, "n_trees": int, "seed": int, "n_items": int, "ids": list, "fingerprint": str,
               "index_size": int, "index_sha256": str, "checksum": str}


def _meta_path(path) -> Path:
    return Path(str(path) + ".ids.json")


def _checksum(meta: dict) -> str:
    fields = {k: meta[k] for k in _META_TYPES if k != "checksum"}
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _file_sha256(path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _read_meta(meta_path: Path) -> dict:
    """The ids file, each field of the right type and the checksum right, else one ``DataError`` line."""
    meta = read_json(meta_path, "index ids file")
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: index ids file is not a JSON object{_REBUILD}")
    for key, kind in _META_TYPES.items():
        if key not in meta:
            raise DataError(f"{meta_path}: index ids file has no {key!r} (damaged, or written by an older "
                            f"cmir_tf){_REBUILD}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise DataError(f"{meta_path}: index ids file's {key!r} is not a {kind.__name__}{_REBUILD}")
    if meta["checksum"] != _checksum(meta):
        raise DataError(f"{meta_path}: ids or settings do not match their checksum (edited, reordered or "
                        f"damaged){_REBUILD}")
    ids = meta["ids"]
    if meta["dim"] < 1 or meta["n_items"] != len(ids) or not all(isinstance(i, (str, int)) for i in ids) \
            or len(set(ids)) != len(ids):
        raise DataError(f"{meta_path}: index ids file is inconsistent (dim {meta['dim']}, {meta['n_items']} "
                        f"items, {len(meta['ids'])} ids){_REBUILD}")
    return meta


def open_index(folder: str | os.PathLike, index_path: str | os.PathLike | None = None, *,
               n_trees: int = DEFAULT_TREES, seed: int = 0) -> SimilarityIndex:
    """Index of an embedding folder; with ``index_path`` reuse it while the folder and ``n_trees`` are
    unchanged, else (re)build it. ``index_path``'s folder is checked for writing before any work."""
    folder = Path(folder)
    if index_path is not None:
        require_output_file(index_path, "index file")
    if index_path is not None and Path(index_path).exists():
        index, fingerprint = SimilarityIndex.load(index_path)
        changed = fingerprint != _folder_fingerprint(folder)
        if not changed and index.n_trees == n_trees:
            return index
        why = f"{folder} changed since the index was built" if changed else \
            f"the index has {index.n_trees} trees, {n_trees} asked"
        print(f"{index_path}: {why}; rebuilding", file=sys.stderr)
    ids, vectors = load_embedding_folder(folder)
    index = SimilarityIndex(ids, vectors, n_trees=n_trees, seed=seed)
    if index_path is not None:
        index.save(index_path, fingerprint=_folder_fingerprint(folder))
    return index


def _resolve_id(index: SimilarityIndex, track_id: str) -> str:
    if track_id in index:
        return track_id
    matches = [i for i in index.ids if i.rsplit("/", 1)[-1] == track_id]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ConfigError(f"track id {track_id!r} is ambiguous: {', '.join(matches[:5])}")
    raise ConfigError(f"track id {track_id!r}: no such track in the embedding folder")


def find_similar(folder: str | os.PathLike, *, track_id: str | None = None, file: str | None = None,
                 k: int = 10, model: str | None = None, index_path: str | None = None,
                 n_trees: int = DEFAULT_TREES, embedder=None) -> list[tuple[str, float]]:
    """Top-``k`` tracks of ``folder`` most similar to an indexed track id or to a file.

    ``file`` may be an embedding ``.npy`` (used as it is) or anything ``embed.Embedder.embed_file``
    reads (audio, a Melon mel ``.npy``), which needs ``model`` (an export folder) or ``embedder``.
    """
    if (track_id is None) == (file is None):
        raise ConfigError("give exactly one of a track id or a file")
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if n_trees < 1:
        raise ConfigError(f"the number of annoy trees must be at least 1, got {n_trees}")
    index = open_index(folder, index_path, n_trees=n_trees)
    if track_id is not None:
        return index.query_id(_resolve_id(index, track_id), k)
    path = Path(file)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    vector = None
    if path.suffix == ".npy":
        try:
            vector = load_embedding(path, index.dim)
        except DataError:
            vector = None  # not an embedding of this size: a mel to embed
    if vector is None:
        if embedder is None:
            if model is None:
                raise ConfigError(f"--file {path}: not a {index.dim}-d embedding; embedding it needs --model "
                                  "(an export folder)")
            from cmir_tf.embed.embedder import Embedder

            embedder = Embedder(model)
        _, vector = embedder.embed_file(str(path))
    # the query file itself, when it is one of the indexed tracks, is not an answer
    exclude = []
    try:
        rel = path.resolve().relative_to(Path(folder).resolve()).as_posix()
        exclude = [rel[: -len(_MEAN_SUFFIX)] if rel.endswith(_MEAN_SUFFIX) else rel.rsplit(".", 1)[0]]
    except ValueError:
        pass
    return index.query(vector, k, exclude=exclude)
