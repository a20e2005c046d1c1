"""End-to-end embedding throughput: files → patch embeddings, in patches per second.

Engines on the same machine, interleaved round by round (the median of the rounds is reported, so a
burst of load from other processes hits every engine alike):

  cmir_tf    this export's SavedModel through `cmir_tf.embed.Embedder.embed_files` (reads the files,
             cuts patches, batches them across files, runs `serving_default`) — in a child process, so
             thread / oneDNN / grappler settings take effect from the start. Two rows by default:
             Melon-style mel .npy files (model only, in effect), and COMPRESSED audio files — ogg Vorbis
             and mp3 at 44.1 and 48 kHz, stereo, music-like, written by this script with soundfile —
             decoded, resampled to 16 kHz and turned into mels on the way (cmir_tf.audio.decoding, frontend);
  essentia   Essentia's TensorflowPredict2D running the SAME frozen graph (<name>.pb) on the same files'
             mels (np.load, transpose, TensorflowPredict2D per file, patch size and hop 256), in a child;
  torch      the PyTorch peer's `infer` (torch_peer.py, model only, random patches in memory), run by the
             Python given with --peer-python; skipped, with a note, when none is given or it cannot
             import torch.

The mel inputs are 48 × 1876-frame files (30 s, 7 patches each). The compressed set cycles ogg/mp3 ×
44.1/48 kHz over --compressed-seconds (default 45 and 300 s: 8 files, 332 patches ≈ the 336 of the
default mel set); its rate is printed beside the mel-only rate of the same round, as a ratio. With
--audio there is also a row of 30 s 16 kHz wav files. --stages times each stage of the compressed
path (decode, resample, mel, model) in one thread and prints its cost per patch, which bounds the
ratio: the model already uses both cores, so every other stage takes CPU away from it. The model is
a freshly built audio encoder (speed does not depend on the weights) unless --model points to an
export folder.

    python benchmarks/embed.py                       # defaults: 48 mel files + 8 compressed, 3 rounds
    python benchmarks/embed.py --rounds 5 --stages --peer-python /path/to/venv-with-torch/bin/python
    python benchmarks/embed.py --files 96 --batch-size 64 --intra 2 --inter 1 --audio --no-compressed

Prints one line per engine and round, then a summary table with medians, the ratio to Essentia and
the ratio of the compressed row to the mel-only row.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from signals import music  # the benchmarks' music-like signal (benchmarks/signals.py)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_PEER = os.path.join(ROOT, "benchmarks", "peers", "torch_peer.py")  # vendored
MEL_FRAMES = 1876
PATCHES_PER_FILE = MEL_FRAMES // 256  # 7
COMPRESSED_KINDS = (("ogg", 44100), ("ogg", 48000), ("mp3", 44100), ("mp3", 48000))
MEL_ONLY = "cmir_tf (mel .npy files)"
COMPRESSED = "cmir_tf (compressed ogg/mp3 files)"


def _write_compressed(folder, seconds_list):
    """ogg Vorbis / mp3 × 44.1 / 48 kHz over SECONDS_LIST, in blocks (libvorbis's encoder overflows its
    stack on one long write: libsndfile issue #1095)."""
    import soundfile as sf

    os.makedirs(folder, exist_ok=True)
    i = 0
    for seconds in seconds_list:
        for ext, rate in COMPRESSED_KINDS:
            x = music(seconds, rate, seed=i)
            fmt, subtype = ("OGG", "VORBIS") if ext == "ogg" else ("MP3", "MPEG_LAYER_III")
            with sf.SoundFile(os.path.join(folder, f"{i}.{ext}"), "w", rate, 2, format=fmt, subtype=subtype) as f:
                for j in range(0, len(x), 65536):
                    f.write(x[j:j + 65536])
            i += 1


# ------------------------------------------------------------------------------------ children
def _child_prepare(args):
    """Write the export (or reuse --model), the mel files and optional wav files into WORK."""
    import numpy as np
    import tensorflow as tf

    from cmir_tf import export as E
    from cmir_tf.model.encoders import AudioEncoder

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
    if args.compressed_seconds:
        _write_compressed(os.path.join(work, "compressed"), args.compressed_seconds)
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
    import resource

    emb = Embedder(args.export, batch_size=args.batch_size)
    for _ in emb.embed_files(files, workers=args.workers):  # warm-up pass: tracing, oneDNN primitives per shape
        pass
    usage = resource.getrusage(resource.RUSAGE_SELF)
    t0, c0 = time.perf_counter(), usage.ru_utime + usage.ru_stime
    n = 0
    for _, patches, _, err in emb.embed_files(files, workers=args.workers):
        if err is not None:
            raise err
        n += len(patches)
    dt = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"patches": n, "seconds": dt, "cpu_seconds": usage.ru_utime + usage.ru_stime - c0}))


