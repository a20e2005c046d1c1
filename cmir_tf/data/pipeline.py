"""Streaming ``tf.data`` input pipeline over the prepared TFRecord shards (docs/ARCHITECTURE.md).

The shards of a split and the CF size come from :class:`cmir_tf.data.prepared.PreparedData`: the shards the
manifest lists (each must exist), else the shard files in ``{split}/``; the manifest's ``cf_dim``, else
``constants.CF_DIM``.

``make_dataset`` (training and evaluation batches of 256-frame crops) and ``make_patch_dataset`` (every
non-overlapping 256-frame patch of every song, for evaluation).

Training graph (``training=True``)::

    shard files ─ per-epoch seeded file shuffle ─ interleave(TFRecordDataset, deterministic)
      ─ [record shard by worker when there are fewer files than workers] ─ repeat
      ─ batch(PARSE_BATCH) serialized records
      ─ map: vectorised tf.io.parse_example; crop = a byte substring of the float16 mel
             (offsets from a seeded RNG drawn in a sequential map: the n-th batch gets the n-th draw);
             genres → first T_w=10 indices padded with 0 + mask; cf → float32 (zeros when empty)
      ─ unbatch ─ shuffle(bounded buffer of *crops*, 24.5 KB each, never whole songs)
      ─ batch(per-replica batch) ─ map: decode_raw float16 → float32 (B, 256, 48) ─ prefetch

The crop is taken from the serialized bytes before any decoding, so the cost per example does not
depend on the song's length, and memory is bounded by the buffers above whatever the dataset size.

Reproducibility: for a given ``seed`` the file order, the crops and the shuffle are fixed, and every
ordering stage is deterministic, so two runs (two iterators, or two processes) give identical batches.
As with every seeded TensorFlow random op, the stream is a function of ``seed`` *and* TensorFlow's global
seed (``tf.random.set_seed`` / ``keras.utils.set_random_seed``, unset by default); ``cmir_tf.train.loop``
sets both from ``--seed``.
``seed=None`` draws a fresh seed. Keeping order (``deterministic=True``) was measured to cost nothing
here: a non-deterministic variant was not faster. The repeat comes before the shuffle, so epochs blur at
the buffer (a song may be drawn again before every other song has been) — the usual tf.data idiom.

Throughput (benchmarks/pipeline.py, 2 shared cores): ~100 µs of CPU per example, most of it reading
the ~180 KB record (TFRecord CRC32C and the kernel copy), i.e. ≥ 10,000 examples/s; the rest is the
parse, the crop and the shuffle. ``tune_malloc()`` saves another ~15 % where the caller opts in.
Parallelism (``cycle_length``, ``parse_parallelism``, ``threadpool_size``) is per host; ``host_defaults``
derives it from the cores, and docs/GPU.md sizes it for a host feeding several GPUs (batches reach the
devices through ``tf.distribute.InputOptions``, set by ``cmir_tf.train.loop``).

Evaluation (``training=False``): a fixed order (round-robin over the sorted files), one pass, no shuffle,
the **centre crop** ``start = (n_frames - 256) // 2``; the last partial batch is kept unless
``drop_remainder=True``.

Distribution: with ``input_context`` (from ``strategy.distribute_datasets_from_function``) the files are
split by ``input_pipeline_id`` when there are at least ``num_input_pipelines`` of them, otherwise every
pipeline reads all files and keeps every n-th record; the batch is the per-replica batch
``input_context.get_per_replica_batch_size(batch_size)``. Without ``input_context`` the dataset is
auto-shardable by ``tf.distribute`` (``strategy.experimental_distribute_dataset``): the file list is a
``from_tensor_slices`` source feeding ``TFRecordDataset`` so the FILE policy applies, and the DATA
fallback is consistent across workers because the order is deterministic for a seed (pass the same
``seed`` on every worker).
"""
from __future__ import annotations

import tensorflow as tf

from cmir_tf.constants import PATCH_FRAMES
from cmir_tf.data.batching import (check_frames, check_parallelism, checked_seed, dataset_options, decode_mel,
                                   genres_and_cf, parse_and_crop, pipeline_inputs)
from cmir_tf.data.tfrecords import BYTES_PER_FRAME, N_BANDS, feature_spec, is_compressed
from cmir_tf.errors import ConfigError

# Records parsed together by one vectorised ``tf.io.parse_example`` call.
PARSE_BATCH = 64
# Crops held by the training shuffle buffer (each 256 × 48 × 2 bytes = 24.5 KB → ~50 MB).
SHUFFLE_BUFFER = 2048
# Shards read concurrently (bounded by the number of files): make_dataset's default, and the least
# ``host_defaults`` gives; at most MAX_READ_PARALLELISM from the core count.
CYCLE_LENGTH = 8
MAX_READ_PARALLELISM = 64
# Read buffer of each uncompressed TFRecordDataset: 0 = none, each record is read straight into its
# tensor. Measured here (180 KB records, page cache): 0 → ~72 µs CPU per record, 256 KB (TF's default)
# → ~88 µs, 4 MB → ~118 µs; the extra copy through the buffer costs more than the saved reads.
READ_BUFFER = 0


