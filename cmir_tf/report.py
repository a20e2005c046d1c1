"""The downstream report: the paper's Tables 1–3 filled with a run of ``cmir_tf.evaluate``, plus plots.

``write_report(report, out_dir)`` writes ``report.json``, ``report.md`` (our figures beside the paper's,
matched by preset name) and the plots (bars per task, a 2-D map of test embeddings coloured by genre).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cmir_tf.constants import JAMENDO_CATEGORIES
from cmir_tf.fileio import atomic_write_bytes, write_json

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


def _canon(name: str) -> str:
    return name.lower().replace("-", "_").replace(" ", "_")


def _pm(v, digits, scale=1.0):
    return f"{v['mean'] * scale:.{digits}f} ± {v['std'] * scale:.{digits}f}"


def _markdown(report: dict) -> str:
    lines = ["# Downstream evaluation (paper Tables 1–3)", ""]
    if report.get("gtzan"):
        lines += ["## Table 1: GTZAN results (fault-filtered split)", "",
                  "| Model | Mean Accuracy ± STD | Paper |", "|---|---|---|"]
        for name, r in report["gtzan"].items():
            paper = PAPER["gtzan"].get(_canon(name))
            lines.append(f"| {name} | {_pm(r, 2)} | {f'{paper[0]:.2f} ± {paper[1]:.2f}' if paper else '—'} |")
        first = next(iter(report["gtzan"].values()))
        lines += ["", f"{first['n_test_tracks']} test tracks, {len(first['runs'])} runs.", ""]
    if report.get("jamendo"):
        cats = [c for c in ("genre", "moodtheme", "instrument")
                if any(c in r for r in report["jamendo"].values())]
        title = {"genre": "Genre", "moodtheme": "Mood", "instrument": "Instrument"}
        lines += ["## Table 2: Automatic tagging results (MTG-Jamendo, macro ROC AUC ± STD)", "",
                  "| Model | " + " | ".join(title[c] for c in cats) + " | Paper (" + "/".join(title[c] for c in cats) + ") |",
                  "|---|" + "---|" * (len(cats) + 1)]
        for name, r in report["jamendo"].items():
            paper = PAPER["jamendo"].get(_canon(name))
            cells = [_pm(r[c], 3) if c in r else "—" for c in cats]
            ptxt = " / ".join(f"{paper[c][0]:.3f}" for c in cats) if paper else "—"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {ptxt} |")
        lines.append("")
    if report.get("playlists"):
        res = report["playlists"]
        first = next(iter(res.values()))
        k = first["k"]
        lines += [f"## Table 3: Playlist generation results ({first['n_playlists']} playlists, "
                  f"{first['n_test_songs']} test songs)", "",
                  f"| Model | NDCG@{k} | MAP@{k} | Paper (NDCG@100 / MAP@100) |", "|---|---|---|---|"]
        p = PAPER["playlists"]["random"]
        lines.append(f"| random | {first['random']['ndcg']:.4f} | {first['random']['map']:.4f} | {p[0]:.4f} / {p[1]:.4f} |")
        for name, r in res.items():
            paper = PAPER["playlists"].get(_canon(name))
            ptxt = f"{paper[0]:.4f} / {paper[1]:.4f}" if paper else "—"
            lines.append(f"| {name} | {r['ndcg']:.4f} | {r['map']:.4f} | {ptxt} |")
        lines.append("")
    for f in report.get("plots", []):
        lines.append(f"![{Path(f).stem}]({Path(f).name})")
    return "\n".join(lines) + "\n"


def _plots(report: dict, maps: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    files = []
    panels = []  # (title, {model: (mean, std)})
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
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
        for ax, (title, vals) in zip(axes[0], panels):
            names = list(vals)
            ax.bar(range(len(names)), [vals[n][0] for n in names], yerr=[vals[n][1] for n in names], capsize=3)
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_title(title)
        fig.tight_layout()
        files.append(_savefig(fig, out / "tasks.png"))
        plt.close(fig)
    if maps:
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
        fig.tight_layout()
        files.append(_savefig(fig, out / "embedding_map.png"))
        plt.close(fig)
    return files


def _savefig(fig, path: Path) -> str:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return str(path)


def write_report(report: dict, out_dir, maps: dict | None = None) -> dict:
    """Write ``report.json``, ``report.md`` and the plots into ``out_dir`` (atomically, file by file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = _plots(report, maps or {}, out)
    write_json(out / "report.json", report, indent=1)
    atomic_write_bytes(out / "report.md", _markdown(report).encode("utf-8"))
    return report