def _child_stages(args):
    """Per-stage cost of the compressed path, one file at a time in this thread: wall time and CPU time
    (all threads of the process: the model's intra-op pool) per patch, after a warm-up file."""
    import resource

    import tensorflow as tf

    from cmir_tf.audio import decoding as audio
    from cmir_tf.embed import Embedder, mel_patches

    files = sorted((os.path.join(args.inputs, f) for f in os.listdir(args.inputs)),
                   key=lambda p: int(os.path.basename(p).split(".")[0]))
    emb = Embedder(args.export, batch_size=args.batch_size)

    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    stages = ("decode", "resample", "mel", "model")
    wall, core, patches = dict.fromkeys(stages, 0.0), dict.fromkeys(stages, 0.0), 0
    for k, path in enumerate([files[0]] + files):  # the first pass is a warm-up
        out = {}
        for stage in stages:
            t0, c0 = time.perf_counter(), cpu()
            if stage == "decode":
                out["x"], out["rate"] = audio.decode(path)
            elif stage == "resample":
                out["y"] = audio.resample(out["x"], out["rate"])
            elif stage == "mel":
                out["p"] = mel_patches(emb.mel(out["y"]))
            else:
                emb.embed_patches(out["p"])
            if k:
                wall[stage] += time.perf_counter() - t0
                core[stage] += cpu() - c0
        patches += len(out["p"]) if k else 0
    print(json.dumps({"patches": patches, "wall": wall, "cpu": core,
                      "intra": tf.config.threading.get_intra_op_parallelism_threads()}))


