"""Downstream evaluation (paper sec. 3.3, Tables 1–3): several models on several datasets as one report.

Each protocol lives in the module named after it, with its dataset reader: :mod:`cmir_tf.evaluate.gtzan` (genre
classification), :mod:`cmir_tf.evaluate.jamendo` (tagging), :mod:`cmir_tf.evaluate.playlists` (playlist continuation);
they embed every track once per model through :mod:`cmir_tf.evaluate.cache` and share :class:`~cmir_tf.evaluate.downstream.Params`.
Here: :func:`evaluate_models` (every model on every dataset given, then :func:`cmir_tf.evaluate.report.write_report`)
and the command line (``evaluate/__main__.py``), which runs one protocol for one export folder or ``all``
of them for several::

    python -m cmir_tf.evaluate gtzan --model export/ --gtzan GTZAN --splits gtzan_splits
    python -m cmir_tf.evaluate jamendo --model export/ --jamendo AUDIO --splits MTG/data/splits/split-0
    python -m cmir_tf.evaluate playlists --model export/ --data prepared/ --melon MELON
    python -m cmir_tf.evaluate playlists --model export/ --data prepared_library/   # prepare --library
    python -m cmir_tf.evaluate all --models contr_cf_g=exp1 contr_g=exp2 --gtzan GTZAN \\
        --gtzan-splits S --jamendo AUDIO --jamendo-splits MTG/data/splits/split-0 --data prep --melon melon \\
        --out report/

A single task prints a one-line summary and, with ``--out``, writes ``OUT/<task>.json`` (``{"model",
"params", "result"}``); ``all`` prints the report's markdown and, with ``--out``, writes ``report.json``,
``report.md``, ``tasks.png`` and ``embedding_map.png``.

Order of work: the output locations (``--out``, ``--cache``) are checked first (created, written to
once), then the models are found, then every dataset list is read and checked, and only then is
anything embedded — so a bad flag, folder or list costs seconds, not hours. Errors a user can cause end
as one ``error:`` line with exit code 2 (``cmir_tf.cli``). An input file that cannot be decoded is
skipped with one ``skipped`` line on stderr, listed under ``skipped`` in the results and counted in the
summary; the run then exits with code 1 (results are partial), else 0.
"""
from __future__ import annotations

import dataclasses

from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.errors import ConfigError
from cmir_tf.evaluate.cache import Model
from cmir_tf.evaluate.downstream import Params
from cmir_tf.evaluate.gtzan import evaluate_gtzan_split, read_gtzan
from cmir_tf.evaluate.jamendo import evaluate_jamendo_splits, read_jamendo_categories
from cmir_tf.evaluate.playlists import evaluate_playlist_task, folder_labels, major_genre_labels, read_playlist_task
from cmir_tf.evaluate.report import WRITTEN_FILES, write_report
from cmir_tf.fileio import require_output_dir

__all__ = ["evaluate_models", "read_datasets", "skipped_files"]


def read_datasets(*, gtzan=None, jamendo=None, playlists=None, categories=JAMENDO_CATEGORIES) -> dict:
    """Read and check every dataset given (lists, TSVs, playlists; no audio is decoded) → ``{"gtzan":
    split, "jamendo": {category: split}, "playlists": task}`` for those given. Any fault in any of them
    is raised here, before anything is embedded."""
    return {**({"gtzan": read_gtzan(*gtzan)} if gtzan else {}),
            **({"jamendo": read_jamendo_categories(*jamendo, categories)} if jamendo else {}),
            **({"playlists": read_playlist_task(*playlists)} if playlists else {})}


def evaluate_models(models: list[Model], *, gtzan=None, jamendo=None, playlists=None, out_dir=None,
                    params: Params = Params(), cache_dir=None, categories=JAMENDO_CATEGORIES) -> dict:
    """Every model on every dataset given: ``gtzan=(dir, splits)``, ``jamendo=(dir, splits)``,
    ``playlists=(prepared dir, melon dir or None for a library folder)``; with ``out_dir`` the report
    (Tables 1–3, plots) is written.

    The report folder and every dataset are checked (:func:`read_datasets`) before the first model
    embeds anything. The embedding map shows each model's GTZAN test tracks by genre, else (playlists
    only) its Melon test songs by their first major genre (a library's: by their folder)."""
    if not models:
        raise ConfigError("evaluate_models: give at least one model")
    if len({m.name for m in models}) != len(models):
        raise ConfigError(f"model names must be unique, got {', '.join(m.name for m in models)}")
    if not (gtzan or jamendo or playlists):
        raise ConfigError("evaluate_models: give at least one dataset (gtzan, jamendo or playlists)")
    if out_dir is not None:
        require_output_dir(out_dir, "report folder", files=WRITTEN_FILES)
    data = read_datasets(gtzan=gtzan, jamendo=jamendo, playlists=playlists, categories=categories)
    report = {"params": dataclasses.asdict(params), "models": {m.name: m.key for m in models}}
    maps = {}
    for m in models:
        keep = {}
        for task, run_task in (("gtzan", evaluate_gtzan_split), ("jamendo", evaluate_jamendo_splits),
                               ("playlists", evaluate_playlist_task)):
            if task in data:
                extra = {} if task == "jamendo" else {"keep_embeddings": keep}
                report.setdefault(task, {})[m.name] = run_task(data[task], m, params=params, cache_dir=cache_dir,
                                                               **extra)
        if "gtzan" in keep:
            maps[m.name] = ("GTZAN", keep["gtzan"])
        elif "melon" in keep:
            maps[m.name] = ("Melon", major_genre_labels(playlists[1], keep["melon"]))
        elif "library" in keep:
            maps[m.name] = ("library", folder_labels(data["playlists"]["names"], keep["library"]))
    if out_dir is not None:
        write_report(report, out_dir, maps)
    return report


def skipped_files(result) -> list[dict]:
    """Every ``{path, reason}`` listed under a ``skipped`` key of a task result or a report."""
    if isinstance(result, dict):
        found = list(result.get("skipped", [])) if isinstance(result.get("skipped"), list) else []
        return found + [s for k, v in result.items() if k != "skipped" for s in skipped_files(v)]
    return []
