"""Training speed of the full contr_cf_g model vs the PyTorch peer, side by side, on this machine.

    python benchmarks/train_step.py --peer-python /tmp/torch/bin/python   # batch 128, 3 interleaved rounds
    CMIR_PEER_PYTHON=/tmp/torch/bin/python python benchmarks/train_step.py --rounds 5 --steps 3
    python benchmarks/train_step.py --rounds 1 --steps 1 --batch 16      # smoke run; no peer unless given
    python benchmarks/train_step.py --profile            # forward / forward+backward / step split
    python benchmarks/train_step.py --precision mixed_float16 --jit-compile on   # on a GPU: one line to report

Each of our precisions is timed against the peer a PyTorch user would run for it
(``benchmarks/peers/torch_peer.py train``):

    float32          vs  the peer's default  AND  the peer with ``--tuned`` (channels_last convolutions)
    mixed_bfloat16   vs  the peer with ``--tuned --bf16`` (channels_last + bfloat16 autocast)

Each round runs, one after the other in fresh processes, every peer variant and our model in each
requested precision, each of ours right after its own peers (with ``--precision both``: peer,
peer --tuned, float32, peer --tuned --bf16, mixed_bfloat16), so that load from other processes on a
shared machine hits both sides alike. Right after each contr_cf_g process, the same precision's
``hybrid`` preset (``cmir_tf.model.presets``: playlist audio pairs + A2G/A2P/G2P over all their songs,
mixup α=7) runs on a batch of the same number of rows — ``--batch`` rows = ``--batch``/2 pairs, the
audio term's (2M × 2M) similarities on top of contr_cf_g's work — and its examples/s (rows per second)
is printed beside contr_cf_g's, with the median per-round ratio hybrid / contr_cf_g (``--no-hybrid``
skips it). Each process does one untimed warm-up step (tracing, allocation)
and then ``--steps`` timed steps on a fixed random batch like the peer's (mel (B,256,48), genres,
CF vector; forward + backward + Adam). Printed: every round's examples/s, the medians, and for each
pairing the median of the per-round ratios ours/peer (the contention-robust figure). ``float32`` is
the paper's numerics; ``mixed_bfloat16`` runs only the audio CNN blocks in bfloat16 (losses and
embeddings stay float32), which pays off on CPUs with AVX512_BF16 / AMX.

On a GPU (any device TensorFlow sees; the step runs on the first GPU, else the CPU) the usual call is
``--precision mixed_float16 --jit-compile on`` (V100, T4) or ``--precision mixed_bfloat16 --jit-compile on``
(A100, H100): each prints the device, its examples/s and, with ``--rounds 3``, their median; the peer,
a CPU-only script, is skipped for ``mixed_float16``. ``--jit-compile`` is the training flag's: ``auto``
(default) compiles each replica's step with XLA on GPUs and for float16 on CPU, where TensorFlow's
float16 convolution gradients have no fast kernel. The warm-up step (untimed) includes XLA's compilation;
under float16 the first steps may be skipped by the loss scaling (an overflow skips the update, not the
forward and backward passes, so the rate hardly moves).

The peer needs torch, which is not a dependency of this package. ``--peer-python`` (or the environment
variable ``CMIR_PEER_PYTHON``) names a Python that can import it; when neither is given, or that Python
cannot import torch, the peer is skipped with a printed note and only our figures are printed.
``--peer-script`` defaults to the vendored ``benchmarks/peers/torch_peer.py``.
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
DEFAULT_PEER = Path(__file__).resolve().parent / "peers" / "torch_peer.py"
PEER_PYTHON_ENV = "CMIR_PEER_PYTHON"
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
BOTH = ("float32", "mixed_bfloat16")  # --precision both: the CPU pair
JIT_COMPILE = ("auto", "on", "off")
# The peer's command-line flags of each variant, and the variants each of our precisions is compared with
# (the peer runs on CPU only; it has no float16 variant).
PEER_VARIANTS = {"default": (), "tuned": ("--tuned",), "tuned_bf16": ("--tuned", "--bf16")}
PEERS_OF = {"float32": ("default", "tuned"), "mixed_float16": (), "mixed_bfloat16": ("tuned_bf16",)}


def peer_label(variant: str) -> str:
    flags = PEER_VARIANTS[variant]
    return "peer " + (" ".join(flags) if flags else "default")


def _random_batch(b: int, vocab: int):
    """A fixed random batch like the peer's (mel (B,256,48), genres + mask, CF vector) and a word2vec table."""
    import numpy as np
    import tensorflow as tf

    from cmir_tf import constants as C

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
    return data, rng.normal(size=(vocab, C.W2V_DIM)).astype("float32")


