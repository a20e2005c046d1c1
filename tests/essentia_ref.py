"""Essentia reference runner: Essentia's own algorithms, always in a child process.

Essentia cannot share a process with TensorFlow (importing it after tensorflow fails with
"random_device could not be read"), so tests call the client helpers below, which run this file as a
script with the same Python and exchange data through ``.npy`` files in a temporary folder.

Command line (child side; every array is read with ``allow_pickle=False``):

    python tests/essentia_ref.py mel IN.npy [IN.npy ...] --out-dir DIR
        each IN.npy: 1-D float32 16 kHz mono signal → DIR/<same name>.npy, (frames, 48) float32 dB from
        FrameGenerator(512, 256, startFromZero=False) → Windowing(hann, normalized=False) → Spectrum
        → MelBands(48, 16 kHz, 0–8000 Hz, inputSize 257, weighting linear, unit_tri, slaneyMel, power)
        → UnaryOperator(lin2db, scale=2)   (Melon's chain, docs/DATASETS.md)
    python tests/essentia_ref.py melbank --out FILE.npy
        the (257, 48) weights of that MelBands, read off by feeding it one unit bin at a time
    python tests/essentia_ref.py predict2d --graph G.pb --input NODE --output NODE [--output NODE ...]
            --data IN.npy --out-dir DIR [--patch-size 256] [--patch-hop-size 0] [--batch-size 64]
            [--last-patch-mode discard]
        IN.npy (frames, bands) float32 → TensorflowPredict2D, one run per output node;
        DIR/output_<k>.npy for the k-th --output (k from 0), shape (patches, dims)

Client side (import this module; it never imports essentia): ``essentia_available()``,
``essentia_mel(signals, workdir)``, ``essentia_melbank(workdir)``, ``essentia_predict2d(...)``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()

# Melon's chain (docs/DATASETS.md)
SAMPLE_RATE = 16000
FRAME_SIZE = 512
HOP_SIZE = 256
N_BANDS = 48


# ------------------------------------------------------------------------------------------------
# client side
# ------------------------------------------------------------------------------------------------
def essentia_available() -> bool:
    """Whether essentia is installed for this Python (checked without importing it)."""
    return importlib.util.find_spec("essentia") is not None


def run_child(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run this file as a script in a fresh interpreter; raise with its stderr if it fails."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run(
        [sys.executable, str(HERE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"essentia child `{' '.join(map(str, args))}` exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return proc


def essentia_mel(signals: dict[str, np.ndarray], workdir) -> dict[str, np.ndarray]:
    """Essentia's Melon mel, (frames, 48) float32 dB, for each named 16 kHz signal (one child run)."""
    workdir = Path(workdir)
    in_dir, out_dir = workdir / "mel_in", workdir / "mel_out"
    in_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, x in signals.items():
        p = in_dir / f"{name}.npy"
        np.save(p, np.asarray(x, np.float32))
        paths.append(p)
    run_child(["mel", *paths, "--out-dir", out_dir])
    return {name: np.load(out_dir / f"{name}.npy", allow_pickle=False) for name in signals}


def essentia_melbank(workdir) -> np.ndarray:
    """The (257, 48) weight matrix of Essentia's MelBands as configured for Melon."""
    out = Path(workdir) / "melbank.npy"
    run_child(["melbank", "--out", out])
    return np.load(out, allow_pickle=False)


def essentia_predict2d(
    graph,
    data: np.ndarray,
    input_node: str,
    output_nodes: list[str],
    workdir,
    *,
    patch_size: int = 256,
    patch_hop_size: int = 0,
    batch_size: int = 64,
    last_patch_mode: str = "discard",
) -> list[np.ndarray]:
    """Run Essentia's TensorflowPredict2D on ``data`` (frames, bands); one array per output node."""
    workdir = Path(workdir)
    out_dir = workdir / "predict2d_out"
    out_dir.mkdir(parents=True, exist_ok=True)
    data_path = workdir / "predict2d_in.npy"
    np.save(data_path, np.asarray(data, np.float32))
    args = ["predict2d", "--graph", graph, "--input", input_node, "--data", data_path, "--out-dir", out_dir,
            "--patch-size", patch_size, "--patch-hop-size", patch_hop_size, "--batch-size", batch_size,
            "--last-patch-mode", last_patch_mode]
    for node in output_nodes:
        args += ["--output", node]
    run_child(args)
    return [np.load(out_dir / f"output_{k}.npy", allow_pickle=False) for k in range(len(output_nodes))]


