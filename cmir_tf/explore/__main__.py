"""The explore command: ``python -m cmir_tf.explore EMB_DIR --out DIR`` (``cmir-explore``).

A thin door over :func:`cmir_tf.explore.page.write_explorer`.
"""
from __future__ import annotations

import argparse
import sys

from cmir_tf import cli
from cmir_tf.explore.page import DEFAULT_K, FIELDS, MAX_POINTS, TSNE_SAMPLE, write_explorer
from cmir_tf.similar.index import DEFAULT_TREES


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.explore",
        description="Write OUT/index.html: an interactive 2-D map of a folder of track embeddings (opens from the "
                    "file system, no server). Hover names a track, a click lists its k nearest tracks (the ones "
                    "python -m cmir_tf.similar gives) and plays them when --audio holds their files.")
    p.add_argument("embeddings", help="folder of per-track .npy embeddings (written by python -m cmir_tf.embed)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for index.html (created if missing)")
    p.add_argument("--color", "--colour", dest="color", choices=FIELDS, default=None,
                   help="field the points are coloured by (default: genre with --melon, else plain)")
    p.add_argument("--melon", metavar="DIR", help="Melon folder: song names, artists, albums, genres, playlists")
    p.add_argument("--prepared", metavar="DIR", help="prepared folder (python -m cmir_tf.prepare): splits")
    p.add_argument("--audio", metavar="DIR", help="folder the embedded audio files are in (as given to embed): "
                   "linked for playback by a path relative to OUT, and their tags name the tracks")
    p.add_argument("-k", type=int, default=DEFAULT_K, help=f"neighbours listed per track (default {DEFAULT_K})")
    p.add_argument("--projection", choices=("tsne", "pca"), default="tsne",
                   help=f"2-D map: t-SNE (default; fitted on at most {TSNE_SAMPLE} tracks, the rest placed by "
                        "their neighbours) or PCA (faster, keeps fewer neighbourhoods)")
    p.add_argument("--max-points", type=int, default=MAX_POINTS,
                   help=f"draw a seeded sample of this many tracks when there are more (default {MAX_POINTS})")
    p.add_argument("--index", help="annoy index file to reuse or create (as python -m cmir_tf.similar --index)")
    p.add_argument("--trees", type=int, default=DEFAULT_TREES, help=f"annoy trees (default {DEFAULT_TREES}, "
                   "as similar: the same trees give the same neighbours)")
    p.add_argument("--seed", type=int, default=0, help="seed of the projection and the sample (default 0)")
    return p


@cli.command
def main(argv=None) -> int:
    args = build_arg_parser().parse_args(argv)
    color = args.color or ("genre" if args.melon else "plain")
    write_explorer(args.embeddings, args.out, k=args.k, color=color, melon=args.melon, prepared=args.prepared,
                   audio=args.audio, projection=args.projection, index_path=args.index, n_trees=args.trees,
                   max_points=args.max_points, seed=args.seed, log=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
