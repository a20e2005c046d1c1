"""End-to-end embedding throughput: files → patch embeddings, in patches per second.

Three engines on the same machine, interleaved round by round (the median of the rounds is reported,
so a burst of load from other processes hits every engine alike):

  cmir_tf    this export's SavedModel through `cmir_tf.embed.Embedder.embed_files` (reads the files,
             cuts patches, batches them across files, runs `serving_default`) — in a child process, so
             thread / oneDNN / grappler settings take effect from the start;
  essentia   Essentia's TensorflowPredict2D running the SAME frozen graph (<name>.pb) on the same files'
             mels (np.load, transpose, TensorflowPredict2D per file, patch size and hop 256), in a child;
  torch      shared/peers/torch_peer.py `infer` (the PyTorch peer: model only, random patches in memory),
             run with a Python that has torch (--torch-python, default /work/torchvenv/bin/python).

Inputs are Melon-style mel files (48 × 1876 frames = 30 s, 7 patches each) written to a temporary
folder; with --audio the cmir_tf engine also gets 30 s 16 kHz wav files of the same count (decoding +
mel front end included), reported as a separate row. The model is a freshly built audio encoder
(speed does not depend on the weights) unless --model points to an export folder.

    python benchmarks/embed.py                       # defaults: 48 files (336 patches), 3 rounds
    python benchmarks/embed.py --files 96 --rounds 5 --batch-size 64 --intra 2 --inter 1 --audio

Prints one line per engine and round, then a summary table with medians and the ratio to Essentia.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_TORCH_PYTHON = "/work/torchvenv/bin/python"
DEFAULT_PEER = os.path.join(os.path.dirname(ROOT), "shared", "peers", "torch_peer.py")
MEL_FRAMES = 1876
PATCHES_PER_FILE = MEL_FRAMES // 256  # 7


# ------------------------------------------------------------------------------------ children
def _child_prepare(args):
    """Write the export (or reuse --model), the mel files and optional wav files into WORK."""
    import numpy as np
    import tensorflow as tf

    from cmir_tf import export as E
    from cmir_tf.encoders import AudioEncoder

    work = args.work
    if args.model:
        export_dir = args.model
    else:
        enc = AudioEncoder()
        enc(tf.zeros([1, 256, 48]))
        export_dir = os.path.join(work, "export")
        E.export_model(enc, None, [], export_dir, name="bench")
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(work, "mels"), exist_ok=True)
    for i in range(args.files):
        np.save(os.path.join(work, "mels", f"{i}.npy"),
                rng.normal(-40, 15, size=(48, MEL_FRAMES)).astype("float32"), allow_pickle=False)
    if args.audio:
        import wave

        os.makedirs(os.path.join(work, "wavs"), exist_ok=True)
        t = np.arange(30 * 16000) / 16000
        for i in range(args.files):
            x = 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t) + 0.05 * rng.normal(size=t.size)
            with wave.open(os.path.join(work, "wavs", f"{i}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    graphs = [f for f in os.listdir(export_dir) if f.endswith(".pb")]
    meta = json.load(open(os.path.join(export_dir, graphs[0][:-3] + ".json")))
    print(json.dumps({"export": export_dir, "graph": os.path.join(export_dir, graphs[0]),
                      "input": meta["schema"]["inputs"][0]["name"],
                      "output": [o["name"] for o in meta["schema"]["outputs"] if o["output_purpose"] == "embeddings"][0]}))


def _child_cmir(args):
    """Time Embedder.embed_files over the files (after an untimed warm-up pass)."""
    import tensorflow as tf

    if args.intra:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    if args.bf16:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    from cmir_tf.embed import Embedder

    files = sorted((os.path.join(args.inputs, f) for f in os.listdir(args.inputs)),
                   key=lambda p: int(os.path.basename(p).split(".")[0]))
    emb = Embedder(args.export, batch_size=args.batch_size)
    for _ in emb.embed_files(files, workers=args.workers):  # warm-up pass: tracing, oneDNN primitives per shape
        pass
    t0 = time.perf_counter()
    n = 0
    for _, patches, _, err in emb.embed_files(files, workers=args.workers):
        if err is not None:
            raise err
        n += len(patches)
    dt = time.perf_counter() - t0
    print(json.dumps({"patches": n, "seconds": dt}))


def _child_essentia(args):
    """Time TensorflowPredict2D on each file's mel (np.load + transpose included), after a warm-up pass."""
    import numpy as np
    import essentia
    import essentia.standard as es

    essentia.log.infoActive = False
    files = sorted((os.path.join(args.inputs, f) for f in os.listdir(args.inputs)),
                   key=lambda p: int(os.path.basename(p).split(".")[0]))
    model = es.TensorflowPredict2D(graphFilename=args.graph, input=args.input, output=args.output,
                                   patchSize=256, patchHopSize=256, batchSize=args.batch_size)
    for f in files:  # warm-up pass, as for cmir_tf
        model(np.ascontiguousarray(np.load(f, allow_pickle=False).T))
    t0 = time.perf_counter()
    n = 0
    for f in files:
        out = model(np.ascontiguousarray(np.load(f, allow_pickle=False).T))
        n += out.shape[0]
    dt = time.perf_counter() - t0
    print(json.dumps({"patches": n, "seconds": dt}))