# ------------------------------------------------------------------------------------------------
# child side (imports essentia)
# ------------------------------------------------------------------------------------------------
def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def _melbands(es):
    return es.MelBands(numberBands=N_BANDS, sampleRate=SAMPLE_RATE, lowFrequencyBound=0,
                       highFrequencyBound=SAMPLE_RATE / 2, inputSize=FRAME_SIZE // 2 + 1, weighting="linear",
                       normalize="unit_tri", warpingFormula="slaneyMel", type="power")


def _cmd_mel(args) -> None:
    import essentia.standard as es  # noqa: PLC0415

    window = es.Windowing(type="hann", normalized=False)
    spectrum = es.Spectrum()
    melbands = _melbands(es)
    to_db = es.UnaryOperator(type="lin2db", scale=2)
    for path in args.inputs:
        x = np.load(path, allow_pickle=False)
        if x.ndim != 1:
            raise SystemExit(f"{path}: expected a 1-D signal, got shape {x.shape}")
        x = np.ascontiguousarray(x, np.float32)
        rows = [to_db(melbands(spectrum(window(frame))))
                for frame in es.FrameGenerator(x, frameSize=FRAME_SIZE, hopSize=HOP_SIZE, startFromZero=False)]
        mel = np.array(rows, np.float32).reshape(len(rows), N_BANDS)
        _save(Path(args.out_dir) / Path(path).name, mel)


def _cmd_melbank(args) -> None:
    import essentia.standard as es  # noqa: PLC0415

    melbands = _melbands(es)
    n_bins = FRAME_SIZE // 2 + 1
    bank = np.zeros((n_bins, N_BANDS), np.float32)
    for j in range(n_bins):
        unit = np.zeros(n_bins, np.float32)
        unit[j] = 1.0  # magnitude 1 → power 1: the output is row j of the weights
        bank[j] = melbands(unit)
    _save(Path(args.out), bank)


def _cmd_predict2d(args) -> None:
    import essentia.standard as es  # noqa: PLC0415

    data = np.ascontiguousarray(np.load(args.data, allow_pickle=False), np.float32)
    if data.ndim != 2:
        raise SystemExit(f"{args.data}: expected (frames, bands), got shape {data.shape}")
    for k, node in enumerate(args.output):
        model = es.TensorflowPredict2D(graphFilename=str(args.graph), input=args.input, output=node,
                                       patchSize=args.patch_size, patchHopSize=args.patch_hop_size,
                                       batchSize=args.batch_size, lastPatchMode=args.last_patch_mode)
        _save(Path(args.out_dir) / f"output_{k}.npy", np.asarray(model(data), np.float32))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run Essentia reference algorithms on .npy files "
                                     "(meant to be run in a child process, never beside tensorflow).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mel", help="Melon's mel chain on 1-D 16 kHz signals")
    p.add_argument("inputs", nargs="+", help="1-D float32 .npy signals at 16 kHz")
    p.add_argument("--out-dir", required=True, help="folder for the (frames, 48) dB mels, same file names")
    p.set_defaults(func=_cmd_mel)
    p = sub.add_parser("melbank", help="the (257, 48) MelBands weights of Melon's chain")
    p.add_argument("--out", required=True, help=".npy file to write")
    p.set_defaults(func=_cmd_melbank)
    p = sub.add_parser("predict2d", help="TensorflowPredict2D on a (frames, bands) .npy")
    p.add_argument("--graph", required=True, help="frozen graph (.pb)")
    p.add_argument("--input", required=True, help="input node name")
    p.add_argument("--output", required=True, action="append", help="output node name (repeatable)")
    p.add_argument("--data", required=True, help="(frames, bands) float32 .npy input")
    p.add_argument("--out-dir", required=True, help="folder for output_<k>.npy, k = index of --output")
    p.add_argument("--patch-size", type=int, default=256, help="frames per patch (default 256)")
    p.add_argument("--patch-hop-size", type=int, default=0,
                   help="frames between patch starts; 0 = patch size, no overlap (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="patches per session run; -1 = all (default 64)")
    p.add_argument("--last-patch-mode", default="discard", choices=["discard", "repeat"],
                   help="incomplete last patch: drop it or fill it by repeating (default discard)")
    p.set_defaults(func=_cmd_predict2d)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
