"""Decoder and resampler candidates for cmir_tf.audio.decoding, measured side by side (docs/AUDIO.md's tables).

    python benchmarks/audio.py                 # decode + resample tables, 5 repeats (median, min)
    python benchmarks/audio.py --concurrency   # also: 4 threads × 3 rounds over 8 short files per decoder

Decoding: tensorflow-io 0.37.1 (`tfio.audio.AudioIOTensor`, what cmir_tf used before) against
libsndfile (soundfile.read, float32) and cmir_tf.audio.decoding.decode (libsndfile + framing checks + mean
downmix), on stereo music-like files written here with soundfile: ogg Vorbis, mp3, flac and 16-bit wav
at 22.05 / 44.1 / 48 kHz (290.6 s; 317 s at 48 kHz — the lengths of the issue's examples).

Resampling to 16 kHz of a 317 s mono signal: libsoxr (soxr.resample, QQ..VHQ), scipy's resample_poly
(float32 and float64) and tensorflow-io's resample with its latency removed as cmir_tf did; accuracy of
each against an exact band-limited truth (200 sinusoids up to 7 kHz, evaluated at the output times) and
the timing offset of a 1 kHz tone, at 8 / 11.025 / 22.05 / 44.1 / 48 kHz.

--concurrency: each decoder, 4 threads each decoding the same 8 files 3 times in its own order; prints
how many of the 96 results differ from the one-thread result (tensorflow-io's decoders are not safe to
run concurrently). Timings are wall-clock medians on whatever else the machine is doing: repeat on a
quiet machine for figures to quote.
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from math import gcd

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from signals import music  # noqa: E402 — the benchmarks' music-like signal

FORMATS = {"ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III"), "flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16")}


def _write(path, x, rate):
    import soundfile as sf

    fmt, subtype = FORMATS[path.rsplit(".", 1)[1]]
    with sf.SoundFile(path, "w", rate, x.shape[1], format=fmt, subtype=subtype) as f:
        for i in range(0, len(x), 65536):  # in blocks: libvorbis's encoder overflows its stack on one long write
            f.write(x[i:i + 65536])


def _timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), out


def _tfio():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow_io as tfio
    except ImportError as exc:  # not a dependency of cmir_tf (docs/AUDIO.md): a venv of its own
        raise SystemExit("benchmarks/audio.py compares with tensorflow-io, which cmir_tf does not install: "
                         "run it in a venv with pip install tensorflow==2.17.* tensorflow-io==0.37.1 "
                         f"and this package ({exc})")

    return tfio


def tfio_decode(path):
    """What cmir_tf did before: AudioIOTensor → numpy, integer PCM scaled, channels averaged."""
    stream = _tfio().audio.AudioIOTensor(path)
    a = stream.to_tensor().numpy()
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768
    return a.reshape(len(a), -1).mean(axis=1, dtype=np.float32), int(stream.rate.numpy())


def tfio_resample(x, rate_in, rate_out=16000, _delay={}):
    """tfio.audio.resample with its latency (measured on an impulse) removed, ceil(n·out/in) samples."""
    import tensorflow as tf

    tfio = _tfio()
    if (rate_in, rate_out) not in _delay:
        imp = np.zeros(max(rate_in, 4096), np.float32)
        k = len(imp) // 2
        imp[k] = 1
        y = tfio.audio.resample(tf.constant(imp), rate_in=rate_in, rate_out=rate_out).numpy()
        _delay[(rate_in, rate_out)] = int(round(int(np.argmax(y)) - k * rate_out / rate_in))
    d = _delay[(rate_in, rate_out)]
    n_out = -(-len(x) * rate_out // rate_in)
    pad = np.concatenate([x, np.zeros(int((d + 2) * rate_in / rate_out) + 4, np.float32)])
    return tfio.audio.resample(tf.constant(pad), rate_in=rate_in, rate_out=rate_out).numpy()[d:d + n_out]


def _resample_poly(x, rate_in, dtype):
    from scipy.signal import resample_poly

    g = gcd(16000, rate_in)
    return resample_poly(x.astype(dtype, copy=False), 16000 // g, rate_in // g)


def decode_table(folder, repeats):
    import soundfile as sf

    from cmir_tf.audio import decoding as audio

    print(f"\nDECODING (stereo music-like; median and min of {repeats}, seconds)")
    print(f"{'file':28s} {'tfio':>13s} {'soundfile.read':>15s} {'audio.decode':>13s}  lengths (written / tfio / ours)")
    for ext, rate in (("ogg", 48000), ("ogg", 44100), ("mp3", 22050), ("mp3", 44100), ("mp3", 48000),
                      ("flac", 44100), ("wav", 44100)):
        seconds = 317.0 if rate == 48000 else 290.6
        path = os.path.join(folder, f"m{rate}.{ext}")
        if not os.path.exists(path):
            _write(path, music(seconds, rate, seed=rate), rate)
        t_io, m_io, (y_io, _) = _timed(lambda: tfio_decode(path), repeats)
        t_sf, m_sf, _ = _timed(lambda: sf.read(path, dtype="float32"), repeats)
        t_us, m_us, (y, _) = _timed(lambda: audio.decode(path), repeats)
        name = f"{seconds:g} s {rate / 1000:g} kHz {ext}"
        print(f"{name:28s} {t_io:6.3f} ({m_io:5.3f}) {t_sf:7.3f} ({m_sf:5.3f}) {t_us:6.3f} ({m_us:5.3f})  "
              f"{int(seconds * rate)} / {len(y_io)} / {len(y)}")


def resample_table(repeats):
    import soxr

    from cmir_tf.audio import decoding as audio

    engines = {f"soxr {q}": (lambda q: lambda x, r: soxr.resample(x, r, 16000, quality=q))(q)
               for q in ("QQ", "LQ", "MQ", "HQ", "VHQ")}
    engines["cmir_tf.audio.decoding.resample (soxr HQ)"] = lambda x, r: audio.resample(x, r)
    engines["resample_poly float32"] = lambda x, r: _resample_poly(x, r, np.float32)
    engines["resample_poly float64"] = lambda x, r: _resample_poly(x, r, np.float64)
    engines["tfio (latency removed)"] = tfio_resample
    print(f"\nRESAMPLING a 317 s mono signal to 16 kHz (median of {repeats}; tfio: of 3), ms")
    rates = (48000, 44100, 22050)
    print(f"{'engine':34s} " + " ".join(f"{r / 1000:>8g}k" for r in rates))
    rng = np.random.default_rng(0)
    signals = {r: (0.3 * rng.standard_normal(int(317 * r))).astype(np.float32) for r in rates}
    for name, fn in engines.items():
        k = 3 if name.startswith("tfio") else repeats
        row = [1000 * _timed(lambda: fn(signals[r], r), k)[0] for r in rates]
        print(f"{name:34s} " + " ".join(f"{v:9.1f}" for v in row))

    print("\naccuracy: relative rms against the exact band-limited signal | 1 kHz tone offset (output samples)")
    all_rates = (8000, 11025, 22050, 44100, 48000)
    print(f"{'engine':34s} " + " ".join(f"{r / 1000:>8g}k" for r in all_rates))
    for name, fn in engines.items():
        errs, offs = [], []
        for r in all_rates:
            fmax = min(7000, 0.45 * r)
            g = np.random.default_rng(1)
            f, ph, amp = g.uniform(50, fmax, 200), g.uniform(0, 2 * np.pi, 200), g.uniform(0.2, 1, 200) * 3 / 200
            s = lambda t: (amp * np.sin(2 * np.pi * f * t[:, None] + ph)).sum(axis=1)  # noqa: E731
            y = np.asarray(fn(s(np.arange(2 * r) / r).astype(np.float32), r), np.float64)
            want = s(np.arange(len(y)) / 16000)
            core = slice(400, len(y) - 400)
            errs.append(np.sqrt(np.mean((y[core] - want[core]) ** 2) / np.mean(want[core] ** 2)))
            t = np.arange(2 * r) / r
            y = np.asarray(fn((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), r), np.float64)
            to = np.arange(len(y)) / 16000
            z = np.sum(y[200:-200] * np.exp(-2j * np.pi * 1000 * to[200:-200])) * 2 / len(to[200:-200])
            offs.append(-(np.angle(z) + np.pi / 2) / (2 * np.pi * 1000) * 16000)
        print(f"{name:34s} " + " ".join(f"{e:9.1e}" for e in errs) + " | " + " ".join(f"{o:+.3f}" for o in offs))


CONCURRENCY_FILES = [("ogg", 44100, 6), ("ogg", 48000, 4), ("mp3", 22050, 8), ("mp3", 48000, 5),
                     ("mp3", 44100, 3), ("wav", 44100, 5), ("flac", 48000, 4), ("ogg", 22050, 7)]


def concurrency_check(folder):
    """Each decoder in its own child process (tensorflow-io's can abort the process from a thread)."""
    import subprocess

    for i, (ext, rate, secs) in enumerate(CONCURRENCY_FILES):
        _write(os.path.join(folder, f"c{i}.{ext}"), music(secs, rate, seed=i), rate)
    print("\nCONCURRENCY: 4 threads × 3 rounds over 8 files; results that differ from one thread's")
    for name in ("tfio", "cmir_tf.audio.decoding.decode"):
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--work", folder, "--child-concurrency", name],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode == 0:
            print(f"{name:22s} {proc.stdout.strip().splitlines()[-1]}")
        else:
            last = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["?"]
            print(f"{name:22s} the process died (exit status {proc.returncode}): {last[0][:160]}")


def _child_concurrency(folder, name):
    from cmir_tf.audio import decoding as audio

    fn = tfio_decode if name == "tfio" else audio.decode
    paths = [os.path.join(folder, f"c{i}.{ext}") for i, (ext, _, _) in enumerate(CONCURRENCY_FILES)]
    ref = {p: fn(p)[0] for p in paths}
    wrong = []

    def worker(seed):
        order = paths * 3
        random.Random(seed).shuffle(order)
        for p in order:
            try:
                y = fn(p)[0]
                if y.shape != ref[p].shape or not np.array_equal(y, ref[p]):
                    wrong.append((os.path.basename(p), len(y), len(ref[p])))
            except Exception as e:  # noqa: BLE001 — counted as a wrong result
                wrong.append((os.path.basename(p), repr(e)[:60]))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(wrong)} of {4 * 3 * len(paths)} differ" + (f", e.g. {wrong[:3]}" if wrong else ""))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--concurrency", action="store_true", help="also count tfio's and our wrong results under 4 threads")
    p.add_argument("--no-decode", action="store_true")
    p.add_argument("--no-resample", action="store_true")
    p.add_argument("--work", help="folder for the generated files (default: a temporary one)")
    p.add_argument("--child-concurrency", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_concurrency:
        return _child_concurrency(args.work, args.child_concurrency)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="cmir-audio-bench-")
    folder = args.work or tmp.name
    os.makedirs(folder, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    if not args.no_decode:
        decode_table(folder, args.repeats)
    if not args.no_resample:
        resample_table(args.repeats)
    if args.concurrency:
        concurrency_check(folder)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
