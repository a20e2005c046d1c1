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

A shard's framing (TFRecord): per record a little-endian uint64 length, the masked CRC32C of those 8
bytes, the data, the masked CRC32C of the data. :func:`count_records` and :func:`first_record` walk it
in plain Python (no checksum: a seek per record); :func:`check_shard` reads every record through
TensorFlow, which verifies both checksums (about 1 GB/s on one core here: 0.2 s per 200-song shard).

Random access (the audio-pair pipeline): :func:`record_spans` walks the framing of an uncompressed
shard (12 bytes read per record) to the (offset, length) of every Example; :func:`read_record` reads
one back by ``pread`` and verifies its framing as TensorFlow's reader does (length field, masked CRC32C
of the length and of the data, by ``google-crc32c``: about 16 µs for a 180 KB record here).
"""
from __future__ import annotations

import contextlib
import gzip
import os
import re
import struct

import numpy as np

from cmir_tf import fileio
from cmir_tf.constants import N_BANDS
from cmir_tf.errors import DataError

BYTES_PER_FRAME = N_BANDS * 2  # float16
MEL_DTYPE = np.dtype("<f2")
SHARD_SUFFIX = ".tfrecord"
GZIP_SUFFIX = ".gz"


def shard_name(split: str, index: int, count: int, compressed: bool = False) -> str:
    """File name of shard ``index`` (0-based) of ``count`` for ``split``."""
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}" + (GZIP_SUFFIX if compressed else "")


def is_shard_name(name: str) -> bool:
    """Whether a file name is a shard's: ``*.tfrecord`` or ``*.tfrecord.gz``, not hidden (``.…``), so a
    temporary shard (``.cmir-tmp-…``), a legacy partial ``….tfrecord.tmp`` or another tool's temporary
    file never counts."""
    return not name.startswith(".") and name.endswith((SHARD_SUFFIX, SHARD_SUFFIX + GZIP_SUFFIX))


def is_compressed(name: str) -> bool:
    """Whether a shard (name or path) is GZIP-compressed."""
    return name.endswith(GZIP_SUFFIX)


def serialize_example(song_id: int, mel: np.ndarray, genres, cf=None) -> bytes:
    """Serialize one song. ``mel`` is ``(n_frames, 48)`` (time-major) and must be finite.

    Uses the protobuf classes directly (no TensorFlow import) so worker processes stay light.
    Serialized deterministically (the feature map's keys in sorted order): protobuf's upb runtime
    (protobuf >= 4.21, the only one with TensorFlow >= 2.18) otherwise writes a map in an order that
    changes from process to process, so the same song gave different bytes in two worker processes.
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
    example = example_pb2.Example(features=feature_pb2.Features(feature=feats))
    return example.SerializeToString(deterministic=True)


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


# ------------------------------------------------------------------------------------------- framing
HEADER_BYTES = 12  # uint64 length + uint32 masked CRC32C of the length
FOOTER_BYTES = 4  # uint32 masked CRC32C of the data
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


@contextlib.contextmanager
def _open_shard(path):
    try:
        raw = fileio.open_regular(path)
    except OSError as e:
        raise DataError(f"{os.fspath(path)}: cannot read shard ({e.strerror or e})") from None
    with raw, (gzip.GzipFile(fileobj=raw) if is_compressed(os.fspath(path)) else contextlib.nullcontext(raw)) as f:
        try:
            yield f
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise DataError(f"{os.fspath(path)}: damaged shard ({e})") from None


def _records_framing(f, path):
    """Yield ``(index, length)`` per record of open shard ``f``, leaving ``f`` at the record's data."""
    n = 0
    while True:
        head = f.read(HEADER_BYTES)
        if not head:
            return
        if len(head) < HEADER_BYTES:
            raise DataError(f"{os.fspath(path)}: truncated shard (record {n} cut in its header)")
        yield n, _LENGTH.unpack_from(head)[0]
        n += 1


def _skip(f, n: int, size: int | None) -> bool:
    """Move ``f`` ``n`` bytes forward; False when the shard ends first."""
    if size is not None:  # a plain file: one seek
        if f.tell() + n > size:
            return False
        f.seek(n, os.SEEK_CUR)
        return True
    while n:  # GZIP: decompress and drop, a bounded chunk at a time
        got = len(f.read(min(n, 1 << 24)))
        if not got:
            return False
        n -= got
    return True


def count_records(path) -> int:
    """Number of records in a shard, from its framing (a seek per record; GZIP shards are decompressed).
    A shard cut short → ``DataError`` naming it. Checksums are not verified (:func:`check_shard` does)."""
    with _open_shard(path) as f:
        size = None if is_compressed(os.fspath(path)) else os.fstat(f.fileno()).st_size
        n = 0
        for n, length in _records_framing(f, path):
            if not _skip(f, length + FOOTER_BYTES, size):
                raise DataError(f"{os.fspath(path)}: truncated or damaged shard (record {n} runs past its end)")
            n += 1
        return n


def first_record(path) -> bytes | None:
    """The data of a shard's first record (None for an empty shard); a cut record → ``DataError``."""
    with _open_shard(path) as f:
        for _, length in _records_framing(f, path):
            data = f.read(length) if length <= (1 << 31) else b""
            if len(data) < length:
                raise DataError(f"{os.fspath(path)}: truncated shard (record 0 cut short)")
            return data
    return None


def check_shard(path) -> tuple[int, str | None]:
    """Read every record of a shard through TensorFlow, which verifies both checksums of each →
    ``(records read, None)`` or ``(good records before the fault, "corrupted record at byte N")``."""
    import tensorflow as tf

    n = 0
    try:
        for _ in tf.data.TFRecordDataset(os.fspath(path), compression_type="GZIP" if is_compressed(os.fspath(path))
                                         else None):
            n += 1
    except tf.errors.DataLossError as e:
        found = re.search(r"(corrupted|truncated) record at (\d+)", str(e))
        return n, (f"{found.group(1)} record at byte {found.group(2)}" if found else "damaged data")
    return n, None
# ------------------------------------------------------------------------------------- random access


def record_spans(path) -> np.ndarray:
    """``(n, 2)`` int64: (byte offset, length) of every serialized Example of an uncompressed shard, in
    file order (from its framing, as :func:`count_records`). A GZIP shard, or one whose framing does not
    fill it exactly → ``DataError`` naming the file."""
    if is_compressed(os.fspath(path)):
        raise DataError(f"{os.fspath(path)}: a GZIP shard cannot be read by offset")
    spans = []
    with _open_shard(path) as f:
        size = os.fstat(f.fileno()).st_size
        for n, length in _records_framing(f, path):
            spans.append((f.tell(), length))
            if not _skip(f, length + FOOTER_BYTES, size):
                raise DataError(f"{os.fspath(path)}: truncated or damaged shard (record {n} runs past its end)")
    return np.asarray(spans, np.int64).reshape(-1, 2)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum of ``data``: CRC32C (Castagnoli), rotated right by 15 bits plus 0xa282ead8."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_record(fd: int, offset: int, length: int, path: str = "") -> bytes:
    """The serialized Example at ``offset`` (from :func:`record_spans`) of an open shard, checked as
    TensorFlow's reader checks a record: the length field, its checksum and the data's checksum. A
    mismatch → ``DataError`` naming the shard and the record's byte."""
    where = path or fd
    if offset < HEADER_BYTES or length < 0:
        raise DataError(f"{where}: no record of {length} bytes at byte {offset} (records index out of date?)")
    data = os.pread(fd, HEADER_BYTES + length + FOOTER_BYTES, offset - HEADER_BYTES)
    if len(data) != HEADER_BYTES + length + FOOTER_BYTES or _LENGTH.unpack_from(data)[0] != length:
        raise DataError(f"{where}: no record of {length} bytes at byte {offset} (records index out of date?)")
    record = data[HEADER_BYTES:HEADER_BYTES + length]
    for what, checked, stored in (("length", data[:8], data[8:HEADER_BYTES]), ("data", record, data[-FOOTER_BYTES:])):
        if masked_crc32c(checked) != _CRC.unpack(stored)[0]:
            raise DataError(f"{where}: damaged record at byte {offset - HEADER_BYTES} (its {what} checksum does not "
                            "match); rerun prepare into its folder to rewrite the shard")
    return record
