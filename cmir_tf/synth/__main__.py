"""The synth command: ``python -m cmir_tf.synth --out DIR`` (console script ``cmir-synth``).

A thin door over :func:`cmir_tf.synth.generator.make_synthetic_melon` and
:func:`cmir_tf.synth.generator.plant_hostile`: flags, their checks, one summary line.
"""
from __future__ import annotations

import argparse
import sys
import time

from cmir_tf import cli
from cmir_tf.errors import ConfigError
from cmir_tf.synth.generator import make_synthetic_melon, plant_hostile


@cli.command
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m cmir_tf.synth",
        description="Write a synthetic Melon Playlist Dataset (Melon's exact layout) with planted genre "
                    "and playlist-taste structure.")
    ap.add_argument("--out", required=True, help="folder to write (created; existing files are replaced)")
    ap.add_argument("--songs", type=int, default=1000, help="number of songs, ids 0..N-1 (default 1000)")
    ap.add_argument("--playlists", type=int, default=300, help="number of playlists (default 300)")
    ap.add_argument("--seed", type=int, default=0, help="random seed; a seed always gives the same files")
    ap.add_argument("--majors", type=int, default=8,
                    help="number of major genres GNxx00 (Melon has 30; default 8), each with 3-11 detailed")
    ap.add_argument("--mean-songs", type=float, default=20.0, help="mean songs per playlist (default 20)")
    ap.add_argument("--no-mels", action="store_true", help="write only the JSON metadata (scale tests)")
    ap.add_argument("--hostile", action="store_true",
                    help="also plant every fault of the real dataset (missing/corrupt/pickled/inf mels, "
                         "songs without genres, duplicates, unknown playlist entries, stray files)")
    a = ap.parse_args(argv)
    if a.hostile and a.no_mels:
        ap.error("--hostile needs the mels (drop --no-mels)")
    if a.songs < 1 or a.playlists < 1:
        raise ConfigError(f"--songs and --playlists must be ≥ 1, got {a.songs} and {a.playlists}")
    if not 1 <= a.majors <= 99:
        raise ConfigError(f"--majors must be in 1..99, got {a.majors}")
    t0 = time.time()
    s = make_synthetic_melon(a.out, a.songs, a.playlists, a.seed, majors=a.majors, mels=not a.no_mels,
                             mean_songs=a.mean_songs, progress=True)
    if a.hostile:
        h = plant_hostile(a.out, a.seed)
        print(f"planted {len(h['expected_skips'])} faulty songs, {len(h['stray'])} stray files")
    print(f"wrote {s['songs']} songs, {s['playlists']} playlists ({s['entries']} entries), {s['genres']} "
          f"genre codes{' and mels' if s['mels'] else ''} to {a.out} in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
