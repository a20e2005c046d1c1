"""Training speed of the full contr_cf_g model vs the PyTorch peer, side by side, on this machine.

    python benchmarks/train_step.py                      # batch 128, 3 interleaved rounds
    python benchmarks/train_step.py --rounds 5 --steps 3 --peer-python /work/torchvenv/bin/python
    python benchmarks/train_step.py --profile            # forward / forward+backward / step split

Each round runs, one after the other in fresh processes, the peer (``shared/peers/torch_peer.py train``)
and our model in each requested precision (A B A B ...), so that load from other processes on a
shared machine hits both alike. Each process does one untimed warm-up step (tracing, allocation)
and then ``--steps`` timed steps on a fixed random batch like the peer's (mel (B,256,48), genres,
CF vector; forward + backward + Adam). Printed: every round's examples/s, the medians, and the median
of the per-round ratios ours/peer. ``float32`` is the paper's numerics; ``mixed_bfloat16`` runs only
the audio CNN blocks in bfloat16 (losses and embeddings stay float32), which pays off on CPUs with
AVX512_BF16 / AMX.

The peer needs torch, which is not a dependency of this package: ``--peer-python`` is a Python
that can import it (default: the first of /work/torchvenv/bin/python, this Python, that can).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PEER = REPO.parent / "shared" / "peers" / "torch_peer.py"
TORCH_VENV_PYTHON = Path("/work/torchvenv/bin/python")
PRECISIONS = ("float32", "mixed_bfloat16")


def _child(args) -> None:
    """Run in a fresh process: time our training step (and optionally its parts); print one JSON line."""
    import numpy as np
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    sys.path.insert(0, str(REPO))
    from cmir_tf import constants as C
    from cmir_tf.model import build_model

    b, vocab = args.batch, 200
    rng = np.random.default_rng(0)
    mask = rng.random((b, C.MAX_GENRES)) > 0.3
    mask[:, 0] = True
    genres = np.where(mask, rng.integers(0, vocab, size=(b, C.MAX_GENRES)), 0).astype("int32")
    data = {
        "mel": tf.constant(rng.normal(size=(b, C.PATCH_FRAMES, C.N_BANDS)).astype("float32")),
        "genres": tf.constant(genres),
        "genre_mask": tf.constant(mask),
        "cf": tf.constant(rng.random((b, C.CF_DIM)).astype("float32")),
        "song_id": tf.constant(np.arange(b, dtype="int64")),
    }
    w2v = rng.normal(size=(vocab, C.W2V_DIM)).astype("float32")
    cnn_dtype = None if args.child == "float32" else args.child
    model = build_model("contr_cf_g", w2v, cnn_dtype=cnn_dtype)

    def timed(fn):
        fn()  # warm-up: tracing and first allocation
        start = time.perf_counter()
        for _ in range(args.steps):
            out = fn()
        float(tf.reduce_sum(tf.cast(tf.nest.flatten(out)[0], tf.float32)))
        return (time.perf_counter() - start) / args.steps

    result = {"precision": args.child, "batch": b, "steps": args.steps}
    if args.profile:
        forward = tf.function(lambda: model._loss_shares(data, training=True)[0])

        @tf.function
        def forward_backward():
            with tf.GradientTape() as tape:
                loss = model._loss_shares(data, training=True)[0]
            return tape.gradient(loss, model.trainable_variables)

        @tf.function
        def audio_forward_backward():
            with tf.GradientTape() as tape:
                emb, _ = model.audio_encoder(data["mel"], training=True)
                loss = tf.reduce_sum(tf.cast(emb, tf.float32))
            return tape.gradient(loss, model.audio_encoder.trainable_variables)

        result["forward_s"] = timed(forward)
        result["forward_backward_s"] = timed(forward_backward)
        result["audio_forward_backward_s"] = timed(audio_forward_backward)
    step = timed(lambda: model.train_on_batch(data))
    result["step_s"] = step
    result["examples_per_s"] = b / step
    print(json.dumps(result))


def _find_peer_python(explicit: str | None) -> str:
    if explicit:
        return explicit
    for cand in (TORCH_VENV_PYTHON, Path(sys.executable)):
        if cand.exists() and subprocess.run([str(cand), "-c", "import torch"], capture_output=True).returncode == 0:
            return str(cand)
    raise SystemExit("no Python with torch found: pass --peer-python (e.g. a venv with `pip install torch`)")


def _run_peer(python: str, peer: Path, batch: int, steps: int, threads: int | None) -> float:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run(
        [python, str(peer), "train", "--batch", str(batch), "--steps", str(steps)],
        capture_output=True, text=True, env=env, check=False,
    )
    m = re.search(r"examples_per_s=([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise SystemExit(f"peer failed ({python} {peer}):\n{out.stdout}\n{out.stderr[-2000:]}")
    return float(m.group(1))


def _run_ours(precision: str, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", precision, "--batch", str(args.batch),
           "--steps", str(args.steps)]
    if args.intra:
        cmd += ["--intra", str(args.intra)]
    if args.inter:
        cmd += ["--inter", str(args.inter)]
    if args.profile:
        cmd.append("--profile")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"our benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="global batch size (paper: 128)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per process, after one warm-up step")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (peer, ours, peer, ours, ...)")
    p.add_argument("--precision", choices=PRECISIONS + ("both",), default="both",
                   help="our CNN's compute precision; 'both' times float32 and mixed_bfloat16 in every round")
    p.add_argument("--peer-python", default=None, help="Python that can import torch (default: /work/torchvenv "
                   "or this Python, whichever imports torch)")
    p.add_argument("--peer-script", default=str(DEFAULT_PEER), help="path of torch_peer.py")
    p.add_argument("--no-peer", action="store_true", help="time only our model")
    p.add_argument("--intra", type=int, default=0, help="TF intra-op threads (0: TF default = cores)")
    p.add_argument("--inter", type=int, default=0, help="TF inter-op threads (0: TF default)")
    p.add_argument("--peer-threads", type=int, default=0, help="OMP_NUM_THREADS for the peer (0: torch default)")
    p.add_argument("--profile", action="store_true",
                   help="also time forward, forward+backward and the audio encoder alone in our process")
    p.add_argument("--child", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return

    precisions = PRECISIONS if args.precision == "both" else (args.precision,)
    peer_python = None if args.no_peer else _find_peer_python(args.peer_python)
    peer_script = Path(args.peer_script)
    if peer_python and not peer_script.exists():
        raise SystemExit(f"--peer-script: {peer_script} does not exist")
    print(f"batch {args.batch}, {args.steps} timed steps per process, {args.rounds} rounds; "
          f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.1f}", flush=True)
    peer_rates, ours = [], {pr: [] for pr in precisions}
    for r in range(args.rounds):
        line = [f"round {r + 1}:"]
        if peer_python:
            peer_rates.append(_run_peer(peer_python, peer_script, args.batch, args.steps, args.peer_threads))
            line.append(f"peer {peer_rates[-1]:.2f}")
        for pr in precisions:
            res = _run_ours(pr, args)
            ours[pr].append(res)
            line.append(f"{pr} {res['examples_per_s']:.2f}")
            if args.profile:
                line.append("(fwd {forward_s:.2f}s, fwd+bwd {forward_backward_s:.2f}s, audio fwd+bwd "
                            "{audio_forward_backward_s:.2f}s, step {step_s:.2f}s)".format(**res))
        line.append(f"ex/s, load {os.getloadavg()[0]:.1f}")
        print(" ".join(line), flush=True)

    print("median examples/s:")
    if peer_rates:
        print(f"  peer (torch)      {statistics.median(peer_rates):8.2f}")
    for pr in precisions:
        rates = [x["examples_per_s"] for x in ours[pr]]
        line = f"  cmir_tf {pr:<15} {statistics.median(rates):8.2f}"
        if peer_rates:
            ratios = [x / y for x, y in zip(rates, peer_rates)]
            line += f"   ratio vs peer: median {statistics.median(ratios):.2f} (rounds: " + \
                    ", ".join(f"{x:.2f}" for x in ratios) + ")"
        print(line)
    print(f"load average after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: figures taken while other "
          "processes share the CPU are lower and noisier; the ratio of interleaved runs is the robust figure")


if __name__ == "__main__":
    main()
