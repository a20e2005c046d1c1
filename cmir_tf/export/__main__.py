"""The export command: ``python -m cmir_tf.export --run RUN | --published-checkpoint FILE.pt --out DIR`` (``cmir-export``).

A thin door over :func:`cmir_tf.export.exporter.export_run` and, for a checkpoint the authors released,
:func:`cmir_tf.export.released.export_published`: flags, the zoo metadata options, the written paths.
"""
from __future__ import annotations

import argparse

from cmir_tf import cli
from cmir_tf.errors import ConfigError
from cmir_tf.export import zoo
from cmir_tf.export.exporter import DEFAULT_NAME, export_run
from cmir_tf.export.formats import ONNX_EXTRA_HINT
from cmir_tf.export.reports import REPORT_FILES
from cmir_tf.train.rundir import RunDir


def _add_zoo_arguments(parser):
    """The export command's zoo options (link base, author, e-mail, reports, ONNX)."""
    g = parser.add_argument_group("model-zoo files")
    g.add_argument("--link-base", default="", metavar="URL",
                   help="URL of the folder the export will be published in; each JSON's `link` becomes "
                        "URL/<file name> (default: no link, \"\")")
    g.add_argument("--author", default="", help="publisher of the model files (the metadata's `author`)")
    g.add_argument("--email", default="", help="contact address for the model files (the metadata's `email`)")
    g.add_argument("--report", action="append", default=None, metavar="FILE",
                   help="evaluation report (report.json of `cmir_tf.evaluate all`, or gtzan/jamendo/playlists"
                        f".json) whose figures go into `dataset.metrics`; repeatable (default: RUN_DIR/"
                        f"{RunDir.EVAL}/{{{','.join(REPORT_FILES)}}} when present)")
    g.add_argument("--report-model", metavar="NAME",
                   help="the model of a multi-model report.json this export is (default: the only one, "
                        "else the one named like the run folder or its mode)")
    o = g.add_mutually_exclusive_group()
    o.add_argument("--onnx", dest="onnx", action="store_true", default=None,
                   help=f"write NAME.onnx or fail (needs {ONNX_EXTRA_HINT}); default: when installed")
    o.add_argument("--no-onnx", dest="onnx", action="store_false", help="do not write NAME.onnx")
    return parser


def _zoo_options(args):
    """ZooOptions and the report arguments of parsed ``add_arguments`` flags, as export_run keywords."""
    return {"options": zoo.ZooOptions(link_base=args.link_base, author=args.author, email=args.email, onnx=args.onnx),
            "reports": args.report, "report_model": args.report_model}


def build_arg_parser():
    p = argparse.ArgumentParser(
        prog="python -m cmir_tf.export",
        description="Export a training run: SavedModel for TF Serving (DIR/saved_model/<N>/ with signatures "
                    "serving_default, embed_waveform, tag_genres), frozen graph DIR/<NAME>.pb with its "
                    "Essentia model-zoo metadata DIR/<NAME>.json, DIR/<NAME>.onnx (ONNX, with the [onnx] "
                    "extra), DIR/<NAME>.keras, and for models with a genre encoder the zero-shot genre "
                    "tagger as a zoo classification head DIR/<NAME>-genres.pb/.json. Written atomically; "
                    "an existing version is never overwritten.")
    options = (
        ("--run", dict(metavar="RUN_DIR",
                       help="training run folder (config.json, model.json, checkpoints/best.weights.h5 or last.weights.h5)")),
        ("--published-checkpoint", dict(metavar="FILE.pt",
                                        help="instead of --run: an audio_encoder.pt released with the paper "
                                             "(andrebola/contrastive-mir-learning, models/<experiment>/), read "
                                             "without PyTorch and without running pickled code")),
        ("--experiment", dict(help="with --published-checkpoint: the published experiment it belongs to "
                                   "(default: the checkpoint's folder name)")),
        ("--out", dict(required=True, metavar="DIR", help="export folder (created if missing)")),
        ("--version", dict(type=int, default=None, metavar="N",
                           help="SavedModel version folder (positive integer); default: 1 + the highest existing one")),
        ("--name", dict(default=DEFAULT_NAME,
                        help=f"base name of the frozen graph and its Essentia JSON (default {DEFAULT_NAME})")),
    )
    for flag, kwargs in options:
        p.add_argument(flag, **kwargs)
    return _add_zoo_arguments(p)


@cli.command
def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    if (args.run is None) == (args.published_checkpoint is None):
        raise ConfigError("give exactly one of --run RUN_DIR and --published-checkpoint FILE.pt")
    if args.experiment is not None and args.published_checkpoint is None:
        raise ConfigError("--experiment: only with --published-checkpoint")
    if args.published_checkpoint is not None:
        from cmir_tf.export.released import export_published

        res = export_published(args.published_checkpoint, args.out, args.version, args.name,
                               experiment=args.experiment, **_zoo_options(args))
    else:
        res = export_run(args.run, args.out, args.version, args.name, **_zoo_options(args))
    for label, path in res.outputs():
        print(f"{label}: {path}")
    if res.graph_path is None:
        print(f"note: {res.notes[-1]}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
