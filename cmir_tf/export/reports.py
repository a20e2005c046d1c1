"""Evaluation reports read back as the metrics of a model's published metadata.

``python -m cmir_tf.evaluate`` writes ``report.json`` (``all``: several models and tasks) or one
``<task>.json`` per single task (``{"model", "params", "result"}``; :mod:`cmir_tf.evaluate.report`);
an export (``--report FILE``, or the files a run keeps in ``eval/``) reads them with
:func:`metrics_from_reports` into the paper's metric names (GTZAN accuracy, MTG-Jamendo ROC-AUC per
category, Melon playlists nDCG@k / MAP@k) for the Essentia zoo JSON (:mod:`cmir_tf.export.zoo`).
The file names are spelled here, where both the writer and the reader find them.
"""
from __future__ import annotations

import os

from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.errors import DataError, ExportError
from cmir_tf.fileio import read_json

__all__ = ["REPORT_JSON", "REPORT_FILES", "metrics_from_reports", "run_report_files"]

REPORT_JSON = "report.json"  # python -m cmir_tf.evaluate all
REPORT_FILES = (REPORT_JSON, "gtzan.json", "jamendo.json", "playlists.json")  # evaluate's outputs


def _round(x):
    return float(f"{float(x):.5g}")


def _task_metrics(task, result):
    """The zoo-style {metric name: value} of one evaluation result (the paper's metrics)."""
    out, spread = {}, {}
    if task == "gtzan":
        out["GTZAN accuracy"] = _round(result["mean"] / 100.0)  # the report holds percent; the zoo fractions
        spread["GTZAN accuracy"] = _round(result["std"] / 100.0)
    elif task == "jamendo":
        label = {"genre": "genre", "moodtheme": "mood/theme", "instrument": "instrument"}
        for cat in JAMENDO_CATEGORIES:
            if isinstance(result.get(cat), dict) and "mean" in result[cat]:
                key = f"MTG-Jamendo {label[cat]} ROC-AUC"
                out[key], spread[key] = _round(result[cat]["mean"]), _round(result[cat]["std"])
    elif task == "playlists":
        k = int(result.get("k", 100))
        out[f"Melon playlists nDCG@{k}"] = _round(result["ndcg"])
        out[f"Melon playlists MAP@{k}"] = _round(result["map"])
    return out, spread


def _task_of(result):
    if not isinstance(result, dict):
        return None
    if "ndcg" in result and "map" in result:
        return "playlists"
    if "mean" in result and "n_test_tracks" in result:
        return "gtzan"
    if any(isinstance(result.get(c), dict) and "mean" in result[c] for c in JAMENDO_CATEGORIES):
        return "jamendo"
    return None


def _pick_model(names, path, model, candidates):
    if model is not None:
        if model not in names:
            raise ExportError(f"{path}: no model {model!r} in the report (it has {', '.join(sorted(names))})")
        return model
    if len(names) == 1:
        return next(iter(names))
    for c in candidates:
        if c in names:
            return c
    raise ExportError(f"{path}: the report compares {', '.join(sorted(names))}; name the one this export is "
                      "with --report-model NAME")


def metrics_from_reports(paths, *, model=None, candidates=()):
    """Read evaluation reports → (metrics {name: value}, source {files, model, std}).

    A path is a ``report.json`` of ``python -m cmir_tf.evaluate all`` (several models: MODEL, else the
    only one, else the first of CANDIDATES the report has) or the ``<task>.json`` of a single-task run
    (``gtzan``, ``jamendo``, ``playlists``). When two files give the same metric, the newer file's
    value is used. Raises ExportError for an unreadable file or an ambiguous model.
    """
    metrics, spread, files, chosen = {}, {}, [], set()
    dated = []
    for path in paths:
        path = os.fspath(path)
        try:
            data = read_json(path, "evaluation report")
            dated.append((os.stat(path).st_mtime_ns, path, data))
        except (DataError, OSError) as e:
            raise ExportError(str(e)) from None
    for _, path, data in sorted(dated, key=lambda t: t[0]):  # oldest first: newer values overwrite
        found = {}
        if isinstance(data, dict) and isinstance(data.get("result"), dict):  # <task>.json
            task = _task_of(data["result"])
            if task:
                found = dict(zip(("m", "s"), _task_metrics(task, data["result"])))
        elif isinstance(data, dict) and any(t in data for t in ("gtzan", "jamendo", "playlists")):  # report.json
            names = set(data.get("models") or {})
            for t in ("gtzan", "jamendo", "playlists"):
                names |= set(data.get(t) or {})
            name = _pick_model(names, path, model, candidates)
            chosen.add(name)
            found = {"m": {}, "s": {}}
            for t in ("gtzan", "jamendo", "playlists"):
                if name in (data.get(t) or {}):
                    m, s = _task_metrics(t, data[t][name])
                    found["m"].update(m)
                    found["s"].update(s)
        if not found or not found["m"]:
            raise ExportError(f"{path}: not an evaluation report of python -m cmir_tf.evaluate "
                              "(report.json or gtzan/jamendo/playlists.json)")
        metrics.update(found["m"])
        spread.update(found["s"])
        files.append(os.path.basename(path))
    source = {"files": files}
    if chosen:
        source["model"] = sorted(chosen)[0] if len(chosen) == 1 else sorted(chosen)
    if spread:
        source["std"] = spread
    return metrics, source


def run_report_files(run) -> list[str]:
    """The evaluation reports kept with a run (a :class:`cmir_tf.train.rundir.RunDir`): its ``eval/``
    folder's report.json and single-task files, those present."""
    folder = run.path / run.EVAL
    return [str(folder / f) for f in REPORT_FILES if (folder / f).is_file()]