# --------------------------------------------------------------------------------------------- files
def _records(files: list[str], *, shuffle_files: bool, seed: int, cycle_length: int,
             num_shards: int = 1, shard_index: int = 0) -> tf.data.Dataset:
    """Serialized records of ``files``, interleaved, deterministic for a seed."""
    compression = "GZIP" if is_compressed(files[0]) else None
    buffer = None if compression else READ_BUFFER  # GZIP streams keep TF's default buffering
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle = max(1, min(cycle_length, len(files)))
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression, buffer_size=buffer),
        cycle_length=cycle, block_length=1,
        **({"num_parallel_calls": cycle, "deterministic": True} if cycle > 1 else {}))
    if num_shards > 1:
        ds = ds.shard(num_shards, shard_index)
    return ds


def _split_files(files: list[str], input_context) -> tuple[list[str], int, int]:
    """Files this input pipeline reads, and the (count, index) of the record-level sharding left to do."""
    if input_context is None or input_context.num_input_pipelines <= 1:
        return files, 1, 0
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
        return files[i::n], 1, 0
    return files, n, i


# ------------------------------------------------------------------------------------------- public
def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or ``taskset``'s share)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_defaults(cores: int | None = None) -> dict:
    """``make_dataset``'s parallelism for a host with ``cores`` cores (default: :func:`available_cores`).

    One input pipeline per host feeds all its replicas (``distribute_datasets_from_function`` calls the
    dataset function once per worker), so these are per host: ``cycle_length`` (shards read at once)
    = the cores, at least :data:`CYCLE_LENGTH` (reads also wait on storage) and at most
    :data:`MAX_READ_PARALLELISM`; ``parse_parallelism`` (parse + crop and decode calls in flight) and
    ``threadpool_size`` (the pipeline's own threads, apart from the training step's) = the cores.
    """
    cores = max(1, int(cores or available_cores()))
    return {"cycle_length": max(CYCLE_LENGTH, min(cores, MAX_READ_PARALLELISM)),
            "parse_parallelism": cores, "threadpool_size": cores}


def tune_malloc(mmap_threshold: int = 4 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Opt-in, process-wide: keep glibc from ``mmap``-ing and unmapping every ~180 KB record buffer.

    Each serialized song is larger than glibc's initial mmap threshold (128 KB), so without this every
    record read costs fresh page faults (measured: ~15 % of the pipeline's CPU time here); fixed
    thresholds keep those buffers on the heap for reuse, for a few tens of MB more resident memory.
    Equivalent to ``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_`` in the environment. Returns
    False (and does nothing) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold)) and mallopt(m_trim_threshold, int(trim_threshold)))


