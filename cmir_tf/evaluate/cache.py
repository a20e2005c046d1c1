"""The models under evaluation and their on-disk embedding cache: each dataset is embedded once per model.

A :class:`Model` is a name, a cache key and ``embed(path) -> patch embeddings (P, D)`` (optionally a
batched ``embed_many``), so the protocols run with any embedding function; :func:`load_model` wires an
export folder to :class:`cmir_tf.embed.embedder.Embedder`, its key being :func:`model_fingerprint` (SHA-256 of the
SavedModel's graph and weight files: a retrained export gets a new key).

:class:`EmbeddingCache` stores one ``.npy`` per input file at ``ROOT/<model key>/<dataset>/<xx>/<hash>.npy``
(``ROOT`` defaults to :data:`DEFAULT_CACHE`); the hash covers the input's absolute path, size and
modification time, so a changed file is embedded again. The cache folder is created and checked for
writing when the cache is made (before any embedding); entries are written atomically; a damaged entry
is recomputed. Unreadable inputs are skipped and reported, one stderr line each, never fatal.
"""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cmir_tf.errors import CmirError, DataError, StorageError
from cmir_tf.export.exportdir import SAVED_MODEL_PB, find_saved_model
from cmir_tf.fileio import require_output_dir, save_npy

__all__ = ["DEFAULT_CACHE", "Model", "load_model", "model_fingerprint", "EmbeddingCache"]

DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "cmir_tf", "embeddings")
_SKIPPABLE = (CmirError, OSError, ValueError)  # an input file that cannot be read or embedded


def model_fingerprint(export_dir: str | os.PathLike) -> str:
    """A cache key for an export: SHA-256 of its SavedModel's ``saved_model.pb`` and variable files.

    The weights live in ``variables/``, so two trainings of the same architecture (identical graphs)
    still get different keys. The SavedModel is found as :func:`cmir_tf.export.exportdir.find_saved_model` finds
    it (raises :class:`~cmir_tf.errors.ExportError` when there is none); no TensorFlow is imported.
    """
    sm = Path(find_saved_model(export_dir))
    h = hashlib.sha256()
    for f in [sm / SAVED_MODEL_PB, *sorted((sm / "variables").glob("*"))]:
        if f.is_file():
            h.update(f.name.encode() + b"\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Model:
    """A model under evaluation: ``embed(path) -> patch embeddings (P, D)``, and a key for the cache.

    ``embed_many(paths)``, when given, yields ``(path, patches or None, error or None)`` in input order
    and is used for whole datasets (an exported model batches patches across files that way).
    """

    name: str
    embed: Callable[[str], np.ndarray]
    key: str
    embed_many: Callable | None = None


def load_model(name: str, export_dir: str | os.PathLike) -> Model:
    """A :class:`Model` for an export folder; the TensorFlow model loads on the first cache miss only."""
    key = model_fingerprint(export_dir)
    holder = {}

    def embedder():
        if "embedder" not in holder:
            from cmir_tf.embed.embedder import Embedder

            holder["embedder"] = Embedder(os.fspath(export_dir))
        return holder["embedder"]

    def embed(path):
        return np.asarray(embedder().embed_file(os.fspath(path))[0])

    def embed_many(paths):
        for path, patches, _, error in embedder().embed_files([os.fspath(p) for p in paths]):
            yield path, patches, error

    return Model(name, embed, key, embed_many)


class EmbeddingCache:
    """``model.embed(path)`` memoised on disk at ``root/<model key>/<dataset>/<xx>/<hash>.npy``.

    ``root=None`` keeps nothing on disk; else the folder is created now and must take files (a
    ``ConfigError`` / ``StorageError`` naming it, see :func:`cmir_tf.fileio.require_output_dir`).
    ``misses`` counts the files embedded (not read back).
    """

    def __init__(self, model: Model, root: str | os.PathLike | None, dataset: str):
        self.model = model
        self.dir = None if root is None else Path(root) / model.key / dataset
        if self.dir is not None:
            require_output_dir(self.dir, "embedding cache folder")
        self.misses = 0

    def _entry(self, path: str) -> Path | None:
        if self.dir is None:
            return None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path}: file is missing") from None
        key = hashlib.sha1(f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
        return self.dir / key[:2] / f"{key}.npy"

    @staticmethod
    def _load(entry: Path | None):
        if entry is not None and entry.is_file():
            try:
                return np.load(entry, allow_pickle=False)
            except (OSError, ValueError):
                pass  # a damaged cache entry is recomputed
        return None

    def _store(self, entry: Path | None, arr, path) -> np.ndarray:
        self.misses += 1
        arr = _check_patches(arr, path)
        if entry is not None:
            save_npy(entry, arr)
        return arr

    def __call__(self, path) -> np.ndarray:
        """One file's patch embeddings, from the cache or embedded (and stored) now."""
        path = os.path.abspath(os.fspath(path))
        entry = self._entry(path)
        arr = self._load(entry)
        return arr if arr is not None else self._store(entry, self.model.embed(path), path)

    def embed_all(self, paths, *, desc: str = "embedding", progress: bool = True):
        """Patch embeddings of many files → ``({path: (P, D)}, skipped [{path, reason}])``.

        Cached files are read back; the others go through ``model.embed_many`` (batched) when the model
        has it, else one by one. A file that cannot be read (a :class:`CmirError`, ``OSError`` or
        ``ValueError``) is skipped, not fatal: real collections hold a few broken files. Each skipped
        file is one stderr line ``<desc>: skipped <path>: <reason>`` and one ``{path, reason}`` entry
        (``reason`` on one line, naming the file).
        """
        from tqdm.auto import tqdm

        out, skipped, todo = {}, [], []
        for p in paths:
            try:
                entry = self._entry(os.path.abspath(os.fspath(p)))
            except DataError as e:
                skipped.append(_skip(p, e, desc))
                continue
            arr = self._load(entry)
            if arr is None:
                todo.append((p, entry))
            else:
                out[p] = arr
        with tqdm(total=len(todo), desc=desc, unit="file", disable=not progress or not todo, file=sys.stderr) as bar:
            for (p, entry), (arr, error) in zip(todo, self._embed_todo([p for p, _ in todo])):
                if error is None:
                    try:
                        out[p] = self._store(entry, arr, p)
                    except StorageError:
                        raise  # the cache cannot be written (disk full): not this input's fault
                    except _SKIPPABLE as e:
                        error = e
                if error is not None:  # the embedder could not read this file, or returned garbage
                    skipped.append(_skip(p, error, desc, bar))
                bar.update()
        return out, skipped

    def _embed_todo(self, paths):
        """Yield ``(patches, None)`` or ``(None, error)`` per path, in order, batched when the model can."""
        absolute = [os.path.abspath(os.fspath(p)) for p in paths]
        if self.model.embed_many is not None and absolute:
            for _, arr, error in self.model.embed_many(absolute):
                yield arr, error
            return
        for p in absolute:
            try:
                yield self.model.embed(p), None
            except _SKIPPABLE as e:
                yield None, e


def _skip(path, error, desc: str, bar=None) -> dict:
    """A skipped file's record; its one stderr line is printed now (above the progress bar)."""
    reason = " ".join(str(error).split()) or type(error).__name__
    if str(path) not in reason:
        reason = f"{path}: {reason}"
    line = f"{desc}: skipped {reason}"
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)
    return {"path": str(path), "reason": reason}


def _check_patches(arr, path) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{path}: embedder returned shape {arr.shape}, expected (patches, dim)")
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: embedder returned NaN or inf")
    return arr
