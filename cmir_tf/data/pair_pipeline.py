"""Streaming ``tf.data`` pipeline of the audio-pair strategies (``cmir_tf.model.presets``): batches of 2m rows,
the first songs of m pairs followed by their partners, with the keys of ``pipeline.make_dataset``.

``source``: ``playlist`` / ``artist`` / ``genre`` — pairs of different songs drawn anew every epoch
(:class:`cmir_tf.data.pairs.PairSampler` over the prepared relation) — or ``self`` — every song of the split
once per epoch, in random order, paired with itself: its two rows are two crops of it (SS), the second
starting within ±:data:`SS_WINDOW` frames of the first (clamped to the song) and, where the window allows
it, not overlapping the first (|start₂ − start₁| ≥ 256), as the study's public code draws them.

Graph::

    epoch e ─ numpy: the epoch's pairs (seeded by (seed, e)), this input pipeline's share (every n-th
              pair), each song's (shard, offset, length) from the prepared records index
      ─ pair rows ─ batch(m) ─ sequential map: 2m uniform draws of a seeded RNG (the n-th batch gets the
      n-th draws, as in pipeline.make_dataset) ─ map (parallel, in order): pread the 2m serialized
      Examples (each ``self`` song once) checking their TFRecord checksums, vectorised parse, crops as
      byte substrings, decode float16 → float32, check the batch ─ prefetch

Checks: a record whose framing or checksums do not match (``tfrecords.read_record``), a record that is
not the song the records index says, a crop holding NaN or ±inf, and (genre pairs) a batch in which no
pair shares a genre in its records each raise ``DataError`` naming the shard, the records index or the
relation of the split at fault; ``python -m cmir_tf.train`` stops with that line (exit 2), as the main pipeline
stops at a damaged shard. The records index itself is checked when it is read (``PreparedData``).

Epochs follow one another in the stream (a batch may hold the end of one and the start of the next, so
there a song can appear twice), as ``make_dataset``'s repeat-then-shuffle blurs them too.

Memory: the records index (32 bytes a song), the relation and one epoch's pairs (64 bytes a pair); mel
bytes are read per batch and never cached, so memory does not grow with the dataset's audio. The
records are read by offset (``tfrecords.read_record``), so the shards must be uncompressed. Measured
(``benchmarks/pipeline.py --pairs``, 2 shared cores, with ``pipeline.tune_malloc()`` as ``train`` runs
it): 7.6k (1k songs) and 10.1k (10k songs) rows/s for playlist pairs, 18k / 15.5k for ``self``, RSS
growth 160–235 MB at both sizes — beside 3.7k / 6.9k examples/s of ``make_dataset`` in the same session.

Evaluation (``training=False``): one fixed set of pairs (the ``seed``, 0 by default), one pass, centre
crops; for ``self`` the second crop's place is a fixed function of the song id. Distribution: with
``input_context`` every input pipeline draws the same epoch (pass the same ``seed`` everywhere) and keeps
every n-th pair; the batch is the per-replica rows, which must be even.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from cmir_tf.constants import PATCH_FRAMES
from cmir_tf.data.batching import (check_parallelism, checked_seed, dataset_options, decode_mel, parse_and_crop,
                                   pipeline_inputs)
from cmir_tf.data.pairs import AUDIO_PAIRS, EXCLUSIVE, PairSampler
from cmir_tf.data.prepared import RECORDS_INDEX, PreparedData
from cmir_tf.data.tfrecords import read_record
from cmir_tf.errors import ConfigError, DataError

SS_WINDOW = 625  # frames: the second crop of a self-supervised pair starts within ±625 of the first
_ROW = 8  # a pair row: song, shard, offset, length of the first song, then of its partner
_GOLDEN = 0.6180339887498949  # evaluation: the second crop's draw is frac(song id × golden ratio)


class PairPlan:
    """One split's pair data and the pair rows of each epoch for one input pipeline."""

    def __init__(self, data_dir, split: str, source: str, seed: int, pipelines: int = 1, pipeline: int = 0):
        if source not in AUDIO_PAIRS:
            raise ConfigError(f"audio pairs: unknown source {source!r}; choose one of {', '.join(AUDIO_PAIRS)}")
        data = PreparedData(data_dir)
        self.files, self.index = data.read_records_index(split)
        self.source, self.seed, self.pipelines, self.pipeline = source, int(seed), int(pipelines), int(pipeline)
        self.root, self.index_path, self.relation_path = data.root, data.pair_path(split, RECORDS_INDEX), None
        self.sampler = None
        if source != "self":
            self.relation_path = data.pair_path(split, source)
            self.sampler = PairSampler(data.read_relation(split, source), EXCLUSIVE[source])
            unknown = np.setdiff1d(self.sampler.songs, self.index[:, 0])
            if len(unknown):
                raise DataError(f"{self.relation_path}: song {unknown[0]} has no record in "
                                f"{self.index_path} ({len(unknown)} such songs)")

    def pairs(self, epoch: int) -> np.ndarray:
        """``(P, 2)`` song ids of ``epoch`` (all input pipelines)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.sampler is None:
            songs = self.index[rng.permutation(len(self.index)), 0]
            return np.stack([songs, songs], axis=1)
        return self.sampler.epoch(rng)

    def rows(self, epoch) -> np.ndarray:
        """``(P', 8)`` int64 rows of this input pipeline's pairs of ``epoch``."""
        pairs = self.pairs(int(epoch))[self.pipeline::self.pipelines]
        at = np.searchsorted(self.index[:, 0], pairs)
        return self.index[at].reshape(-1, _ROW)

    def read(self, locations) -> np.ndarray:
        """Serialized Examples of ``(k, 3)`` (shard, offset, length) rows, in order (one open per shard)."""
        out = np.empty(len(locations), dtype=object)
        for shard in np.unique(locations[:, 0]):
            path = self.files[shard]
            fd = os.open(path, os.O_RDONLY)
            try:
                for i in np.flatnonzero(locations[:, 0] == shard):
                    out[i] = read_record(fd, int(locations[i, 1]), int(locations[i, 2]), path)
            finally:
                os.close(fd)
        return out


    def verify(self, asked, read, finite, shares, locations) -> np.ndarray:
        """``read`` (the batch's song ids), after raising ``DataError`` naming the file at fault when the
        records are not the songs asked for (records index), hold non-finite mel values in a crop (shard),
        or — genre pairs — no pair of the batch shares a genre in its records (relation: the weighted
        loss would have no positive)."""
        k = len(locations)  # records read: 2m, or m for self (each read once, cropped twice)
        redo = f"; rerun prepare into {self.root}"
        for i in np.flatnonzero(asked != read)[:1]:
            shard, offset, _ = locations[i % k]
            raise DataError(f"{self.index_path}: the row of song {asked[i]} points at the record of song {read[i]} "
                            f"({self.files[shard]}, byte {offset}){redo}")
        for i in np.flatnonzero(~finite)[:1]:
            shard, offset, _ = locations[i % k]
            raise DataError(f"{self.files[shard]}: the record of song {read[i]} at byte {offset} holds non-finite "
                            f"mel values (NaN or ±inf){redo} to rewrite the shard")
        if len(shares) and not shares.any():
            m = len(shares)
            raise DataError(f"{self.relation_path}: no pair of a batch of {m} shares a genre in the records (e.g. "
                            f"songs {asked[0]} and {asked[m]}): the relation disagrees with the shards{redo}")
        return read


def _to_draw(start, span):
    """The uniform draw that ``pipeline``'s crop rule turns into ``start`` (floor(u·(span+1)) = start)."""
    return (tf.cast(start, tf.float64) + 0.5) / tf.cast(span + 1, tf.float64)


def second_starts(first, n_frames, u):
    """Start of each second crop: uniform over the starts within ±SS_WINDOW of ``first`` that are in the
    song and do not overlap the first crop, else (no such start) over the window's starts in the song."""
    span = tf.maximum(n_frames - PATCH_FRAMES, 0)
    lo, hi = tf.maximum(first - SS_WINDOW, 0), tf.minimum(first + SS_WINDOW, span)
    left = tf.maximum(first - PATCH_FRAMES - lo + 1, 0)  # starts lo … first − 256
    right = tf.maximum(hi - first - PATCH_FRAMES + 1, 0)  # starts first + 256 … hi

    def pick(count):
        return tf.minimum(tf.cast(tf.floor(u * tf.cast(count, tf.float64)), tf.int64), tf.maximum(count - 1, 0))

    k = pick(left + right)
    apart = tf.where(k < left, lo + k, first + PATCH_FRAMES + k - left)
    return tf.where(left + right > 0, apart, lo + pick(hi - lo + 1))


def _self_draws(serialized, song_ids, u, training: bool):
    """Draws of both crops of each song (first: ``u[:m]`` or the centre; second: the window rule)."""
    n = tf.io.parse_example(serialized, {"n_frames": tf.io.FixedLenFeature([], tf.int64)})["n_frames"]
    span = tf.maximum(n - PATCH_FRAMES, 0)
    m = tf.shape(serialized)[0]
    if training:
        first = tf.minimum(tf.cast(tf.floor(u[:m] * tf.cast(span + 1, tf.float64)), tf.int64), span)
        u2 = u[m:]
    else:
        first = span // 2
        u2 = tf.math.floormod(tf.cast(song_ids, tf.float64) * _GOLDEN, 1.0)
    return tf.concat([_to_draw(first, span), _to_draw(second_starts(first, n, u2), span)], axis=0)


def _pair_batch(plan: PairPlan, rows, u, *, training: bool, cf_dim: int):
    """m pair rows (+ 2m draws when training) → the parsed, cropped 2m-row batch (crops still bytes)."""
    ids = tf.concat([rows[:, 0], rows[:, 4]], axis=0)
    where = rows[:, 1:4] if plan.source == "self" else tf.concat([rows[:, 1:4], rows[:, 5:8]], axis=0)
    serialized = tf.numpy_function(plan.read, [where], tf.string, stateful=False)
    serialized.set_shape([None])
    if plan.source == "self":
        u = _self_draws(serialized, rows[:, 0], u, training)
        serialized, training = tf.concat([serialized, serialized], axis=0), True
    batch = decode_mel(parse_and_crop(serialized, u, training=training, cf_dim=cf_dim))
    m = tf.shape(rows)[0]
    finite = tf.reduce_all(tf.math.is_finite(batch["mel"]), axis=[1, 2])
    shares = _pairs_share_a_genre(batch, m) if plan.source == "genre" else tf.zeros([0], tf.bool)
    # the checked song ids replace the parsed ones: an output, so the check cannot be pruned as unused
    checked = tf.numpy_function(plan.verify, [ids, batch["song_id"], finite, shares, where], tf.int64,
                                stateful=False)
    checked.set_shape(batch["song_id"].shape)
    return dict(batch, song_id=checked)


def _pairs_share_a_genre(batch, m):
    """(m,) bool: whether pair i's two rows (i and m + i) have a genre in common."""
    genres, mask = batch["genres"], batch["genre_mask"]
    same = tf.equal(genres[:m, :, None], genres[m:, None, :]) & mask[:m, :, None] & mask[m:, None, :]
    return tf.reduce_any(same, axis=[1, 2])


def make_pair_dataset(data_dir, split: str, batch_size: int, *, source: str, training: bool = True,
                      seed: int | None = None, input_context: "tf.distribute.InputContext | None" = None,
                      drop_remainder: bool | None = None, parse_parallelism: int | None = None,
                      threadpool_size: int | None = None, with_crop_start: bool = False) -> tf.data.Dataset:
    """Batches of 2m rows ``{"mel" f32 (2m,256,48), "genres", "genre_mask", "cf", "song_id"}``: rows
    ``[:m]`` the first songs of m pairs, ``[m:]`` their partners (module docstring).

    ``batch_size`` is the global number of rows (2 per pair); with ``input_context`` each pipeline yields
    the per-replica rows, which must be even. ``training=True``: a new draw of pairs each epoch, random
    crops, infinite, ``drop_remainder`` defaulting to True; ``training=False``: one fixed pass, centre
    crops, ``drop_remainder`` defaulting to False. ``with_crop_start`` adds ``"crop_start"`` (frames).
    ``parse_parallelism`` and ``threadpool_size`` as in ``pipeline.make_dataset`` (records are read by
    offset, so there is no ``cycle_length``).
    """
    check_parallelism(1, parse_parallelism, threadpool_size)
    _, cf_dim, rows = pipeline_inputs(data_dir, split, batch_size, input_context)
    if rows % 2:
        raise ConfigError(f"batch_size: audio pairs need an even number of rows per replica, got {rows}")
    m = rows // 2
    drop_remainder = bool(training) if drop_remainder is None else drop_remainder
    seed = checked_seed(0 if seed is None and not training else seed)  # evaluation: the fixed draw of 0
    ctx = input_context
    plan = PairPlan(data_dir, split, source, int(seed), *((ctx.num_input_pipelines, ctx.input_pipeline_id)
                                                          if ctx is not None else (1, 0)))
    if len(plan.pairs(0)) < plan.pipelines:
        raise DataError(f"{data_dir}: the {split} split yields {len(plan.pairs(0))} {source} pairs, fewer than the "
                        f"{plan.pipelines} input pipelines")
    ds = tf.data.Dataset.range(np.iinfo(np.int64).max if training else 1)
    ds = ds.map(lambda e: tf.reshape(tf.numpy_function(plan.rows, [e], tf.int64, stateful=False), [-1, _ROW]))
    ds = ds.flat_map(tf.data.Dataset.from_tensor_slices).batch(m, drop_remainder=drop_remainder)
    if training:
        ds = ds.map(lambda r: (r, tf.random.uniform([2 * m], seed=int(seed), dtype=tf.float64)))
    else:
        ds = ds.map(lambda r: (r, tf.zeros([2 * tf.shape(r)[0]], tf.float64)))
    ds = ds.map(lambda r, u: _pair_batch(plan, r, u, training=training, cf_dim=cf_dim),
                num_parallel_calls=parse_parallelism or tf.data.AUTOTUNE, deterministic=True)
    if not with_crop_start:
        ds = ds.map(lambda b: {k: v for k, v in b.items() if k != "crop_start"})
    opts = dataset_options(threadpool_size)
    opts.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF  # shards itself
    return ds.prefetch(tf.data.AUTOTUNE).with_options(opts)


def pair_count(data_dir, split: str, source: str, seed: int = 0) -> int:
    """Pairs of one epoch (epoch 0 of ``seed``; the exclusive sources vary by a few between epochs)."""
    return len(PairPlan(data_dir, split, source, seed).pairs(0))
