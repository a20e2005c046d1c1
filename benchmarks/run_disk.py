"""Disk a training run takes, per file, for the real model's sizes (Melon: 254 genres, word2vec 200, CF 300).

    python benchmarks/run_disk.py                       # contr_cf_g at Melon's sizes
    python benchmarks/run_disk.py --mode hybrid --genres 63

Builds the model (no data, no training: the sizes depend on the variables only), takes one Adam step so
the optimizer holds its moments, and writes what a run writes through ``rundir.RunDir``: both
checkpoints and the backup. Prints each file's size and the run's total with the default options, with
``--no-keep-last`` and with both ``--no-keep-last --no-keep-backup`` (after the run completes).
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", default="contr_cf_g")
    ap.add_argument("--genres", type=int, default=254, help="vocabulary size (Melon: 30 major + 224 detailed)")
    ap.add_argument("--w2v-dim", type=int, default=200)
    ap.add_argument("--cf-dim", type=int, default=300)
    args = ap.parse_args(argv)
    import tensorflow as tf

    from cmir_tf.model.contrastive import build_model, dummy_batch
    from cmir_tf.train.rundir import RunDir

    model = build_model(args.mode, np.zeros((args.genres, args.w2v_dim), np.float32), vocab_size=args.genres,
                        w2v_dim=args.w2v_dim, cf_dim=args.cf_dim)
    model(dummy_batch(args.cf_dim), training=False)
    model.optimizer.build(model.trainable_variables)
    model.optimizer.apply([tf.zeros_like(v) for v in model.trainable_variables], model.trainable_variables)
    params = sum(int(np.prod(v.shape)) for v in model.weights)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(tmp)
        run.open_for_training({"mode": args.mode})
        run.save_checkpoint(model, RunDir.BEST)
        run.save_checkpoint(model, RunDir.LAST)
        run.save_backup(model, 1, 0, 1.0)
        sizes = {os.path.relpath(os.path.join(d, f), tmp): os.path.getsize(os.path.join(d, f))
                 for d, _, files in os.walk(tmp) for f in files}
    mb = {k: v / 1e6 for k, v in sizes.items()}
    for name, size in sorted(mb.items()):
        print(f"{size:8.1f} MB  {name}")
    backup = sum(v for k, v in mb.items() if k.startswith("backup/") and not k.endswith("state.json"))
    last = mb["checkpoints/last.weights.h5"]
    total = sum(mb.values())
    print(f"{args.mode}: {params:,} values; run total {total:.1f} MB; --no-keep-last {total - last:.1f} MB; "
          f"--no-keep-last --no-keep-backup once complete {total - last - backup:.1f} MB")


if __name__ == "__main__":
    main()
