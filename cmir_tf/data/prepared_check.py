"""Checks of a prepared folder's contents: what training checks before it starts
(:meth:`PreparedData.check_trainable`), and prepare's plan before a rerun resumes from it.

A folder edited or damaged after ``prepare`` can make training silently wrong rather than fail: a
negative count gives a validation loss of 0, a count of 10⁹ a validation pass that never ends, a
``word2vec.npy`` with too few rows a genre lookup outside the table, a ``cf_dim`` other than the
records' an assertion deep in the input pipeline. Each is checked here against the files themselves
and reported as one :class:`~cmir_tf.errors.DataError` naming the file:

- ``manifest.json``'s ``counts`` are non-negative integers and equal the records of the split's shards
  (counted from the TFRecord framing, a seek per record: ~8 µs a record measured here, ~5 s for
  the 585k train+val songs of Melon);
- ``word2vec.npy`` has one finite row per genre of ``vocab.json`` (and the manifest's ``n_genres``),
  and the manifest's ``w2v_dim`` columns;
- the first record of each shard has a CF vector of ``cf_dim`` values (or none) and genre indices
  inside the vocabulary.

A plan (``.prepare/plan.json``, :func:`check_plan`) must be prepare's: its shard names plain names
inside their split folder (a name like ``../../../x.tfrecord`` would make prepare write outside its
output folder), its song ids integers.

Records' checksums are not read here (a full read of every shard); a damaged shard met during training
is named by ``cmir_tf.train.loop`` through :func:`cmir_tf.data.tfrecords.check_shard`.
"""
from __future__ import annotations

import os

import numpy as np

from cmir_tf.data.tfrecords import count_records, first_record, parse_example_numpy
from cmir_tf.errors import DataError


def read_counts(data, manifest: dict) -> dict:
    """The manifest's ``counts`` ``{split: records}``, each a non-negative integer, else ``DataError``."""
    counts = manifest.get("counts", {})
    if not isinstance(counts, dict):
        raise DataError(f"{data.manifest_path}: counts must be an object {{split: records}}, got "
                        f"{type(counts).__name__}")
    for split, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"{data.manifest_path}: counts of {split!r} must be a non-negative integer, got {n!r}")
    return counts


def check_contents(data, manifest: dict, splits) -> None:
    """Counts against the shards, word2vec against the vocabulary, first records against both."""
    counts = read_counts(data, manifest)
    n_genres = _check_word2vec(data, manifest)
    cf_dim = data.cf_dim(manifest)
    for split in splits:
        files = data.shard_files(split, manifest)
        found = sum(count_records(f) for f in files)
        if found != counts[split]:
            raise DataError(f"{data.manifest_path}: counts {counts[split]} {split} records, but the {len(files)} "
                            f"shard(s) of {split}/ hold {found}")
        for f in files:
            _check_first_record(data, f, cf_dim, n_genres)


def _check_word2vec(data, manifest: dict) -> int:
    rows = len(data.read_vocab())
    w2v = data.read_word2vec()
    expected = manifest.get("n_genres", rows)
    vocab = os.path.basename(data.vocab_path)
    if w2v.shape[0] != rows or expected != rows:
        raise DataError(f"{data.word2vec_path}: {w2v.shape[0]} rows, but {vocab} has {rows} genres"
                        + (f" and the manifest's n_genres is {expected!r}" if expected != rows else ""))
    if "w2v_dim" in manifest and manifest["w2v_dim"] != w2v.shape[1]:
        raise DataError(f"{data.word2vec_path}: {w2v.shape[1]} columns, {os.path.basename(data.manifest_path)} "
                        f"says w2v_dim {manifest['w2v_dim']!r}")
    if not np.isfinite(w2v).all():
        raise DataError(f"{data.word2vec_path}: holds inf or NaN values")
    return rows


def _check_first_record(data, path: str, cf_dim: int, n_genres: int) -> None:
    raw = first_record(path)
    if raw is None:
        return
    try:
        rec = parse_example_numpy(raw)
    except Exception as e:  # noqa: BLE001 — protobuf raises several types on a damaged record
        raise DataError(f"{path}: first record is not a song record ({type(e).__name__})") from None
    if len(rec["cf"]) not in (0, cf_dim):
        raise DataError(f"{path}: records hold CF vectors of {len(rec['cf'])} values, but {data.manifest_path} "
                        f"says cf_dim {cf_dim}")
    genres = rec["genres"]
    if len(genres) and not 0 <= int(genres.min()) <= int(genres.max()) < n_genres:
        raise DataError(f"{path}: song {rec['song_id']} has genre index {int(genres.max())}, outside the "
                        f"{n_genres} genres of {data.vocab_path}")


def check_plan(data, plan) -> dict:
    """``plan`` if it is one prepare wrote (shard names inside their folders, integer song ids), else
    ``DataError`` naming the plan file (and the entry)."""
    try:
        shards = list(plan["shards"].items())
        ok = _ints([k for k, _ in plan["skipped"]]) and "cf" in plan and "seconds" in plan
        for split, planned in shards:
            ok = ok and _ints(plan["splits"][split])
            for sh in planned:
                data.planned_shard(split, sh["name"])  # its own DataError, naming the entry
                ok = ok and _ints(sh["songs"])
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise DataError(f"{data.plan_path}: not a prepare plan (discard it with the overwrite option)")
    return plan


def _ints(values) -> bool:
    return isinstance(values, list) and all(type(v) is int for v in values)
