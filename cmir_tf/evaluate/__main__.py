"""The evaluate command: ``python -m cmir_tf.evaluate {gtzan,jamendo,playlists,all}`` (``cmir-evaluate``).

Flags of each task, their checks, and :func:`run`: the parsed flags → the protocol settings
(:class:`cmir_tf.evaluate.downstream.Params`) → :func:`cmir_tf.evaluate.evaluation.evaluate_models`
or one task's function → the report (:mod:`cmir_tf.evaluate.report`) and a summary per task.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from cmir_tf import cli
from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.errors import EXIT_OK, EXIT_PARTIAL, ConfigError
from cmir_tf.evaluate.cache import DEFAULT_CACHE, load_model
from cmir_tf.evaluate.downstream import Params
from cmir_tf.evaluate.evaluation import evaluate_models, skipped_files
from cmir_tf.evaluate.gtzan import evaluate_gtzan_split, read_gtzan
from cmir_tf.evaluate.jamendo import evaluate_jamendo_splits, read_jamendo_categories
from cmir_tf.evaluate.playlists import evaluate_playlist_task, read_playlist_task
from cmir_tf.evaluate.report import WRITTEN_FILES, markdown, mean_std
from cmir_tf.fileio import require_output_dir, write_json


def _add_common(sp, *, gtzan=False, jamendo=False, playlists=False) -> None:
    """The flags every sub-command shares, and the protocol settings of the tasks it runs."""
    if gtzan or jamendo:
        sp.add_argument("--runs", type=int, default=10, help="repetitions of the classifier training (default 10)")
    sp.add_argument("--seed", type=int, default=0,
                    help="base seed: classifier run r uses seed + r; also the annoy index and the random "
                         "playlist baseline (default 0)")
    sp.add_argument("--cache", default=DEFAULT_CACHE,
                    help=f"embedding cache folder, one sub-folder per model and dataset (default {DEFAULT_CACHE})")
    sp.add_argument("--no-cache", action="store_true", help="embed everything again, write no cache")
    sp.add_argument("--out", help="folder for the results (JSON, and for 'all' report.md and plots)")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    if gtzan:
        sp.add_argument("--gtzan-max-iter", type=int, default=200, help="GTZAN MLP epochs at most (default 200)")
    if jamendo:
        sp.add_argument("--jamendo-max-epochs", type=int, default=100, help="Jamendo MLP epochs at most (default 100)")
        sp.add_argument("--patience", type=int, default=10,
                        help="Jamendo early stopping: epochs without a lower validation loss (default 10)")
    if playlists:
        sp.add_argument("--k", type=int, default=100,
                        help="playlists: neighbours per query song and prediction length (default 100)")
        sp.add_argument("--trees", type=int, default=50, help="playlists: annoy trees (default 50)")


_MODEL_HELP = "export folder (python -m cmir_tf.export --out)"
_CATEGORIES = ",".join(JAMENDO_CATEGORIES)


def _add_single_tasks(sub) -> None:
    g = sub.add_parser("gtzan", help="GTZAN genre classification (Table 1)")
    g.add_argument("--model", required=True, help=_MODEL_HELP)
    g.add_argument("--gtzan", required=True, help="GTZAN folder holding genres/<genre>/<genre>.000NN.wav")
    g.add_argument("--splits", required=True, help="folder with train_filtered.txt, valid_filtered.txt, test_filtered.txt")
    _add_common(g, gtzan=True)
    j = sub.add_parser("jamendo", help="MTG-Jamendo auto-tagging (Table 2)")
    j.add_argument("--model", required=True, help=_MODEL_HELP)
    j.add_argument("--jamendo", required=True, help="audio folder holding NN/ID.mp3 (the TSVs' PATH column)")
    j.add_argument("--splits", required=True, help="split folder, e.g. mtg-jamendo-dataset/data/splits/split-0")
    j.add_argument("--categories", default=_CATEGORIES,
                   help="comma-separated subset of genre,instrument,moodtheme (default all three)")
    _add_common(j, jamendo=True)
    pl = sub.add_parser("playlists", help="Melon playlist continuation (Table 3)")
    pl.add_argument("--model", required=True, help=_MODEL_HELP)
    pl.add_argument("--data", required=True, help="prepared folder (python -m cmir_tf.prepare), for splits.json")
    pl.add_argument("--melon", help="Melon folder: train/val/test.json and arena_mel/ (not for a folder prepared "
                    "with --library: its own playlists or albums and audio files are used)")
    _add_common(pl, playlists=True)


def _add_all(sub) -> None:
    a = sub.add_parser("all", help="several models on the datasets given, as one report (Tables 1–3 + plots)")
    a.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR",
                   help="models to compare, e.g. contr_cf_g=exports/contr_cf_g (names as the paper's presets "
                        "get the paper's numbers beside them)")
    a.add_argument("--gtzan", help="GTZAN folder (with --gtzan-splits)")
    a.add_argument("--gtzan-splits", help="folder of the GTZAN fault-filtered split lists")
    a.add_argument("--jamendo", help="MTG-Jamendo audio folder (with --jamendo-splits)")
    a.add_argument("--jamendo-splits", help="MTG-Jamendo split folder, e.g. data/splits/split-0")
    a.add_argument("--categories", default=_CATEGORIES, help="Jamendo categories (default all)")
    a.add_argument("--data", help="prepared folder (with --melon) for the playlist task")
    a.add_argument("--melon", help="Melon folder (with --data; not for a folder prepared with --library)")
    _add_common(a, gtzan=True, jamendo=True, playlists=True)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cmir_tf.evaluate",
                                description="Downstream evaluation of exported models (paper sec. 3.3, Tables 1–3).")
    sub = p.add_subparsers(dest="task", required=True, metavar="{gtzan,jamendo,playlists,all}")
    _add_single_tasks(sub)
    _add_all(sub)
    return p


def flag_pair(args, a, b, flag_a, flag_b):
    """``(args.a, args.b)`` when both flags are given, None when neither; one alone is a ``ConfigError``."""
    x, y = getattr(args, a, None), getattr(args, b, None)
    if (x is None) != (y is None):
        raise ConfigError(f"{flag_a} and {flag_b} go together")
    return (x, y) if x is not None else None


def _params(args) -> Params:
    d = Params()
    params = Params(runs=getattr(args, "runs", d.runs), seed=args.seed,
                    gtzan_max_iter=getattr(args, "gtzan_max_iter", d.gtzan_max_iter),
                    jamendo_max_epochs=getattr(args, "jamendo_max_epochs", d.jamendo_max_epochs),
                    jamendo_patience=getattr(args, "patience", d.jamendo_patience),
                    k=getattr(args, "k", d.k), n_trees=getattr(args, "trees", d.n_trees), progress=not args.quiet)
    for flag, value in (("--runs", params.runs), ("--gtzan-max-iter", params.gtzan_max_iter),
                        ("--jamendo-max-epochs", params.jamendo_max_epochs), ("--k", params.k),
                        ("--trees", params.n_trees)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    return params


def _run_all(args, params: Params, cache, cats) -> dict:
    models = []
    for spec in args.models:
        name, sep, d = spec.partition("=")
        if not sep or not name or not d:
            raise ConfigError(f"--models: expected NAME=EXPORT_DIR, got {spec!r}")
        models.append(load_model(name, d))
    datasets = {"gtzan": flag_pair(args, "gtzan", "gtzan_splits", "--gtzan", "--gtzan-splits"),
                "jamendo": flag_pair(args, "jamendo", "jamendo_splits", "--jamendo", "--jamendo-splits"),
                "playlists": _playlist_inputs(args)}
    if not any(datasets.values()):
        raise ConfigError("give at least one dataset: --gtzan/--gtzan-splits, --jamendo/--jamendo-splits "
                          "or --data/--melon")
    return evaluate_models(models, **datasets, out_dir=args.out, params=params, cache_dir=cache, categories=cats)


def _playlist_inputs(args):
    """``(--data, --melon)``; ``--melon`` may be left out for a folder prepared with ``--library``."""
    if args.melon is not None and args.data is None:
        raise ConfigError("--melon needs --data (the prepared folder)")
    return (args.data, args.melon) if args.data is not None else None


def _check_outputs(args) -> None:
    """--out and --cache can take files: checked (and created) before any model or dataset is read."""
    if args.out:
        files = WRITTEN_FILES if args.task == "all" else (f"{args.task}.json",)
        require_output_dir(args.out, "--out", files=files)
    if not args.no_cache:
        require_output_dir(args.cache, "--cache")


def run(args) -> dict:
    """Run the parsed command; returns the results (also written under ``--out`` when given)."""
    params = _params(args)
    _check_outputs(args)
    cache = None if args.no_cache else args.cache
    cats = [c.strip() for c in args.categories.split(",") if c.strip()] if hasattr(args, "categories") else None
    if args.task == "all":
        return _run_all(args, params, cache, cats)
    model = load_model(Path(args.model).name or "model", args.model)
    if args.task == "gtzan":
        result = evaluate_gtzan_split(read_gtzan(args.gtzan, args.splits), model, params=params, cache_dir=cache)
    elif args.task == "jamendo":
        result = evaluate_jamendo_splits(read_jamendo_categories(args.jamendo, args.splits, cats), model,
                                         params=params, cache_dir=cache)
    else:
        result = evaluate_playlist_task(read_playlist_task(args.data, args.melon), model, params=params,
                                        cache_dir=cache)
    if args.out:
        write_json(Path(args.out) / f"{args.task}.json", {"model": args.model, "params": dataclasses.asdict(params),
                                                          "result": result}, indent=1)
    return result


def _print_summary(task: str, result: dict) -> None:
    n_skipped = len({s["path"] for s in skipped_files(result)})
    skipped = f", {n_skipped} unreadable file(s) skipped" if n_skipped else ""
    if task == "gtzan":
        print(f"GTZAN accuracy: {mean_std(result, 2)} % over {len(result['runs'])} runs, "
              f"{result['n_test_tracks']} test tracks{skipped}")
    elif task == "jamendo":
        for cat, r in result.items():
            if isinstance(r, dict):
                print(f"MTG-Jamendo {cat}: macro ROC-AUC {mean_std(r, 3)} ({r['n_tags_evaluated']}/{r['n_tags']} "
                      f"tags){skipped}")
    elif task == "playlists":
        print(f"playlists: nDCG@{result['k']} {result['ndcg']:.4f}, MAP@{result['k']} {result['map']:.4f} "
              f"(random {result['random']['ndcg']:.4f} / {result['random']['map']:.4f}) "
              f"over {result['n_playlists']} playlists{skipped}")
    else:
        print(markdown(result), end="")
    if n_skipped:
        print(f"{n_skipped} unreadable input file(s) skipped (each named above); the results are partial "
              f"(exit code {EXIT_PARTIAL})", file=sys.stderr)


@cli.command
def main(argv=None) -> int:
    args = build_arg_parser().parse_args(argv)
    result = run(args)
    _print_summary(args.task, result)
    return EXIT_PARTIAL if skipped_files(result) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
