"""Throughput and memory of the training input pipeline (``cmir_tf.data.pipeline.make_dataset``).

For each dataset size it writes synthetic shards (``--shard-size`` songs of ``--frames`` × 48 float16
frames per shard, as ``cmir_tf.prepare`` lays them out) into a temporary folder, then runs the
measurement in a fresh child process so each size's peak RSS is its own:

* examples/s of the training pipeline (random crops, shuffle, batch ``--batch``) after ``--warmup``
  batches, over ``--repeats`` windows of ``--examples`` examples each (best and median; other jobs on
  the machine lower the wall-clock rate, the process CPU time per example is the contention-robust
  figure),
* RSS: after TensorFlow and the dataset are set up, after warm-up, at the end, and the peak
  (``VmHWM``) minus the set-up RSS ("growth") — read from ``/proc/self/status``.

With ``--pairs SOURCE`` (playlist, artist, genre or self) the audio-pair pipeline
(``cmir_tf.data.pair_pipeline.make_pair_dataset``: random access to both songs' records by the prepared
records index) is measured instead, on the same shards plus pair data written beside them (random
playlists of 20 songs, artists of 8 songs, 1–3 of 60 genres a song); examples are rows (two a pair).

The ratio to the training rate (examples/s of cmir_tf's contr_cf_g training step) says how far the
pipeline is from being the bottleneck (goal ≥ 20×). That rate is measured in the same run, on the same
machine, before the pipeline runs (``benchmarks/train_step.py``'s own timing of our step, in a fresh
process: ``--train-precision``, ``--batch``, ``--train-steps``), or given with ``--train-rate``
(e.g. a figure ``benchmarks/train_step.py`` printed; ``0`` leaves the ratio out). The shards are
deleted afterwards unless ``--keep``.

    python benchmarks/pipeline.py                      # 1k and 10k songs (writes ~1.8 GB at most)
    python benchmarks/pipeline.py --sizes 1000 --repeats 5 --train-precision mixed_bfloat16
    python benchmarks/pipeline.py --sizes 300 --frames 300 --batch 16 --examples 64 --repeats 1 \\
        --warmup 1 --train-steps 1                     # smoke run
    python benchmarks/pipeline.py --sizes 1000 10000 --pairs playlist   # the audio-pair pipeline
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing
TRAIN_PRECISIONS = ("float32", "mixed_bfloat16")


def rss_kb(field: str = "VmRSS") -> int:
    """A memory figure of this process from /proc/self/status, in kB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def write_shards(out: str, songs: int, frames: int, shard_size: int, seed: int = 0) -> None:
    """``songs`` random songs (float16 mels, 1–13 genres, a 300-d CF vector) in ``train`` shards."""
    import numpy as np
    import tensorflow as tf

    from cmir_tf.data.tfrecords import serialize_example, shard_name

    rng = np.random.default_rng(seed)
    n_shards = max(1, -(-songs // shard_size))
    os.makedirs(os.path.join(out, "train"), exist_ok=True)
    names = []
    for s in range(n_shards):
        name = shard_name("train", s, n_shards)
        tmp = os.path.join(out, "train", name + ".tmp")
        with tf.io.TFRecordWriter(tmp) as w:
            for sid in range(s * shard_size, min(songs, (s + 1) * shard_size)):
                mel = (rng.standard_normal((frames, 48), dtype=np.float32) * 20 - 40)
                genres = rng.choice(60, size=int(rng.integers(1, 14)), replace=False)
                w.write(serialize_example(sid, mel, genres, rng.standard_normal(300, dtype=np.float32)))
        os.replace(tmp, os.path.join(out, "train", name))
        names.append(name)
    manifest = {"counts": {"train": songs, "val": 0, "test": 0}, "shards": {"train": names}, "cf_dim": 300}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    write_pair_data(out, songs, shard_size, names, rng)


def write_pair_data(out: str, songs: int, shard_size: int, names: list, rng) -> None:
    """Random relations and the records index of the shards just written (songs in id order)."""
    import numpy as np

    from cmir_tf.data.pairs import records_index
    from cmir_tf.data.prepared import PreparedData
    from cmir_tf.data.tfrecords import record_spans

    data = PreparedData(out)
    ids = np.arange(songs)
    playlists = [(p, s) for p in range(max(1, songs // 10)) for s in rng.choice(songs, min(20, songs), replace=False)]
    genres = [(g, s) for s in ids for g in rng.choice(60, int(rng.integers(1, 4)), replace=False)]
    relations = {"playlist": np.unique(np.asarray(playlists), axis=0), "artist": np.stack([ids // 8, ids], axis=1),
                 "genre": np.unique(np.asarray(genres), axis=0)}
    shards = [(n, list(range(i * shard_size, min(songs, (i + 1) * shard_size))),
               record_spans(os.path.join(out, "train", n))) for i, n in enumerate(names)]
    data.write_pair_data("train", relations, records_index(shards))


def measure(data_dir: str, batch: int, examples: int, repeats: int, warmup: int, seed: int,
            tuned: bool = False, host: bool = False, pairs: str | None = None) -> dict:
    """Run in a child process: rates and RSS of one dataset's training pipeline, or of the pair pipeline
    with ``pairs`` (``host``: with the parallelism ``cmir_tf.train`` gives it, ``pipeline.host_defaults()``,
    instead of the pipelines' defaults)."""
    import tensorflow as tf

    from cmir_tf.data.pair_pipeline import make_pair_dataset
    from cmir_tf.data.pipeline import host_defaults, make_dataset, tune_malloc

    if tuned:
        assert tune_malloc(), "mallopt unavailable"
    host_args = host_defaults() if host else {}
    if pairs:
        host_args.pop("cycle_length", None)  # records are read by offset
        ds = make_pair_dataset(data_dir, "train", batch, source=pairs, seed=seed, **host_args)
    else:
        ds = make_dataset(data_dir, "train", batch, seed=seed, **host_args)
    it = iter(ds)
    rss_setup = rss_kb()
    for _ in range(warmup):
        next(it)
    rss_warm = rss_kb()
    rates, cpu_us = [], []
    n_batches = max(1, examples // batch)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), sum(os.times()[:2])
        for _ in range(n_batches):
            b = next(it)
        assert b["mel"].shape == (batch, 256, 48) and b["mel"].dtype == tf.float32
        dt, dc = time.perf_counter() - t0, sum(os.times()[:2]) - c0
        rates.append(n_batches * batch / dt)
        cpu_us.append(1e6 * dc / (n_batches * batch))
    return {"rates": rates, "cpu_us": cpu_us, "rss_setup_mb": rss_setup / 1024, "rss_warm_mb": rss_warm / 1024,
            "rss_end_mb": rss_kb() / 1024, "peak_mb": rss_kb("VmHWM") / 1024,
            "growth_mb": (rss_kb("VmHWM") - rss_setup) / 1024,
            "examples": warmup * batch + repeats * n_batches * batch}


def _child(args, *extra) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [sys.executable, os.path.abspath(__file__), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"child {' '.join(extra[:1])} failed:\n{res.stderr[-4000:]}")
    return res.stdout.strip().splitlines()[-1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                   help="dataset sizes in songs (default: 1000 10000; 10k songs of 1876 frames ≈ 1.8 GB)")
    p.add_argument("--frames", type=int, default=1876, help="frames per song (default 1876 = Melon's 30 s)")
    p.add_argument("--shard-size", type=int, default=256, help="songs per shard (default 256, as prepare)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128, the paper's)")
    p.add_argument("--examples", type=int, default=8192, help="examples per timed window (default 8192)")
    p.add_argument("--repeats", type=int, default=5, help="timed windows per size (default 5)")
    p.add_argument("--warmup", type=int, default=30, help="batches before timing (default 30)")
    p.add_argument("--seed", type=int, default=0, help="pipeline seed (default 0)")
    p.add_argument("--train-rate", type=float, default=None,
                   help="training examples/s to compare the pipeline with (default: measured in this run, "
                        "before the pipeline, by timing cmir_tf's contr_cf_g training step; 0: no ratio)")
    p.add_argument("--train-precision", choices=TRAIN_PRECISIONS, default="float32",
                   help="precision of the training step measured for the ratio (default float32, the "
                        "train CLI's default; mixed_bfloat16 is the faster trainer the pipeline must also feed)")
    p.add_argument("--train-steps", type=int, default=3,
                   help="timed training steps (after one warm-up) when measuring the training rate (default 3)")
    p.add_argument("--workdir", default=tempfile.gettempdir(),
                   help="where the temporary shards are written (default: the system temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the shards (printed) instead of deleting them")
    p.add_argument("--tune-malloc", action="store_true",
                   help="also measure each size with cmir_tf.data.pipeline.tune_malloc() (glibc thresholds)")
    p.add_argument("--host-defaults", action="store_true",
                   help="use the parallelism the train CLI derives from the cores (pipeline.host_defaults: shard "
                        "reads, parse calls, own threads) instead of make_dataset's defaults")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--pairs", choices=("playlist", "artist", "genre", "self"),
                   help="measure the audio-pair pipeline with this pair source instead (rows = 2 per pair)")
    p.add_argument("--_write", nargs=2, metavar=("DIR", "SONGS"), help=argparse.SUPPRESS)
    p.add_argument("--_measure", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--_tuned", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._write:
        write_shards(args._write[0], int(args._write[1]), args.frames, args.shard_size, args.seed)
        print("ok")
        return
    if args._measure:
        print(json.dumps(measure(args._measure, args.batch, args.examples, args.repeats, args.warmup, args.seed,
                                 args._tuned, args.host_defaults, args.pairs)))
        return
    for name in ("frames", "shard_size", "batch", "examples", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be ≥ 1")
    if args.frames < 256:
        p.error("--frames must be ≥ 256 (one crop)")
    if args.train_rate is not None and args.train_rate < 0:
        p.error("--train-rate must be ≥ 0")
    if args.train_steps < 1:
        p.error("--train-steps must be ≥ 1")

    if args.train_rate is None:
        sys.path.insert(0, HERE)
        from train_step import run_ours  # benchmarks/train_step.py: times our step in a fresh process

        print(f"measuring the training step (cmir_tf contr_cf_g, {args.train_precision}, batch {args.batch}, "
              f"{args.train_steps} timed steps) ...", file=sys.stderr, flush=True)
        train_rate = run_ours(args.train_precision, args.batch, args.train_steps)["examples_per_s"]
        rate_source = f"measured in this run: contr_cf_g {args.train_precision}, batch {args.batch}"
    else:
        train_rate = args.train_rate
        rate_source = "given with --train-rate"

    results = []
    for size in args.sizes:
        folder = tempfile.mkdtemp(prefix=f"cmir_pipeline_bench_{size}_", dir=args.workdir)
        try:
            t = time.time()
            _child(args, "--_write", folder, str(size), "--frames", str(args.frames),
                   "--shard-size", str(args.shard_size), "--seed", str(args.seed))
            gb = sum(os.path.getsize(os.path.join(folder, "train", f)) for f in os.listdir(os.path.join(folder, "train"))) / 1e9
            print(f"{size} songs: wrote {gb:.2f} GB in {time.time() - t:.0f} s; measuring ...", file=sys.stderr)
            for tuned in ([False, True] if args.tune_malloc else [False]):
                r = json.loads(_child(args, "--_measure", folder, "--batch", str(args.batch), "--examples",
                                      str(args.examples), "--repeats", str(args.repeats), "--warmup",
                                      str(args.warmup), "--seed", str(args.seed), *(["--_tuned"] if tuned else []),
                                      *(["--host-defaults"] if args.host_defaults else []),
                                      *(["--pairs", args.pairs] if args.pairs else [])))
                r.update(songs=size, gb=gb, malloc="tuned" if tuned else "default")
                results.append(r)
        finally:
            if args.keep:
                print(f"kept {folder}", file=sys.stderr)
            else:
                shutil.rmtree(folder, ignore_errors=True)

    what = f"audio-pair pipeline ({args.pairs})" if args.pairs else "training pipeline"
    print(f"\n{what}, batch {args.batch}, {args.frames}-frame songs, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    if train_rate:
        print(f"ratio = best rate / training step {train_rate:.2f} ex/s ({rate_source})")
    head = (f"{'songs':>7} {'malloc':>7} {'GB':>5} {'best ex/s':>10} {'median':>8} {'CPU µs/ex':>9} {'ratio':>6} "
            f"{'RSS setup':>9} {'after warm':>10} {'end':>6} {'peak':>6} {'growth MB':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        best, med = max(r["rates"]), statistics.median(r["rates"])
        print(f"{r['songs']:>7} {r['malloc']:>7} {r['gb']:>5.2f} {best:>10.0f} {med:>8.0f} {min(r['cpu_us']):>9.1f} "
              f"{(f'{best / train_rate:.0f}×' if train_rate else '-'):>6} {r['rss_setup_mb']:>9.0f} {r['rss_warm_mb']:>10.0f} "
              f"{r['rss_end_mb']:>6.0f} {r['peak_mb']:>6.0f} {r['growth_mb']:>9.0f}")
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                       "train_rate": train_rate, "train_rate_source": rate_source, "results": results}, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
