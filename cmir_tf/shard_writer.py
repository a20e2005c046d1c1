"""Prepare's records step in worker processes: one task writes one TFRecord shard of the plan.

A task is a picklable dict ``{"melon": Melon folder, "out": prepared folder, "split", "name": shard file
name, "compress": GZIP or not, "songs": [(song_id, genre indices, CF vector or None)]}``. The worker
loads every mel in full with :func:`cmir_tf.melon.load_mel` and skips, with its reason, a song whose
file fails there (``non_finite`` and the header faults) or whose values float16 cannot hold
(``out_of_range``: a finite float32 above 65504 in magnitude); the others become one record each
(:func:`cmir_tf.tfrecords.serialize_example`). The shard is written under a partial name and renamed
when whole; then its done-record ``{"shard", "split", "written", "skipped", "bytes"}`` is written into
the folder's state (paths by :class:`cmir_tf.prepared.PreparedData`). TensorFlow is imported by the
worker only, so the parent stays light.
"""
from __future__ import annotations

import os

import numpy as np

from .melon import MelError, MelonLayout, load_mel
from .prepared import PreparedData
from .workpool import imap, progress_bar

F16_MAX = float(np.finfo(np.float16).max)  # 65504: records store the mel as float16


def write_shard(task: dict) -> dict:
    """Worker: write one shard (partial name, then renamed), then its done-record. Returns the done-record."""
    import tensorflow as tf

    from .tfrecords import serialize_example

    layout, out = MelonLayout(task["melon"]), PreparedData(task["out"])
    path, tmp = out.shard_path(task["split"], task["name"]), out.partial_path(task["split"], task["name"])
    written, skipped = [], []
    opts = tf.io.TFRecordOptions(compression_type="GZIP" if task["compress"] else "")
    with tf.io.TFRecordWriter(tmp, opts) as w:
        for sid, genres, cf in task["songs"]:
            try:
                mel = load_mel(layout.mel_path(sid))
            except MelError as e:
                skipped.append([sid, e.reason]); continue
            if np.abs(mel).max() > F16_MAX:  # finite float32 that float16 would turn into inf
                skipped.append([sid, "out_of_range"]); continue
            w.write(serialize_example(sid, mel, genres, cf))
            written.append(sid)
    os.replace(tmp, path)
    done = {"shard": task["name"], "split": task["split"], "written": written, "skipped": skipped,
            "bytes": os.path.getsize(path)}
    out.write_done(done)
    return done


def write_shards(tasks: list, workers: int = 1, progress: bool = True):
    """Run the tasks in ``workers`` spawned processes (in this one when 1); yield each done-record as its
    shard finishes, with a progress bar counting songs."""
    bar = progress_bar(sum(len(t["songs"]) for t in tasks), "write records", progress)
    for record in imap(write_shard, tasks, workers, ordered=False):
        bar.update(len(record["written"]) + len(record["skipped"]))
        yield record
    bar.close()
