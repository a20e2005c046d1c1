"""Wall time and peak RSS of prepare's metadata path (split + CF + word2vec) at Melon scale.

    python benchmarks/prepare_scale.py [--songs 650000] [--playlists 150000] [--cf-iterations N] ...

1. Writes Melon-sized synthetic METADATA (no mels): 650k songs, 150k playlists of ~39 songs
   (≈ 5.9M song-playlist entries, as Melon), 30 major genres with 3–11 detailed each (≈ 240 codes),
   baskets of 1 major (5 % two) + 1–3 detailed.
2. Runs ``python -m cmir_tf.prepare --metadata-only`` on it in a child process (so the synthesis's
   memory is not counted) and reports the child's wall time, CPU time (user + system: the fairer figure
   on a shared machine) and peak RSS (``ru_maxrss``), with the per-stage times prepare prints.
   Targets: < 10 minutes, < 8 GB.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=650_000, help="songs in song_meta (default 650000)")
    ap.add_argument("--playlists", type=int, default=150_000, help="playlists (default 150000)")
    ap.add_argument("--mean-songs", type=float, default=39.3, help="mean songs per playlist (default 39.3)")
    ap.add_argument("--majors", type=int, default=30, help="major genres (default 30, as Melon)")
    ap.add_argument("--cf-model", default="bpr", choices=("bpr", "als"), help="implicit model (default bpr)")
    ap.add_argument("--cf-iterations", type=int, default=None, help="CF iterations (default: prepare's)")
    ap.add_argument("--cf-threads", type=int, default=1, help="CF threads (default 1, deterministic)")
    ap.add_argument("--workdir", default=None, help="where to write the data (default: a temp folder, removed)")
    a = ap.parse_args(argv)

    from cmir_tf.data.prepared import PreparedData
    from cmir_tf.synth import make_synthetic_melon

    work = a.workdir or tempfile.mkdtemp(prefix="prepare_scale_")
    melon, out = os.path.join(work, "melon"), os.path.join(work, "prepared")
    try:
        t = time.time()
        s = make_synthetic_melon(melon, songs=a.songs, playlists=a.playlists, seed=0, majors=a.majors,
                                 mels=False, mean_songs=a.mean_songs)
        print(f"synthetic metadata: {s['songs']} songs, {s['playlists']} playlists, {s['entries']} entries, "
              f"{s['genres']} genre codes, written in {time.time() - t:.1f} s", flush=True)
        del s
        cmd = [sys.executable, "-m", "cmir_tf.prepare", "--melon", melon, "--out", out, "--metadata-only",
               "--overwrite", "--no-progress", "--cf-model", a.cf_model, "--cf-threads", str(a.cf_threads)]
        if a.cf_iterations is not None:
            cmd += ["--cf-iterations", str(a.cf_iterations)]
        print("$", " ".join(cmd), flush=True)
        t = time.time()
        env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        subprocess.run(cmd, check=True, env=env)
        wall = time.time() - t
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss_gb = ru.ru_maxrss / 1024 ** 2  # KiB → GiB
        cpu = ru.ru_utime + ru.ru_stime
        m = PreparedData(out).read_manifest()
        print(f"prepare --metadata-only: wall {wall:.1f} s (CPU {cpu:.1f} s; load average now "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), peak RSS {rss_gb:.2f} GiB "
              f"(targets < 600 s, < 8 GB); counts {m['counts']}, {m['n_genres']} genres, "
              f"CF {m['stats']['cf']}, stage seconds {m['stats']['stage_seconds']}", flush=True)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
