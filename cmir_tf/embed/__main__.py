"""The embed command: ``python -m cmir_tf.embed --model EXPORT INPUTS... --out DIR`` (``cmir-embed``).

A thin door over :func:`cmir_tf.embed.folder.embed_to_folder`.
"""
from __future__ import annotations

import argparse
import sys

from cmir_tf import cli
from cmir_tf.embed.embedder import DEFAULT_BATCH_SIZE
from cmir_tf.embed.folder import embed_to_folder
from cmir_tf.errors import EXIT_PARTIAL, ConfigError, ExportError
from cmir_tf.export.exportdir import find_saved_model


@cli.command
def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.embed",
        description="Embed audio files (wav, mp3, flac, ogg, opus, aiff, … any format libsndfile decodes) or Melon mel .npy files with an exported model: "
                    "OUT/<id>.npy holds the (patches, 128) embeddings of the non-overlapping 256-frame patches, "
                    "OUT/<id>.mean.npy their mean. Unreadable inputs are reported and skipped (exit status 1).")
    p.add_argument("--model", required=True, metavar="DIR",
                   help="export folder (with saved_model/<N>/: the highest N is used) or a SavedModel folder")
    p.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="audio or .npy files, or folders searched recursively (ids keep the relative path)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help=f"patches per model call, across files (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--published-frontend", action="store_true",
                   help="the published encode.py's choices: the centre 29.1 s of each audio file (shorter files "
                        "are skipped), and the 1024-d `features` per patch instead of the 128-d embeddings; "
                        "audio inputs only")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: must be ≥ 1, got {args.batch_size}")
    try:
        find_saved_model(args.model)
    except ExportError as e:
        raise ExportError(f"--model: {e}") from None
    ignored = []
    written, failed = embed_to_folder(args.model, args.inputs, args.out, args.batch_size,
                                      progress=not args.no_progress, ignored=ignored,
                                      published_frontend=args.published_frontend)
    print(f"{written} embedded into {args.out}" + (f", {len(failed)} failed" if failed else "")
          + (f", {len(ignored)} file(s) in the folders ignored (neither audio nor mel .npy, e.g. {ignored[0]})"
             if ignored else ""), file=sys.stderr)
    return EXIT_PARTIAL if failed else 0


if __name__ == "__main__":
    sys.exit(main())
