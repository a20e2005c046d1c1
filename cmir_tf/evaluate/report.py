"""The downstream report: the paper's Tables 1–3 filled with a run of ``python -m cmir_tf.evaluate``, plus plots.

``write_report(report, out_dir, maps)`` writes ``report.json`` (the report dict as given, plus the list
of ``plots``), ``report.md`` (:func:`markdown`: our figures beside the paper's, matched by preset name
through :func:`canonical_name`, so ``Contr-CF-G`` and ``contr_cf_g`` both find Contr_CF-G's row) and the
plots: ``tasks.png`` (a bar per model and task, std as error bars) and ``embedding_map.png`` (per model,
a 2-D PCA map of test embeddings coloured by genre). Every file is written atomically.

The report dict: ``params`` (the protocol settings), ``models`` ({name: cache key}) and, for the tasks
run, ``gtzan`` / ``jamendo`` / ``playlists`` ({model name: that protocol's result}).

:func:`cmir_tf.export.reports.metrics_from_reports` reads those files back (``report.json``, or a
single-task ``<task>.json`` ``{"model", "params", "result"}``) as the paper's metric names for a model's
published metadata; the file names are spelled there (``REPORT_JSON``, ``REPORT_FILES``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.export.reports import REPORT_JSON
from cmir_tf.fileio import atomic_path, atomic_write_text, require_output_dir, write_json

__all__ = ["PAPER", "WRITTEN_FILES", "canonical_name", "mean_std", "markdown", "write_report"]

REPORT_MD, TASKS_PNG, MAP_PNG = "report.md", "tasks.png", "embedding_map.png"
WRITTEN_FILES = (REPORT_JSON, REPORT_MD, TASKS_PNG, MAP_PNG)  # every file write_report may write

# The paper's Tables 1–3 (Ferraro et al. 2021), for comparison in the report.
PAPER = {
    "gtzan": {"bline_g": (63.28, 1.19), "bline_cf": (57.12, 1.82), "bline_cf_g": (64.35, 1.10),
              "contr_g": (76.78, 1.22), "contr_cf": (67.12, 0.94), "contr_cf_g": (75.29, 1.32)},
    "jamendo": {  # (genre, moodtheme, instrument) as (mean, std)
        "bline_g": {"genre": (0.840, 0.004), "moodtheme": (0.722, 0.004), "instrument": (0.781, 0.005)},
        "bline_cf": {"genre": (0.836, 0.002), "moodtheme": (0.722, 0.003), "instrument": (0.770, 0.008)},
        "bline_cf_g": {"genre": (0.845, 0.004), "moodtheme": (0.727, 0.006), "instrument": (0.785, 0.004)},
        "contr_g": {"genre": (0.847, 0.004), "moodtheme": (0.732, 0.005), "instrument": (0.797, 0.005)},
        "contr_cf": {"genre": (0.845, 0.004), "moodtheme": (0.732, 0.004), "instrument": (0.793, 0.007)},
        "contr_cf_g": {"genre": (0.843, 0.004), "moodtheme": (0.733, 0.005), "instrument": (0.791, 0.006)}},
    "playlists": {"random": (0.0005, 0.0001), "bline_g": (0.0044, 0.0007), "bline_cf": (0.0035, 0.0007),
                  "bline_cf_g": (0.0042, 0.0008), "contr_g": (0.0074, 0.0016), "contr_cf": (0.0076, 0.0017),
                  "contr_cf_g": (0.0085, 0.0020)},  # (nDCG@100, MAP@100)
}


def canonical_name(name: str) -> str:
    """A model name as the paper's presets are keyed: lower case, ``-`` and spaces as ``_``."""
    return name.lower().replace("-", "_").replace(" ", "_")


def mean_std(v: dict, digits: int, scale: float = 1.0) -> str:
    """``"mean ± std"`` of a result with ``mean`` and ``std``, to ``digits`` decimals (times ``scale``)."""
    return f"{v['mean'] * scale:.{digits}f} ± {v['std'] * scale:.{digits}f}"


def _table1(results: dict) -> list[str]:
    lines = ["## Table 1: GTZAN results (fault-filtered split)", "",
             "| Model | Mean Accuracy ± STD | Paper |", "|---|---|---|"]
    for name, r in results.items():
        paper = PAPER["gtzan"].get(canonical_name(name))
        lines.append(f"| {name} | {mean_std(r, 2)} | {f'{paper[0]:.2f} ± {paper[1]:.2f}' if paper else '—'} |")
    first = next(iter(results.values()))
    return lines + ["", f"{first['n_test_tracks']} test tracks, {len(first['runs'])} runs.", ""]


