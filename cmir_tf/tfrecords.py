"""The record schema: the one place that writes and parses a song's ``tf.train.Example``.

One Example per song (see ``tfrecords/README.md``):

==========  =============  ==========================================================================
feature     type           value
==========  =============  ==========================================================================
song_id     int64          Melon song id
mel         bytes          float16 little-endian, ``n_frames × 48`` row-major (time-major: frame t is
                           bytes ``[t*96, (t+1)*96)``) — a crop is a byte substring, no full decode
n_frames    int64          number of frames (≥ 256)
genres      int64 list     vocabulary indices of all the song's genres (major + detailed), ≥ 1
cf          float list     the song's CF vector (F_cf values); empty for test songs (cold start)
==========  =============  ==========================================================================

Shards are named ``{split}-{index:05d}-of-{count:05d}.tfrecord`` (uncompressed: reading is the hot path
and a mel does not compress well) or ``….tfrecord.gz`` (GZIP) when asked for. This module is the one
place that spells those names (:func:`shard_name`, :func:`is_shard_name`, :func:`is_compressed`).

Random access (the audio-pair pipeline): an uncompressed shard is TFRecord framing around each
Example — ``uint64 length``, ``uint32`` masked CRC of the length, the ``length`` bytes, ``uint32`` masked
CRC of the bytes, little-endian. :func:`record_spans` walks that framing (12 bytes read per record) to
the (offset, length) of every Example; :func:`read_record` reads one back by ``pread``, checking the
length field (the data CRC is not recomputed; the parse and the song-id check after it are the guard).
"""
from __future__ import annotations

import os
import struct

import numpy as np

from .constants import N_BANDS
from .errors import DataError

BYTES_PER_FRAME = N_BANDS * 2  # float16
MEL_DTYPE = np.dtype("<f2")
SHARD_SUFFIX = ".tfrecord"
GZIP_SUFFIX = ".gz"


def shard_name(split: str, index: int, count: int, compressed: bool = False) -> str:
    """File name of shard ``index`` (0-based) of ``count`` for ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}" + (GZIP_SUFFIX if compressed else "")


def is_shard_name(name: str) -> bool:
    """Whether a file name is a shard's: ``*.tfrecord`` or ``*.tfrecord.gz``, not hidden (``.…``), so a
    partial ``….tfrecord.tmp`` or another tool's temporary file never counts."""
    return not name.startswith(".") and name.endswith((SHARD_SUFFIX, SHARD_SUFFIX + GZIP_SUFFIX))


def is_compressed(name: str) -> bool:
    """Whether a shard (name or path) is GZIP-compressed."""
    return name.endswith(GZIP_SUFFIX)


def serialize_example(song_id: int, mel: np.ndarray, genres, cf=None) -> bytes:
    """Serialize one song. ``mel`` is ``(n_frames, 48)`` (time-major) and must be finite.

    Uses the protobuf classes directly (no TensorFlow import) so worker processes stay light.
    """
    from tensorflow.core.example import example_pb2, feature_pb2  # protobuf only, no TF runtime

    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != N_BANDS:
        raise ValueError(f"song {song_id}: mel must be (n_frames, {N_BANDS}), got {mel.shape}")
    with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below with the song named
        mel16 = mel.astype(MEL_DTYPE)
    if not np.isfinite(mel16).all():
        raise ValueError(f"song {song_id}: mel holds non-finite values after float16 conversion")
    genres = [int(g) for g in genres]
    cf = [] if cf is None else [float(v) for v in np.asarray(cf, dtype=np.float32).ravel()]
    feats = {
        "song_id": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(song_id)])),
        "mel": feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[np.ascontiguousarray(mel16).tobytes()])),
        "n_frames": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[mel16.shape[0]])),
        "genres": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=genres)),
        "cf": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=cf)),
    }
    return example_pb2.Example(features=feature_pb2.Features(feature=feats)).SerializeToString()


def feature_spec():
    """``tf.io.parse_example`` spec of the schema (the variable-length lists parse as ragged tensors)."""
    import tensorflow as tf

    return {
        "song_id": tf.io.FixedLenFeature([], tf.int64),
        "mel": tf.io.FixedLenFeature([], tf.string),
        "n_frames": tf.io.FixedLenFeature([], tf.int64),
        "genres": tf.io.RaggedFeature(tf.int64),
        "cf": tf.io.RaggedFeature(tf.float32),
    }


def parse_example_numpy(record: bytes) -> dict:
    """Decode one serialized Example to numpy (for tests, tools and debugging, not the hot path)."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(record)
    f = ex.features.feature
    n_frames = int(f["n_frames"].int64_list.value[0])
    mel = np.frombuffer(f["mel"].bytes_list.value[0], dtype=MEL_DTYPE).reshape(n_frames, N_BANDS)
    return {
        "song_id": int(f["song_id"].int64_list.value[0]),
        "mel": mel,
        "n_frames": n_frames,
        "genres": np.asarray(f["genres"].int64_list.value, dtype=np.int64),
        "cf": np.asarray(f["cf"].float_list.value, dtype=np.float32),
    }


# ------------------------------------------------------------------------------------- random access
_LENGTH = struct.Struct("<Q")
HEADER_BYTES = 12  # uint64 length + uint32 masked CRC of the length
FOOTER_BYTES = 4  # uint32 masked CRC of the data


def record_spans(path) -> np.ndarray:
    """``(n, 2)`` int64: (byte offset, length) of every serialized Example of an uncompressed shard, in
    file order. Raises ``ValueError`` naming the file when the framing does not fill it exactly."""
    size = os.path.getsize(path)
    spans, pos = [], 0
    with open(path, "rb") as f:
        while pos < size:
            header = os.pread(f.fileno(), HEADER_BYTES, pos)
            if len(header) < HEADER_BYTES:
                raise DataError(f"{path}: truncated record header at byte {pos}")
            (length,) = _LENGTH.unpack_from(header)
            if pos + HEADER_BYTES + length + FOOTER_BYTES > size:
                raise DataError(f"{path}: record at byte {pos} claims {length} bytes, past the end of the file")
            spans.append((pos + HEADER_BYTES, length))
            pos += HEADER_BYTES + length + FOOTER_BYTES
    return np.asarray(spans, np.int64).reshape(-1, 2)


def read_record(fd: int, offset: int, length: int, path: str = "") -> bytes:
    """The serialized Example at ``offset`` (from :func:`record_spans`) of an open shard."""
    data = os.pread(fd, HEADER_BYTES + length, offset - HEADER_BYTES)
    if len(data) != HEADER_BYTES + length or _LENGTH.unpack_from(data)[0] != length:
        raise DataError(f"{path or fd}: no record of {length} bytes at byte {offset} (records index out of date?)")
    return data[HEADER_BYTES:]
