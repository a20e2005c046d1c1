"""Library preparation speed against embed's decode + mel path, on real compressed music.

Both run in this process on one core's worth of work (``--workers 1``, TensorFlow limited to one
intra-op and one inter-op thread), alternately for ``--rounds`` rounds (the median is reported, so a
burst of load from other processes hits both alike):

  embed     what ``cmir_tf.embed.Embedder`` does per file before its model: ``audio.load_audio``
            (decode, resample to 16 kHz, mono) then ``frontend.melspectrogram`` in a ``tf.function``;
  prepare   ``python -m cmir_tf.prepare --library`` on the same files, end to end: scan, tags, split,
            CF, word2vec, the mels (the same two calls) and the records written, the manifest.

The files are the real Ogg Vorbis / mp3 soundtracks ``ci/fetch-music.sh`` fetches (``--music CACHE``,
default ``$CMIR_MUSIC_CACHE``), the first ``--files`` in path order. Prints tracks/s and hours of audio
per hour per core for both, and prepare's rate as a fraction of embed's (the target: ≥ 0.8).

    ci/fetch-music.sh /tmp/music && python benchmarks/library.py --music /tmp/music --files 24
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def music_files(cache: str, n: int) -> list:
    out = []
    for folder, dirs, names in os.walk(cache):
        dirs.sort()
        out += [os.path.join(folder, f) for f in sorted(names) if f.endswith((".ogg", ".mp3"))
                and not os.path.islink(os.path.join(folder, f))]
    return out[:n]


def embed_path(files) -> float:
    import numpy as np
    import tensorflow as tf

    from cmir_tf.audio import decoding as audio
    from cmir_tf.audio import frontend

    mel = tf.function(frontend.melspectrogram, input_signature=[tf.TensorSpec([None], tf.float32)])
    t = time.perf_counter()
    for f in files:
        np.asarray(mel(tf.constant(audio.load_audio(f))))
    return time.perf_counter() - t


def prepare_path(files, work) -> float:
    from cmir_tf.data.library import LibrarySource
    from cmir_tf.prepare import prepare

    lib = os.path.join(work, f"lib{time.monotonic_ns()}")
    for i, f in enumerate(files):
        os.makedirs(os.path.join(lib, "A", "B"), exist_ok=True)
        os.symlink(f, os.path.join(lib, "A", "B", f"{i:03d}{os.path.splitext(f)[1]}"))
    t = time.perf_counter()
    prepare(LibrarySource(lib), os.path.join(work, f"out{time.monotonic_ns()}"), workers=1, progress=False,
            verbose=False)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--music", default=os.environ.get("CMIR_MUSIC_CACHE", ""), help="ci/fetch-music.sh's cache")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    files = music_files(a.music, a.files) if a.music else []
    if not files:
        sys.exit("error: no music: run ci/fetch-music.sh CACHE and pass --music CACHE")
    import soundfile as sf
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    hours = sum(sf.info(f).duration for f in files) / 3600
    embed_path(files[:1])  # trace the tf.function and load the codecs once
    times = {"embed": [], "prepare": []}
    with tempfile.TemporaryDirectory() as work:
        for r in range(a.rounds):
            times["embed"].append(embed_path(files))
            times["prepare"].append(prepare_path(files, work))
            print(f"round {r}: embed {times['embed'][-1]:.1f} s, prepare {times['prepare'][-1]:.1f} s", flush=True)
    print(f"{len(files)} files, {hours * 60:.1f} min of audio (ogg/mp3, 44.1 kHz stereo), one core, "
          f"median of {a.rounds} rounds")
    for k, v in times.items():
        s = statistics.median(v)
        print(f"  {k:8s} {len(files) / s:6.2f} tracks/s   {hours / (s / 3600):7.0f} hours of audio per hour per core")
    ratio = statistics.median(times["embed"]) / statistics.median(times["prepare"])
    print(f"prepare's rate / embed's rate: {ratio:.2f} (target ≥ 0.80)")


if __name__ == "__main__":
    main()