def _device_name() -> str:
    """The device the step runs on: the first GPU's model name, else the CPU and its cores."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU ({os.cpu_count()} cores)"


def _child(args) -> None:
    """Run in a fresh process: time our training step (and optionally its parts); print one JSON line."""
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    sys.path.insert(0, str(REPO))
    from cmir_tf.model.contrastive import build_model

    b = args.batch
    data, w2v = _random_batch(b, vocab=200)
    cnn_dtype = None if args.child == "float32" else args.child
    # hybrid: rows [:b/2] paired with [b/2:]
    model = build_model(args.child_preset, w2v, cnn_dtype=cnn_dtype, jit_compile=args.jit_compile)

    def timed(fn):
        fn()  # warm-up: tracing and first allocation
        start = time.perf_counter()
        for _ in range(args.steps):
            out = fn()
        float(tf.reduce_sum(tf.cast(tf.nest.flatten(out)[0], tf.float32)))
        return (time.perf_counter() - start) / args.steps

    result = {"precision": args.child, "preset": args.child_preset, "batch": b, "steps": args.steps,
              "device": _device_name(), "xla": bool(model.jit_replica_step)}
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


def find_peer_python(explicit: str | None) -> tuple[str | None, str]:
    """The peer's Python (``--peer-python``, else ``$CMIR_PEER_PYTHON``) if it can import torch.

    Returns ``(python, note)``: ``python`` is None when there is none or it cannot import torch, and
    ``note`` then says why (printed by the caller); otherwise ``note`` names the torch version.
    """
    python = explicit or os.environ.get(PEER_PYTHON_ENV) or None
    if not python:
        return None, (f"PyTorch peer skipped: no --peer-python given and ${PEER_PYTHON_ENV} is not set "
                      "(a Python that can import torch; torch is not a dependency of cmir_tf)")
    try:
        out = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"PyTorch peer skipped: cannot run {python} ({e})"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no error message"])[-1]
        return None, f"PyTorch peer skipped: {python} cannot import torch ({last})"
    return python, f"PyTorch peer: {python} (torch {out.stdout.strip()})"


def run_peer(python: str, peer: Path, variant: str, batch: int, steps: int, threads: int | None) -> float:
    """One peer process (``torch_peer.py train`` with the variant's flags) → its examples/s."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [python, str(peer), "train", "--batch", str(batch), "--steps", str(steps), *PEER_VARIANTS[variant]]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    m = re.search(r"examples_per_s=([0-9.]+)", out.stdout)
    if out.returncode != 0 or not m:
        raise SystemExit(f"peer failed ({' '.join(cmd)}):\n{out.stdout}\n{out.stderr[-2000:]}")
    return float(m.group(1))


def run_ours(precision: str, batch: int, steps: int, *, intra: int = 0, inter: int = 0,
             profile: bool = False, jit_compile: str = "auto", preset: str = "contr_cf_g") -> dict:
    """Time our training step of ``preset`` (contr_cf_g or hybrid) in a fresh process → the child's JSON.

    Keys: ``precision, preset, batch, steps, device, xla, step_s, examples_per_s`` (and the ``*_s`` parts
    with ``profile``). Also used by benchmarks/pipeline.py to measure the training rate its pipeline must
    keep up with.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", precision, "--batch", str(batch),
           "--steps", str(steps), "--jit-compile", jit_compile, "--child-preset", preset]
    if intra:
        cmd += ["--intra", str(intra)]
    if inter:
        cmd += ["--inter", str(inter)]
    if profile:
        cmd.append("--profile")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"our benchmark child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio_line(name: str, ours: list[float], peer: list[float]) -> str:
    ratios = [x / y for x, y in zip(ours, peer)]
    return (f"  {name:<46} {statistics.median(ratios):6.2f}   (rounds: "
            + ", ".join(f"{x:.2f}" for x in ratios) + ")")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="global batch size (paper: 128)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per process, after one warm-up step")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (peers, ours, peers, ours, ...)")
    p.add_argument("--precision", choices=PRECISIONS + ("both",), default="both",
                   help="our CNN's compute precision (as train's --precision); 'both' times float32 and "
                        "mixed_bfloat16 in every round (float32 against the default and the --tuned peer, "
                        "mixed_bfloat16 against --tuned --bf16); mixed_float16 is for GPUs (no peer)")
    p.add_argument("--jit-compile", choices=JIT_COMPILE, default="auto",
                   help="XLA for each step, as train's --jit-compile: auto = on for GPUs and for float16 on CPU")
    p.add_argument("--peer-python", default=None,
                   help=f"a Python that can import torch, to run the peer (default: ${PEER_PYTHON_ENV}; "
                        "neither given, or no torch there: the peer is skipped with a note)")
    p.add_argument("--peer-script", default=str(DEFAULT_PEER),
                   help="the PyTorch peer (default: the vendored benchmarks/peers/torch_peer.py)")
    p.add_argument("--no-peer", action="store_true", help="time only our model, even if a peer Python is set")
    p.add_argument("--intra", type=int, default=0, help="TF intra-op threads (0: TF default = cores)")
    p.add_argument("--inter", type=int, default=0, help="TF inter-op threads (0: TF default)")
    p.add_argument("--peer-threads", type=int, default=0, help="OMP_NUM_THREADS for the peer (0: torch default)")
    p.add_argument("--profile", action="store_true",
                   help="also time forward, forward+backward and the audio encoder alone in our process")
    p.add_argument("--no-hybrid", dest="hybrid", action="store_false",
                   help="do not time the hybrid preset beside contr_cf_g")
    p.add_argument("--child", choices=PRECISIONS, help=argparse.SUPPRESS)
    p.add_argument("--child-preset", choices=("contr_cf_g", "hybrid"), default="contr_cf_g", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return
    for name in ("batch", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be ≥ 1")
    if args.hybrid and args.batch % 2:
        p.error("--batch must be even to time the hybrid preset (two rows a pair), or give --no-hybrid")

    precisions = BOTH if args.precision == "both" else (args.precision,)
    peer_script = Path(args.peer_script)
    if args.no_peer:
        peer_python, note = None, "PyTorch peer skipped (--no-peer)"
    else:
        peer_python, note = find_peer_python(args.peer_python)
        if peer_python and not peer_script.is_file():
            raise SystemExit(f"--peer-script: {peer_script} is not a file")
    print(note, flush=True)
    variants = [v for pr in precisions for v in PEERS_OF[pr]] if peer_python else []
    print(f"batch {args.batch}, {args.steps} timed steps per process, {args.rounds} rounds; "
          f"cores {os.cpu_count()}, load average before {os.getloadavg()[0]:.1f}", flush=True)
    peer_rates = {v: [] for v in variants}
    ours = {pr: [] for pr in precisions}
    hybrid = {pr: [] for pr in precisions}
    for r in range(args.rounds):
        line = []
        for pr in precisions:
            for v in (PEERS_OF[pr] if peer_python else ()):
                peer_rates[v].append(run_peer(peer_python, peer_script, v, args.batch, args.steps,
                                              args.peer_threads))
                line.append(f"{peer_label(v)} {peer_rates[v][-1]:.2f}")
            res = run_ours(pr, args.batch, args.steps, intra=args.intra, inter=args.inter, profile=args.profile,
                           jit_compile=args.jit_compile)
            ours[pr].append(res)
            item = f"{pr}{' XLA' if res['xla'] else ''} on {res['device']}: {res['examples_per_s']:.2f}"
            if args.profile:
                item += (" (fwd {forward_s:.2f}s, fwd+bwd {forward_backward_s:.2f}s, audio fwd+bwd "
                         "{audio_forward_backward_s:.2f}s, step {step_s:.2f}s)".format(**res))
            line.append(item)
            if args.hybrid:
                hybrid[pr].append(run_ours(pr, args.batch, args.steps, intra=args.intra, inter=args.inter,
                                           jit_compile=args.jit_compile, preset="hybrid")["examples_per_s"])
                line.append(f"hybrid {pr} {hybrid[pr][-1]:.2f}")
        print(f"round {r + 1}: " + " | ".join(line) + f" ex/s, load {os.getloadavg()[0]:.1f}", flush=True)

    print("median examples/s:")
    for v in variants:
        print(f"  {peer_label(v) + ' (torch)':<32} {statistics.median(peer_rates[v]):8.2f}")
    for pr in precisions:
        rates = [x["examples_per_s"] for x in ours[pr]]
        print(f"  {'cmir_tf ' + pr:<32} {statistics.median(rates):8.2f}")
        if args.hybrid:
            print(f"  {'cmir_tf hybrid ' + pr:<32} {statistics.median(hybrid[pr]):8.2f}   (rows/s; "
                  f"{args.batch // 2} pairs a step)")
    if args.hybrid:
        print("hybrid / contr_cf_g, rows per second, median of the per-round ratios (1 = the same cost a row):")
        for pr in precisions:
            print(_ratio_line(f"cmir_tf hybrid {pr} / contr_cf_g {pr}", hybrid[pr],
                              [x["examples_per_s"] for x in ours[pr]]))
    if variants:
        print("ours / peer, median of the per-round ratios:")
        for pr in precisions:
            rates = [x["examples_per_s"] for x in ours[pr]]
            for v in PEERS_OF[pr]:
                print(_ratio_line(f"cmir_tf {pr} / {peer_label(v)}", rates, peer_rates[v]))
    print(f"load average after {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: figures taken while other "
          "processes share the CPU are lower and noisier; the ratio of interleaved runs is the robust figure")


if __name__ == "__main__":
    main()