def _child_essentia(args):
    """Time TensorflowPredict2D on each file's mel (np.load + transpose included), after a warm-up pass."""
    import essentia
    import essentia.standard as es
    import numpy as np

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
    p.add_argument("--compressed-seconds", type=float, nargs="*", default=[45, 300], metavar="S",
                   help="durations of the compressed set, each as ogg/mp3 × 44.1/48 kHz [45 300]")
    p.add_argument("--no-compressed", action="store_true", help="skip the compressed-audio row")
    p.add_argument("--stages", action="store_true", help="also print the per-stage cost of the compressed path")
    p.add_argument("--model", help="an export folder to use instead of a freshly built encoder")
    p.add_argument("--no-essentia", action="store_true", help="skip the Essentia engine")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    p.add_argument("--peer-python", "--torch-python", dest="torch_python", default=None, metavar="PYTHON",
                   help="a Python that can import torch, to run the PyTorch peer (default: the peer is skipped)")
    p.add_argument("--peer", default=DEFAULT_PEER, help="path of torch_peer.py [%(default)s]")
    p.add_argument("--work", help="working folder (default: a temporary one, removed at the end)")
    # child modes (internal)
    p.add_argument("--child", choices=["prepare", "cmir", "essentia", "stages"], help=argparse.SUPPRESS)
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
    if args.child == "stages":
        return _child_stages(args)
    if args.no_compressed:
        args.compressed_seconds = []

    tmp = None
    if not args.work:
        tmp = tempfile.TemporaryDirectory(prefix="cmir-bench-")
        args.work = tmp.name
    me = [sys.executable, os.path.abspath(__file__)]
    info = json.loads(_run(me + ["--child", "prepare", "--work", args.work, "--files", str(args.files)]
                           + (["--audio"] if args.audio else []) + (["--model", args.model] if args.model else [])
                           + ["--compressed-seconds"] + [str(s) for s in args.compressed_seconds]))
    cmir_env = {} if args.onednn == "default" else {"TF_ENABLE_ONEDNN_OPTS": "1" if args.onednn == "on" else "0"}
    common = ["--batch-size", str(args.batch_size), "--intra", str(args.intra), "--inter", str(args.inter),
              "--workers", str(args.workers), "--export", info["export"]]
    engines = {MEL_ONLY: (me + ["--child", "cmir", "--inputs", os.path.join(args.work, "mels")] + common, cmir_env)}
    if args.compressed_seconds:
        engines[COMPRESSED] = (me + ["--child", "cmir", "--inputs", os.path.join(args.work, "compressed")]
                               + common, cmir_env)
    if args.bf16:
        engines["cmir_tf bf16 (mel .npy files)"] = (engines[MEL_ONLY][0] + ["--bf16"], cmir_env)
    if args.audio:
        engines["cmir_tf (30 s wav files)"] = (me + ["--child", "cmir", "--inputs", os.path.join(args.work, "wavs")]
                                               + common, cmir_env)
    if not args.no_essentia:
        engines["essentia TensorflowPredict2D (same .pb)"] = (
            me + ["--child", "essentia", "--inputs", os.path.join(args.work, "mels"), "--graph", info["graph"],
                  "--input", info["input"], "--output", info["output"], "--batch-size", str(args.batch_size)], {})
    if not args.no_torch:
        why = _peer_unusable(args.torch_python, args.peer)
        if why:
            print(f"(torch peer skipped: {why})", file=sys.stderr)
        else:
            engines["torch peer infer (model only)"] = (
                [args.torch_python, args.peer, "infer", "--patches", str(args.files * PATCHES_PER_FILE),
                 "--batch", str(args.batch_size)], {})

    rates = {k: [] for k in engines}
    cpu_ms = {k: [] for k in engines}  # CPU time (all threads) per patch: insensitive to other load
    for r in range(args.rounds):
        for name, (cmd, env) in engines.items():
            line = _run(cmd, env)
            if line.startswith("peer"):
                rate = float(line.rsplit("patches_per_s=", 1)[1])
            else:
                res = json.loads(line)
                rate = res["patches"] / res["seconds"]
                if "cpu_seconds" in res:
                    cpu_ms[name].append(1000 * res["cpu_seconds"] / res["patches"])
            rates[name].append(rate)
            extra = f", {cpu_ms[name][-1]:.2f} CPU ms/patch" if cpu_ms[name] and len(cpu_ms[name]) == r + 1 else ""
            print(f"round {r + 1} {name}: {rate:.1f} patches/s{extra} (load {os.getloadavg()[0]:.1f})", flush=True)

    ess = [v for k, v in rates.items() if k.startswith("essentia")]
    ess_median = statistics.median(ess[0]) if ess else None
    print(f"\n{args.files} files × {PATCHES_PER_FILE} patches, batch {args.batch_size}, intra {args.intra or 'default'}, "
          f"inter {args.inter or 'default'}, workers {args.workers}, oneDNN {args.onednn}, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs")
    print(f"{'engine':42s} {'median patches/s':>17s} {'min':>8s} {'max':>8s} {'vs essentia':>12s} {'CPU ms/patch':>13s}")
    for name, v in rates.items():
        ratio = f"{statistics.median(v) / ess_median:.2f}x" if ess_median else "-"
        cpu = f"{statistics.median(cpu_ms[name]):13.2f}" if cpu_ms[name] else f"{'-':>13s}"
        print(f"{name:42s} {statistics.median(v):17.1f} {min(v):8.1f} {max(v):8.1f} {ratio:>12s} {cpu}")
    if COMPRESSED in rates:
        per_round = [c / m for c, m in zip(rates[COMPRESSED], rates[MEL_ONLY])]
        cpu_ratio = statistics.median(cpu_ms[MEL_ONLY]) / statistics.median(cpu_ms[COMPRESSED])
        print(f"\ncompressed / mel-only, same rounds: median {statistics.median(per_round):.2f} "
              f"(per round: {' '.join(f'{r:.2f}' for r in per_round)}); "
              f"{len(os.listdir(os.path.join(args.work, 'compressed')))} files of "
              f"{'/'.join(f'{s:g}' for s in args.compressed_seconds)} s, ogg/mp3 × 44.1/48 kHz stereo")
        print(f"CPU cost per patch, mel-only / compressed: {cpu_ratio:.2f} — the ratio of rates when both keep "
              f"every core busy (on a loaded machine the wall-clock ratio drifts: a process with more runnable "
              f"threads gets a larger share of contended cores)")
    if args.stages and args.compressed_seconds:
        _print_stages(json.loads(_run(me + ["--child", "stages", "--inputs", os.path.join(args.work, "compressed"),
                                            "--export", info["export"], "--batch-size", str(args.batch_size)],
                                      cmir_env)))
    if tmp:
        tmp.cleanup()
    return 0


def _print_stages(res):
    """Per-patch cost of each stage and the ratio it allows: with the model's CPU time M and the other
    stages' O per patch, both cores busy, compressed/mel-only is at best M / (M + O)."""
    n = res["patches"]
    print(f"\nstages of the compressed path, one file at a time ({n} patches; model intra-op threads "
          f"{res['intra'] or 'default'}):")
    print(f"{'stage':10s} {'wall ms/patch':>14s} {'CPU ms/patch':>13s}")
    for stage in res["wall"]:
        print(f"{stage:10s} {1000 * res['wall'][stage] / n:14.2f} {1000 * res['cpu'][stage] / n:13.2f}")
    model = res["cpu"]["model"]
    other = sum(v for k, v in res["cpu"].items() if k != "model")
    print(f"CPU bound on compressed/mel-only: M / (M + O) = {model / (model + other):.2f} "
          f"(M = model {1000 * model / n:.2f}, O = the rest {1000 * other / n:.2f} CPU ms/patch)")


def _peer_unusable(python, peer):
    """Why the torch peer cannot run (None if it can)."""
    if not python:
        return "no --peer-python given"
    if not os.path.exists(peer):
        return f"{peer} not found"
    try:
        proc = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python} cannot be run ({e})"
    if proc.returncode != 0:
        return f"{python} cannot import torch ({(proc.stderr.strip().splitlines() or ['?'])[-1]})"
    return None


if __name__ == "__main__":
    sys.exit(main())
