"""The similar command: ``python -m cmir_tf.similar EMB_DIR --id ID | --file F`` (``cmir-similar``).

A thin door over :func:`cmir_tf.similar.index.find_similar`: the table of nearest tracks with
their cosine similarity.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from cmir_tf import cli
from cmir_tf.similar.index import DEFAULT_TREES, find_similar

TABLE_NOTE = ("# cosine: cosine similarity of each track's vector (the mean of its patch embeddings) to the "
              "query's, 1 - d²/2 from annoy's angular distance d = sqrt(2 - 2 cos); 1 = same direction, "
              "0 = orthogonal, -1 = opposite; best first")


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.similar",
        description="Tracks most similar to a track id or a file, from an annoy (angular) index over a "
                    "folder of embeddings (one .npy per track: patch embeddings (P, D) or a vector (D,)).")
    p.add_argument("embeddings", help="folder of per-track .npy embeddings (e.g. written by python -m cmir_tf.embed)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--id", dest="track_id", help="id of an indexed track: its path in the folder without "
                   ".npy, or its file name alone when unambiguous")
    q.add_argument("--file", help="an embedding .npy, or an audio file / Melon mel .npy to embed with --model")
    p.add_argument("-k", type=int, default=10, help="number of similar tracks to list (default 10)")
    p.add_argument("--model", help="export folder of a trained model, needed when --file must be embedded first")
    p.add_argument("--index", help="annoy index file to reuse (rebuilt when the folder changed) or to create")
    p.add_argument("--trees", type=int, default=DEFAULT_TREES,
                   help=f"annoy trees when building (more = more exact, slower; default {DEFAULT_TREES})")
    p.add_argument("--json", action="store_true", help="print a JSON list of {id, score} instead of a table")
    return p


def _utf8(text: str) -> bool:
    """Whether ``text`` is printable as UTF-8 (an id from a non-UTF-8 file name holds escaped bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@cli.command
def main(argv=None) -> int:
    args = build_arg_parser().parse_args(argv)
    hits = find_similar(args.embeddings, track_id=args.track_id, file=args.file, k=args.k,
                        model=args.model, index_path=args.index, n_trees=args.trees)
    if args.json:  # ids of non-UTF-8 file names (escaped bytes) as \\udcXX escapes, which json reads back
        text = json.dumps([{"id": i, "score": round(s, 6)} for i, s in hits], ensure_ascii=False)
        print(text if text.isascii() or _utf8(text) else json.dumps(json.loads(text), ensure_ascii=True))
    else:
        print(TABLE_NOTE)
        print("rank\tcosine\tid")
        for rank, (i, s) in enumerate(hits, 1):
            print(f"{rank}\t{s:.4f}\t{i if _utf8(i) else os.fsencode(i).decode('utf-8', 'backslashreplace')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