def _table2(results: dict) -> list[str]:
    cats = [c for c in ("genre", "moodtheme", "instrument") if any(c in r for r in results.values())]
    title = {"genre": "Genre", "moodtheme": "Mood", "instrument": "Instrument"}
    lines = ["## Table 2: Automatic tagging results (MTG-Jamendo, macro ROC AUC ± STD)", "",
             "| Model | " + " | ".join(title[c] for c in cats) + " | Paper (" + "/".join(title[c] for c in cats) + ") |",
             "|---|" + "---|" * (len(cats) + 1)]
    for name, r in results.items():
        paper = PAPER["jamendo"].get(canonical_name(name))
        cells = [mean_std(r[c], 3) if c in r else "—" for c in cats]
        ptxt = " / ".join(f"{paper[c][0]:.3f}" for c in cats) if paper else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ptxt} |")
    return lines + [""]


def _table3(results: dict) -> list[str]:
    first = next(iter(results.values()))
    k = first["k"]
    lines = [f"## Table 3: Playlist generation results ({first['n_playlists']} playlists, "
             f"{first['n_test_songs']} test songs)", "",
             f"| Model | NDCG@{k} | MAP@{k} | Paper (NDCG@100 / MAP@100) |", "|---|---|---|---|"]
    p = PAPER["playlists"]["random"]
    lines.append(f"| random | {first['random']['ndcg']:.4f} | {first['random']['map']:.4f} | {p[0]:.4f} / {p[1]:.4f} |")
    for name, r in results.items():
        paper = PAPER["playlists"].get(canonical_name(name))
        ptxt = f"{paper[0]:.4f} / {paper[1]:.4f}" if paper else "—"
        lines.append(f"| {name} | {r['ndcg']:.4f} | {r['map']:.4f} | {ptxt} |")
    return lines + [""]


def markdown(report: dict) -> str:
    """The report as markdown: Tables 1–3 for the tasks it holds, then its plots as images."""
    lines = ["# Downstream evaluation (paper Tables 1–3)", ""]
    for task, table in (("gtzan", _table1), ("jamendo", _table2), ("playlists", _table3)):
        if report.get(task):
            lines += table(report[task])
    for f in report.get("plots", []):
        lines.append(f"![{Path(f).stem}]({Path(f).name})")
    return "\n".join(lines) + "\n"


def _task_panels(report: dict) -> list[tuple[str, dict]]:
    """One bar panel per task figure: ``(title, {model: (value, std)})``."""
    panels = []
    if report.get("gtzan"):
        panels.append(("GTZAN accuracy (%)", {m: (r["mean"], r["std"]) for m, r in report["gtzan"].items()}))
    for cat in JAMENDO_CATEGORIES:
        vals = {m: (r[cat]["mean"], r[cat]["std"]) for m, r in report.get("jamendo", {}).items() if cat in r}
        if vals:
            panels.append((f"Jamendo {cat} ROC-AUC", vals))
    if report.get("playlists"):
        for metric in ("ndcg", "map"):
            vals = {m: (r[metric], 0.0) for m, r in report["playlists"].items()}
            vals["random"] = (next(iter(report["playlists"].values()))["random"][metric], 0.0)
            panels.append((f"Playlists {metric.upper()}@{report['params']['k']}", vals))
    return panels


def _bars(plt, panels, path: Path) -> str:
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, vals) in zip(axes[0], panels):
        names = list(vals)
        ax.bar(range(len(names)), [vals[n][0] for n in names], yerr=[vals[n][1] for n in names], capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_title(title)
    return _savefig(plt, fig, path)


def _embedding_maps(plt, maps: dict, path: Path) -> str:
    from sklearn.decomposition import PCA

    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 4.5), squeeze=False)
    for ax, (name, (dataset, items)) in zip(axes[0], maps.items()):
        x = np.stack([v for v, _ in items])
        labels = [lab for _, lab in items]
        xy = PCA(n_components=2, random_state=0).fit_transform(x) if len(x) > 2 else np.zeros((len(x), 2))
        for lab in sorted(set(labels), key=str):
            sel = [i for i, g in enumerate(labels) if g == lab]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, label=str(lab))
        ax.set_title(f"{name}: {dataset} test embeddings (PCA)")
        ax.legend(fontsize=6, markerscale=1.5)
    return _savefig(plt, fig, path)


def _savefig(plt, fig, path: Path) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:  # the temporary name keeps .png: matplotlib infers the format
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return str(path)


def _plots(report: dict, maps: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    panels = _task_panels(report)
    if panels:
        files.append(_bars(plt, panels, out / TASKS_PNG))
    if maps:
        files.append(_embedding_maps(plt, maps, out / MAP_PNG))
    return files


def write_report(report: dict, out_dir, maps: dict | None = None) -> dict:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir`` (atomically, file by file).

    ``maps``: ``{model name: (dataset name, [(test embedding (D,), label)])}`` for ``embedding_map.png``.
    Returns ``report`` with ``plots`` (the image paths) added.
    """
    out = Path(require_output_dir(out_dir, "report folder", files=WRITTEN_FILES))
    report["plots"] = _plots(report, maps or {}, out)
    write_json(out / REPORT_JSON, report, indent=1)
    atomic_write_text(out / REPORT_MD, markdown(report))
    return report
