"""What training and export read from a prepared folder (the output of ``python -m cmir_tf.prepare``).

Every read the training and export side makes of that folder is here and nowhere else: the manifest
(split counts, ``cf_dim``), the genre word2vec matrix (``(n_genres, 200)`` float32, row i = vocabulary
index i: the initial genre table and the model's vocabulary size), the vocabulary (display names of the
genres, for the exported ``tag_genres`` signature) and the check that a folder is ready to train on.
The folder's layout is documented in ``docs/ARCHITECTURE.md`` ("Prepared data folder").

Errors are :class:`~cmir_tf.errors.DataError` naming the folder or file and what is wrong.
"""
from __future__ import annotations

import functools
from pathlib import Path

from . import constants as C
from .errors import DataError
from .fileio import load_npy, read_json

_MANIFEST = "manifest.json"
_WORD2VEC = "word2vec.npy"
_VOCAB = "vocab.json"


def is_prepared(data) -> bool:
    """Whether ``data`` holds a finished preparation (its manifest is written last)."""
    return (Path(data) / _MANIFEST).exists()


def read_prepared(data) -> dict:
    """Check that ``data`` is a prepared folder with train and val records; return its manifest."""
    data = Path(data)
    if not data.is_dir():
        raise DataError(f"{data}: no such folder (make one with `python -m cmir_tf.prepare --melon DIR --out {data}`)")
    missing = [n for n in (_MANIFEST, _WORD2VEC, _VOCAB) if not (data / n).exists()]
    if missing:
        raise DataError(f"{data}: not a prepared folder, missing {', '.join(missing)} (run `python -m cmir_tf.prepare`)")
    manifest = read_json(data / _MANIFEST, "prepared-data manifest")
    for split in ("train", "val"):
        if not manifest.get("counts", {}).get(split):
            raise DataError(f"{data}: {_MANIFEST} counts no {split} records")
        if not list((data / split).glob("*.tfrecord*")):
            raise DataError(f"{data}: missing {split}/ shards (*.tfrecord)")
    return manifest


class PreparedFacts:
    """The facts of one prepared folder that a model needs; each file is read once, when first asked."""

    def __init__(self, data, manifest: dict | None = None):
        self.path = Path(data)
        if manifest is not None:
            self.__dict__["manifest"] = manifest

    @classmethod
    def for_training(cls, data) -> "PreparedFacts":
        """Check the folder as :func:`read_prepared` does, then wrap it."""
        return cls(data, read_prepared(data))

    @functools.cached_property
    def manifest(self) -> dict:
        """The manifest, or ``{}`` when there is none (an export only reads counts and ``cf_dim`` from it)."""
        path = self.path / _MANIFEST
        return read_json(path, "prepared-data manifest") if path.exists() else {}

    @property
    def counts(self) -> dict:
        return dict(self.manifest.get("counts", {}))

    @property
    def cf_dim(self) -> int:
        return int(self.manifest.get("cf_dim", C.CF_DIM))

    @functools.cached_property
    def word2vec(self):
        """The ``(n_genres, dim)`` float32 word2vec matrix of the genre vocabulary."""
        import numpy as np

        return load_npy(self.path / _WORD2VEC, "word2vec matrix", ndim=2).astype(np.float32)

    @property
    def n_genres(self) -> int:
        return int(self.word2vec.shape[0])

    @property
    def w2v_dim(self) -> int:
        return int(self.word2vec.shape[1])

    @functools.cached_property
    def vocab(self) -> list:
        """``[{"index", "code", "name"}]`` of the genre vocabulary."""
        vocab = read_json(self.path / _VOCAB, "genre vocabulary")
        if not isinstance(vocab, list):
            raise DataError(f"{self.path / _VOCAB}: genre vocabulary must be a list of entries")
        return vocab