def make_dataset(data_dir, split: str, batch_size: int, *, training: bool = True, seed: int | None = None,
                 input_context: "tf.distribute.InputContext | None" = None, drop_remainder: bool | None = None,
                 shuffle_buffer: int = SHUFFLE_BUFFER, cycle_length: int = CYCLE_LENGTH,
                 parse_parallelism: int | None = None, threadpool_size: int | None = None,
                 with_crop_start: bool = False, crop_window: int | None = None,
                 random_crops: bool = False) -> tf.data.Dataset:
    """Batches ``{"mel": f32 (B,256,48), "genres": i32 (B,10), "genre_mask": bool (B,10),
    "cf": f32 (B,cf_dim), "song_id": i64 (B,)}`` from ``data_dir/{split}`` shards.

    ``batch_size`` is the global batch; with ``input_context`` each pipeline yields the per-replica
    batch. ``training=True``: seeded random crops, shuffle, infinite repeat, ``drop_remainder``
    defaulting to True (static batch shape). ``training=False``: centre crops, one pass in a fixed order,
    ``drop_remainder`` defaulting to False. ``with_crop_start`` adds ``"crop_start"`` (i64, frames).
    ``shuffle_buffer`` counts crops; ``cycle_length`` caps the shards read concurrently (and, with the
    seeds, sets the record order); ``parse_parallelism`` counts the parse / decode calls in flight (None:
    tf.data's autotuning); ``threadpool_size`` gives the pipeline its own threads (None: TensorFlow's
    shared pool). :func:`host_defaults` derives the last three from the host's cores.
    ``crop_window``: crops only from the first that many frames of each song (``--variant published``:
    1300). ``random_crops`` with ``training=False``: seeded random crops instead of the centre ones, in
    an endless stream without shuffling (``--random-val-crops``; each pass draws new crops).
    """
    check_parallelism(cycle_length, parse_parallelism, threadpool_size)
    parallel = parse_parallelism or tf.data.AUTOTUNE
    files, cf_dim, batch_size = pipeline_inputs(data_dir, split, batch_size, input_context)
    if drop_remainder is None:
        drop_remainder = bool(training)
    seed = checked_seed(seed)
    if shuffle_buffer < 0:
        raise ConfigError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")

    files, n_rec_shards, rec_index = _split_files(files, input_context)
    # Record-level sharding needs the same record order in every pipeline, whatever their seeds: the
    # file order then stays fixed (the crops and the shuffle buffer still randomise).
    ds = _records(files, shuffle_files=training and n_rec_shards == 1, seed=seed, cycle_length=cycle_length,
                  num_shards=n_rec_shards, shard_index=rec_index)
    if crop_window is not None and crop_window < PATCH_FRAMES:
        raise ConfigError(f"crop_window must be ≥ {PATCH_FRAMES} frames, got {crop_window}")
    if training or random_crops:
        ds = ds.repeat()
        # Crop positions: uniform draws from a seeded stateful RNG in a *sequential* map (so the n-th parse
        # batch always gets the n-th draw, in every run), then the parse runs in parallel, in order.
        # Not a counter from enumerate()/scan(): their extra inputs make tf.distribute's FILE
        # auto-sharding fail ("unshardable source dataset"). Each new iterator restarts the RNG.
        ds = ds.batch(PARSE_BATCH, drop_remainder=True)
        ds = ds.map(lambda s: (s, tf.random.uniform([PARSE_BATCH], seed=seed, dtype=tf.float64)))
        ds = ds.map(lambda s, u: parse_and_crop(s, u, training=True, cf_dim=cf_dim, window=crop_window),
                    num_parallel_calls=parallel, deterministic=True)
        ds = ds.unbatch()
        if training and shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(decode_mel, num_parallel_calls=parallel, deterministic=True)
    else:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(lambda s: decode_mel(parse_and_crop(s, None, training=False, cf_dim=cf_dim, window=crop_window)),
                    num_parallel_calls=parallel, deterministic=True)
    if not with_crop_start:
        ds = ds.map(lambda b: {k: v for k, v in b.items() if k != "crop_start"})
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(dataset_options(threadpool_size))


def _song_patches(serialized, cf_dim: int):
    """One song → its ``n_frames // 256`` non-overlapping patches (ragged first dimension)."""
    parsed = tf.io.parse_example(serialized[tf.newaxis], feature_spec())
    with tf.control_dependencies([check_frames(parsed)]):
        n_patches = parsed["n_frames"][0] // PATCH_FRAMES
    mel = tf.strings.substr(parsed["mel"][0], 0, tf.cast(n_patches * PATCH_FRAMES * BYTES_PER_FRAME, tf.int32),
                            unit="BYTE")
    mel = tf.io.decode_raw(mel, tf.float16, little_endian=True)
    mel = tf.cast(tf.reshape(mel, [n_patches, PATCH_FRAMES, N_BANDS]), tf.float32)
    genres, mask, cf = genres_and_cf(parsed, cf_dim)
    tile = lambda x: tf.repeat(x, n_patches, axis=0)  # noqa: E731
    return {"mel": mel, "genres": tile(genres), "genre_mask": tile(mask), "cf": tile(cf),
            "song_id": tile(parsed["song_id"]), "patch_index": tf.range(n_patches, dtype=tf.int64),
            "n_patches": tf.fill([n_patches], n_patches)}


def make_patch_dataset(data_dir, split: str, batch_size: int, *,
                       input_context: "tf.distribute.InputContext | None" = None) -> tf.data.Dataset:
    """Every non-overlapping 256-frame patch of every song (frames ``[256 p, 256 (p+1))`` for
    ``p < n_frames // 256``; a tail shorter than 256 frames is dropped), in file order, one pass.

    Batches hold the ``make_dataset`` keys plus ``"patch_index"`` and ``"n_patches"`` (both i64); the
    patches of one song are consecutive, so a track's mean embedding is a segment mean over ``song_id``.
    The last batch may be partial.
    """
    files, cf_dim, batch_size = pipeline_inputs(data_dir, split, batch_size, input_context)
    files, n_rec_shards, rec_index = _split_files(files, input_context)
    ds = _records(files, shuffle_files=False, seed=0, cycle_length=1,
                  num_shards=n_rec_shards, shard_index=rec_index)
    ds = ds.map(lambda s: _song_patches(s, cf_dim), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.unbatch().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(dataset_options())
