"""Prepare's records step in worker processes: one task writes one TFRecord shard of the plan.

A task is a picklable dict ``{"melon": Melon folder, "out": prepared folder, "split", "name": shard file
name, "compress": GZIP or not, "songs": [(song_id, genre indices, CF vector or None)]}``, and for a music
library ``"audio": {song_id: audio file}``. The worker loads every mel in full with
:func:`cmir_tf.data.melon.load_mel` (a library: computes it with :func:`cmir_tf.data.library.audio_mel`, printing
one line per file it skips) and skips, with its reason, a song whose
file fails there (``non_finite`` and the header faults) or whose values float16 cannot hold
(``out_of_range``: a finite float32 above 65504 in magnitude); the others become one record each
(:func:`cmir_tf.data.tfrecords.serialize_example`). The shard is written under a temporary name
(:func:`cmir_tf.fileio.atomic_path`) and renamed when whole; then its done-record ``{"shard", "split",
"written", "skipped", "bytes"}`` is written into the folder's state (paths by
:class:`cmir_tf.data.prepared.PreparedData`). A full disk (TensorFlow's ``ResourceExhaustedError``) or a
refused write becomes a :class:`~cmir_tf.errors.StorageError` naming the shard; the partial file is
removed and a rerun resumes. :func:`verify_shard` checks a shard found finished by an earlier run
(every record's checksums, and its record count) before it is trusted. TensorFlow is imported by the
worker only, so the parent stays light.
"""
from __future__ import annotations

import errno
import os
import sys

import numpy as np

from cmir_tf.data.library import audio_mel, shown
from cmir_tf.data.melon import MelError, MelonLayout, load_mel
from cmir_tf.data.prepared import PreparedData
from cmir_tf.data.tfrecords import check_shard
from cmir_tf.fileio import atomic_path
from cmir_tf.workpool import imap, progress_bar

F16_MAX = float(np.finfo(np.float16).max)  # 65504: records store the mel as float16


def _os_error(exc, path) -> OSError:
    """TensorFlow's error for a failed write → the ``OSError`` it stands for (so it is reported as one)."""
    import tensorflow as tf

    message = str(exc)
    code = (errno.ENOSPC if isinstance(exc, tf.errors.ResourceExhaustedError) or "No space left" in message
            else errno.EDQUOT if "quota" in message.lower()
            else errno.EACCES)
    return OSError(code, os.strerror(code), os.fspath(path))


def _write_records(tmp: str, task: dict) -> tuple[list, list]:
    import tensorflow as tf

    from cmir_tf.data.tfrecords import serialize_example

    layout = MelonLayout(task["melon"])
    audio = task.get("audio")  # a library: {song id: audio file}, its mel computed here
    written, skipped = [], []
    opts = tf.io.TFRecordOptions(compression_type="GZIP" if task["compress"] else "")
    with tf.io.TFRecordWriter(tmp, opts) as w:
        for sid, genres, cf in task["songs"]:
            try:
                mel = audio_mel(audio[sid]) if audio else load_mel(layout.mel_path(sid))
            except MelError as e:
                if audio:
                    print(f"{shown(e.path)}: skipped ({e.reason}: {e.detail})", file=sys.stderr, flush=True)
                skipped.append([sid, e.reason]); continue
            if np.abs(mel).max() > F16_MAX:  # finite float32 that float16 would turn into inf
                skipped.append([sid, "out_of_range"]); continue
            w.write(serialize_example(sid, mel, genres, cf))
            written.append(sid)
    return written, skipped


def write_shard(task: dict) -> dict:
    """Worker: write one shard (temporary name, then renamed), then its done-record. Returns the done-record."""
    import tensorflow as tf

    out = PreparedData(task["out"])
    path = out.shard_path(task["split"], task["name"])
    with atomic_path(path) as tmp:
        try:
            written, skipped = _write_records(tmp, task)
        except (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError) as e:
            raise _os_error(e, tmp) from None
    done = {"shard": task["name"], "split": task["split"], "written": written, "skipped": skipped,
            "bytes": os.path.getsize(path)}
    out.write_done(done)
    return done


def finished_shards(out: PreparedData, shards: dict, workers: int = 1, progress: bool = True, log=print) -> dict:
    """``{shard name: done-record}`` of the planned shards (``{split: [{"name", …}]}``) an earlier run
    finished and whose records all check out (read back by ``workers`` processes, :func:`verify_shard`);
    a damaged one is logged and left out, so it is written again. Creates the split folders."""
    found = {}
    for split, planned in shards.items():
        out.start_split(split)
        for sh in planned:
            record = out.finished(split, sh["name"])
            if record is not None:
                found[sh["name"]] = (out.shard_path(split, sh["name"]), record)
    bar = progress_bar(len(found), "verify shards", progress and bool(found))
    good = {}
    for name, ok in imap(verify_shard, list(found.values()), workers):
        bar.update(1)
        if ok:
            good[name] = found[name][1]
        else:
            log(f"{found[name][0]}: damaged (a record's checksum or the record count is wrong); writing it again")
    bar.close()
    return good


def verify_shard(item: tuple) -> tuple[str, bool]:
    """Worker: ``(path, done-record)`` → ``(shard name, whether every record's checksums hold and the
    shard has the records its done-record lists)``."""
    path, done = item
    n, problem = check_shard(path)
    return done["shard"], problem is None and n == len(done["written"])


def write_shards(tasks: list, workers: int = 1, progress: bool = True):
    """Run the tasks in ``workers`` spawned processes (in this one when 1); yield each done-record as its
    shard finishes, with a progress bar counting songs."""
    bar = progress_bar(sum(len(t["songs"]) for t in tasks), "write records", progress)
    for record in imap(write_shard, tasks, workers, ordered=False):
        bar.update(len(record["written"]) + len(record["skipped"]))
        yield record
    bar.close()
