"""The explore page at scale: time to write it, and its load time and memory in headless Chromium; and
the projection choice (t-SNE vs PCA): neighbourhoods kept and time.

Synthetic tracks: unit vectors around 30 random centres in 128-D (noise 0.9 per dimension, so clusters
overlap as a model's genres do), one ``.mean.npy`` each, ids ``<i // 1000>/<i>``. For each N:

  write      python's ``explore.write_explorer`` (annoy index, k=10 neighbours of every track, projection,
             page) with its step times;
  page       file size; in Chromium (tests/browser.py: Debian's chromium + chromedriver, offline) the time
             from navigation to every point drawn, the JS heap after it (CDP Performance.getMetrics), and
             the time from a click on a track (select()) to its neighbours listed;
  kept@10    the share of each track's 10 nearest tracks (cosine, 128-D) that are among its 10 nearest on
             the map, over 1,000 random tracks, for t-SNE and PCA.

    python benchmarks/explore.py 100 5000 50000 [--projection tsne] [--no-browser]
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cmir_tf import explore  # noqa: E402
from cmir_tf.fileio import save_npy  # noqa: E402


def vectors(n, d=128, centres=30, seed=0):
    r = np.random.default_rng(seed)
    c = r.normal(size=(centres, d))
    x = c[r.integers(0, centres, n)] + 0.9 * r.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def kept(x, y, k=10, queries=1000, seed=1):
    from sklearn.neighbors import NearestNeighbors

    q = np.random.default_rng(seed).choice(len(x), min(len(x), queries), replace=False)
    a = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x[q], return_distance=False)[:, 1:]
    b = NearestNeighbors(n_neighbors=k + 1).fit(y).kneighbors(y[q], return_distance=False)[:, 1:]
    return float(np.mean([len(set(p) & set(r)) / k for p, r in zip(a, b)]))


def _browser_pss_mb(driver):
    """Proportional set size (shared pages split between their users) of every process under the driver,
    i.e. Chromium's memory, summed from /proc/PID/smaps_rollup (Linux)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parent[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    todo, found = [driver.service.process.pid], []
    while todo:
        pid = todo.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        found += kids
        todo += kids
    pss = 0
    for pid in found:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            pss += sum(int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:"))
        except (OSError, IndexError, ValueError):
            continue
    return round(pss / 1e6)


def in_browser(page, shot=None):
    import browser

    profile = tempfile.TemporaryDirectory(prefix="cmir-explore-profile-")
    driver = browser.chromium(profile.name)
    try:
        t = time.perf_counter()
        driver.get(Path(page).resolve().as_uri())
        driver.execute_async_script(
            "const done = arguments[0], gd = document.getElementById('map');"
            "const ready = () => gd._fullData && gd._fullLayout && gd.querySelector('.scatterlayer, .gl-container');"
            "(function wait(){ ready() ? requestAnimationFrame(() => done()) : setTimeout(wait, 20); })();")
        load = time.perf_counter() - t
        webgl = driver.execute_script("return !!document.createElement('canvas').getContext('webgl')")
        metrics = {m["name"]: m["value"] for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]} \
            if driver.execute_cdp_cmd("Performance.enable", {}) is not None else {}
        t = time.perf_counter()
        driver.execute_script("cmirSelect(0, false)")
        click = time.perf_counter() - t
        errors = driver.execute_script("return document.body.innerText.includes('WebGL is not supported')")
        drawn = driver.execute_script(
            "return document.getElementById('map')._fullData.filter(t => t.name !== 'links' && t.name !== 'selection')"
            ".reduce((n, t) => n + t.customdata.length, 0)")
        if shot:
            driver.save_screenshot(shot)
        return {"load_s": round(load, 2), "js_heap_mb": round(metrics.get("JSHeapUsedSize", 0) / 1e6, 1),
                "browser_pss_mb": _browser_pss_mb(driver), "select_s": round(click, 3), "points": drawn,
                "webgl": webgl, "webgl_error_shown": errors}
    finally:
        driver.quit()
        profile.cleanup()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sizes", nargs="+", type=int)
    p.add_argument("--projection", default="tsne", choices=("tsne", "pca"))
    p.add_argument("--no-browser", action="store_true")
    p.add_argument("--screenshot", metavar="DIR", help="save the page of each N as DIR/explore-N.png")
    p.add_argument("--quality", action="store_true", help="also compare t-SNE and PCA (kept@10, time)")
    args = p.parse_args()
    for n in args.sizes:
        x = vectors(n)
        with tempfile.TemporaryDirectory(prefix="cmir-explore-bench-") as tmp:
            for i, v in enumerate(x):
                save_npy(os.path.join(tmp, "emb", str(i // 1000), f"{i}.mean.npy"), v)
            t = time.perf_counter()
            s = explore.write_explorer(os.path.join(tmp, "emb"), os.path.join(tmp, "map"), projection=args.projection)
            total = time.perf_counter() - t
            size = os.path.getsize(s["page"]) / 1e6
            steps = ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items())
            print(f"N={n} write {total:.1f}s ({steps}) page {size:.1f} MB", flush=True)
            if not args.no_browser:
                shot = os.path.join(args.screenshot, f"explore-{n}.png") if args.screenshot else None
                print(f"  browser {in_browser(s['page'], shot)}", flush=True)
        if args.quality:
            for method in ("pca", "tsne"):
                t, c = time.perf_counter(), time.process_time()
                y = explore.project(x, method)
                print(f"  {method}: {time.perf_counter() - t:.1f}s wall {time.process_time() - c:.1f}s CPU, "
                      f"kept@10 {kept(x, y):.3f}", flush=True)


if __name__ == "__main__":
    main()