# -------------------------------------------------------------------------------- orchestration
def _run(cmd, env=None, timeout=3600):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {})))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--files", type=int, default=48, help="number of 30 s mel files (7 patches each) [48]")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per engine; medians reported [3]")
    p.add_argument("--batch-size", type=int, default=64, help="patches per model call, cmir_tf and Essentia [64]")
    p.add_argument("--intra", type=int, default=0, help="TF intra-op threads for cmir_tf (0 = TF's default)")
    p.add_argument("--inter", type=int, default=0, help="TF inter-op threads for cmir_tf (0 = TF's default)")
    p.add_argument("--workers", type=int, default=2, help="file-reading threads of Embedder.embed_files [2]")
    p.add_argument("--onednn", choices=["default", "on", "off"], default="default",
                   help="TF_ENABLE_ONEDNN_OPTS for cmir_tf (default: leave TF's default, on for x86)")
    p.add_argument("--bf16", action="store_true",
                   help="also run cmir_tf with grappler's oneDNN bfloat16 auto-mixed precision (extra row)")
    p.add_argument("--audio", action="store_true", help="also time cmir_tf on 30 s wav files (decode + mel)")
    p.add_argument("--model", help="an export folder to use instead of a freshly built encoder")
    p.add_argument("--no-essentia", action="store_true", help="skip the Essentia engine")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--peer-python", "--torch-python", dest="torch_python", default=DEFAULT_TORCH_PYTHON, help=f"Python with torch [{DEFAULT_TORCH_PYTHON}]")
    p.add_argument("--peer", default=DEFAULT_PEER, help="path of torch_peer.py")
    p.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    # child modes (internal)
    p.add_argument("--child", choices=["prepare", "cmir", "essentia"], help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--export", help=argparse.SUPPRESS)
    p.add_argument("--graph", help=argparse.SUPPRESS)
    p.add_argument("--input", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child == "prepare":
        return _child_prepare(args)
    if args.child == "cmir":
        return _child_cmir(args)
    if args.child == "essentia":
        return _child_essentia(args)

    tmp = None
    if not args.work:
        tmp = tempfile.TemporaryDirectory(prefix="cmir-bench-")
        args.work = tmp.name
    me = [sys.executable, os.path.abspath(__file__)]
    info = json.loads(_run(me + ["--child", "prepare", "--work", args.work, "--files", str(args.files)]
                           + (["--audio"] if args.audio else []) + (["--model", args.model] if args.model else [])))
    cmir_env = {} if args.onednn == "default" else {"TF_ENABLE_ONEDNN_OPTS": "1" if args.onednn == "on" else "0"}
    common = ["--batch-size", str(args.batch_size), "--intra", str(args.intra), "--inter", str(args.inter),
              "--workers", str(args.workers), "--export", info["export"]]
    engines = {"cmir_tf (mel .npy files)": (me + ["--child", "cmir", "--inputs", os.path.join(args.work, "mels")]
                                            + common, cmir_env)}
    if args.bf16:
        engines["cmir_tf bf16 (mel .npy files)"] = (engines["cmir_tf (mel .npy files)"][0] + ["--bf16"], cmir_env)
    if args.audio:
        engines["cmir_tf (30 s wav files)"] = (me + ["--child", "cmir", "--inputs", os.path.join(args.work, "wavs")]
                                               + common, cmir_env)
    if not args.no_essentia:
        engines["essentia TensorflowPredict2D (same .pb)"] = (
            me + ["--child", "essentia", "--inputs", os.path.join(args.work, "mels"), "--graph", info["graph"],
                  "--input", info["input"], "--output", info["output"], "--batch-size", str(args.batch_size)], {})
    if not args.no_torch:
        if os.path.exists(args.torch_python):
            engines["torch peer infer (model only)"] = (
                [args.torch_python, args.peer, "infer", "--patches", str(args.files * PATCHES_PER_FILE),
                 "--batch", str(args.batch_size)], {})
        else:
            print(f"(torch peer skipped: {args.torch_python} not found)", file=sys.stderr)

    rates = {k: [] for k in engines}
    for r in range(args.rounds):
        for name, (cmd, env) in engines.items():
            line = _run(cmd, env)
            if line.startswith("peer"):
                rate = float(line.rsplit("patches_per_s=", 1)[1])
            else:
                res = json.loads(line)
                rate = res["patches"] / res["seconds"]
            rates[name].append(rate)
            print(f"round {r + 1} {name}: {rate:.1f} patches/s", flush=True)

    ess = [v for k, v in rates.items() if k.startswith("essentia")]
    ess_median = statistics.median(ess[0]) if ess else None
    print(f"\n{args.files} files × {PATCHES_PER_FILE} patches, batch {args.batch_size}, intra {args.intra or 'default'}, "
          f"inter {args.inter or 'default'}, oneDNN {args.onednn}, {args.rounds} rounds, {os.cpu_count()} CPUs")
    print(f"{'engine':42s} {'median patches/s':>17s} {'min':>8s} {'max':>8s} {'vs essentia':>12s}")
    for name, v in rates.items():
        ratio = f"{statistics.median(v) / ess_median:.2f}x" if ess_median else "-"
        print(f"{name:42s} {statistics.median(v):17.1f} {min(v):8.1f} {max(v):8.1f} {ratio:>12s}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
