"""Records → batch: the steps the two training pipelines share (``pipeline``, ``pair_pipeline``).

A batch of serialized records (the schema of :mod:`cmir_tf.data.tfrecords`) is parsed in one vectorised
``tf.io.parse_example`` call and cropped while the mel is still float16 bytes (:func:`parse_and_crop`:
a 256-frame crop, the first ``MAX_GENRES`` genre indices padded with 0 plus a mask, the CF vector or
zeros); after batching, :func:`decode_mel` turns the crops into float32 ``(B, 256, 48)``. Both
pipelines check their arguments the same way (:func:`pipeline_inputs`, :func:`check_parallelism`,
:func:`checked_seed`) and run with the same ``tf.data`` options (:func:`dataset_options`).
"""
from __future__ import annotations

import random

import numpy as np
import tensorflow as tf

from cmir_tf.constants import MAX_GENRES, PATCH_FRAMES, SEED_LIMIT
from cmir_tf.data.prepared import PreparedData
from cmir_tf.data.tfrecords import BYTES_PER_FRAME, N_BANDS, feature_spec
from cmir_tf.errors import ConfigError

__all__ = ["parse_and_crop", "decode_mel", "check_frames", "genres_and_cf", "dataset_options", "check_parallelism", "checked_seed",
           "pipeline_inputs"]

_SEED_MAX = SEED_LIMIT  # seeds are TensorFlow op seeds; seed + 1 is used too


def genres_and_cf(parsed, cf_dim: int):
    """Parsed records → (genre indices padded with 0 to ``MAX_GENRES`` int32, their mask, CF float32 or zeros)."""
    genres = parsed["genres"]
    n_genres = tf.minimum(genres.row_lengths(), MAX_GENRES)
    padded = tf.cast(genres[:, :MAX_GENRES].to_tensor(0, shape=[None, MAX_GENRES]), tf.int32)
    mask = tf.sequence_mask(n_genres, MAX_GENRES)
    cf = parsed["cf"]
    cf_len = cf.row_lengths()
    check = tf.debugging.Assert(
        tf.reduce_all((cf_len == 0) | (cf_len == cf_dim)),
        ["cf vector length differs from cf_dim", cf_dim, "lengths:", cf_len, "song ids:", parsed["song_id"]])
    with tf.control_dependencies([check]):
        cf = cf.to_tensor(0.0, shape=[None, cf_dim])
    return padded, mask, cf


def _crop_starts(n_frames, u, training: bool, window: int | None = None):
    """Crop offsets (frames): uniform over [0, n - 256] from ``u`` (uniform [0, 1) draws, one per record)
    when training, else the centre ``(n - 256) // 2``. With ``window`` (the published variant's 1300),
    n is ``min(n_frames, window)`` and a random start is uniform over [0, n - 256), as the published
    loader's ``randint(0, n - 256)`` draws it."""
    if window is not None:
        n_frames = tf.minimum(n_frames, tf.cast(window, n_frames.dtype))
    span = tf.maximum(n_frames - PATCH_FRAMES, 0)
    if not training:
        return span // 2
    if window is not None:
        span = tf.maximum(span - 1, 0)
    return tf.minimum(tf.cast(tf.floor(u * tf.cast(span + 1, tf.float64)), tf.int64), span)


def check_frames(parsed):
    """An assertion op: every parsed record has ≥ 256 frames and a mel of ``n_frames`` × 96 bytes."""
    n = parsed["n_frames"]
    mel_len = tf.strings.length(parsed["mel"], unit="BYTE")
    ok = tf.reduce_all((n >= PATCH_FRAMES) & (tf.cast(mel_len, tf.int64) == n * BYTES_PER_FRAME))
    return tf.debugging.Assert(ok, ["record with n_frames < 256 or a mel of the wrong size; song ids:",
                                    parsed["song_id"], "n_frames:", n])


def parse_and_crop(serialized, u, *, training: bool, cf_dim: int, window: int | None = None):
    """Vectorised parse of a batch of records; the crop stays float16 bytes (decoded after batching)."""
    parsed = tf.io.parse_example(serialized, feature_spec())
    with tf.control_dependencies([check_frames(parsed)]):
        start = _crop_starts(parsed["n_frames"], u, training, window)
    crop = tf.strings.substr(parsed["mel"], tf.cast(start * BYTES_PER_FRAME, tf.int32),
                             tf.fill(tf.shape(start), PATCH_FRAMES * BYTES_PER_FRAME), unit="BYTE")
    genres, mask, cf = genres_and_cf(parsed, cf_dim)
    return {"mel": crop, "genres": genres, "genre_mask": mask, "cf": cf, "song_id": parsed["song_id"],
            "crop_start": start}


def decode_mel(batch):
    """A batch whose ``mel`` is float16 crop bytes → the same batch with float32 ``(B, 256, 48)`` mels."""
    batch = dict(batch)
    mel = tf.io.decode_raw(batch["mel"], tf.float16, little_endian=True)
    mel = tf.cast(tf.reshape(mel, [-1, PATCH_FRAMES, N_BANDS]), tf.float32)
    mel.set_shape(batch["mel"].shape.concatenate([PATCH_FRAMES, N_BANDS]))  # keep a static batch size
    batch["mel"] = mel
    return batch


def dataset_options(threadpool_size: int | None = None) -> tf.data.Options:
    """The pipelines' ``tf.data.Options``: deterministic order, autotune, parallel map/batch, AUTO sharding."""
    opts = tf.data.Options()
    if threadpool_size:
        opts.threading.private_threadpool_size = int(threadpool_size)
    opts.deterministic = True
    opts.autotune.enabled = True
    opts.experimental_optimization.map_parallelization = True
    opts.experimental_optimization.parallel_batch = True
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.AUTO
    return opts


def _positive_int(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_args(split, batch_size):
    if not isinstance(split, str) or not split:
        raise ConfigError(f"split must be a non-empty string (e.g. 'train'), got {split!r}")
    _positive_int("batch_size", batch_size)


def check_parallelism(cycle_length, parse_parallelism, threadpool_size):
    """``ConfigError`` unless each setting is a positive integer (the last two may be None)."""
    _positive_int("cycle_length", cycle_length)
    for name, value in (("parse_parallelism", parse_parallelism), ("threadpool_size", threadpool_size)):
        if value is not None:
            _positive_int(name, value)


def checked_seed(seed) -> int:
    """A pipeline's seed: an integer in [0, 2³¹ − 1), or a random one for None; else ``ConfigError``."""
    if seed is None:
        seed = random.SystemRandom().randrange(_SEED_MAX)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < _SEED_MAX:
        raise ConfigError(f"seed must be an integer in [0, {_SEED_MAX}), got {seed!r}")
    return int(seed)


def pipeline_inputs(data_dir, split: str, batch_size: int, input_context) -> tuple[list[str], int, int]:
    """Checked arguments → (shard files, CF size, this pipeline's batch size)."""
    _check_args(split, batch_size)
    data = PreparedData(data_dir)
    manifest = data.read_manifest()
    files = data.shard_files(split, manifest)
    cf_dim = data.cf_dim(manifest)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    return files, cf_dim, batch_size
