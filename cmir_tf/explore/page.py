"""An interactive map of a folder of embeddings: one self-contained HTML page to look at what a model learned.

    python -m cmir_tf.explore EMB_DIR --out map/ [--melon MELON] [--prepared PREPARED] [--audio MUSIC]
                              [--color genre|artist|album|playlist|split|plain] [-k 10]

writes ``map/index.html``: Plotly's JavaScript and the data are inlined, so the page opens from the file
system (``file://``) with no server and no network. Every track of EMB_DIR (the folder ``python -m
cmir_tf.embed.embedder`` writes, read as ``cmir_tf.similar.index`` reads it) is a point on a 2-D map of its embedding
(:func:`project`), coloured by a field; hovering names the track; clicking a point (or a search result,
or a listed neighbour) lists its ``k`` nearest tracks by cosine — computed by ``similar``'s own
:meth:`~cmir_tf.similar.index.SimilarityIndex.query_id` over an index built as ``similar`` builds it (same
trees and seed, or the same saved ``--index`` file), so the page shows exactly
what ``python -m cmir_tf.similar EMB_DIR --id ID -k K`` prints — draws lines to them, and plays the track
and its neighbours when ``--audio`` holds their files (found by the track id, linked by a path relative to
the page: keep the page and the music where they are, or move them together). A search box finds a
track by name (or id).

Names and fields come from, in this order: a Melon folder's ``song_meta.json`` (a track id whose last
part is a song id: ``12/12345``) — name, artist, album, genre (major, named by ``genre_gn_all.json``) and
the largest of the map's playlists it is in (``train/val/test.json``); a prepared folder — its split
(``splits.json``; a folder prepared from a library matches a track id to its song by the file's path,
``library_ids.json``, and adds the largest of the library's playlists or albums it is in); the tags of the audio files under ``--audio``
(title, artist, album, genre, as libsndfile reads them); else the track id. A field no source gives is
"unknown". The legend shows the :data:`LEGEND_MAX` largest values, the rest are drawn grey as "other".

Scale: up to :data:`SVG_LIMIT` points are drawn as SVG, more with WebGL (``scattergl``). Beyond
``--max-points`` (default :data:`MAX_POINTS`) a seeded uniform sample is drawn; the neighbours are
still searched among all tracks (listed, marked "not drawn"). Measured figures are in the README
("Exploring embeddings").
"""
from __future__ import annotations

import html
import json
import os
import time
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np

from cmir_tf.errors import ConfigError
from cmir_tf.fileio import atomic_write_text, require_output_dir
from cmir_tf.similar.index import DEFAULT_TREES, load_embedding_folder, open_index

__all__ = ["FIELDS", "project", "track_info", "neighbours", "audio_links", "write_explorer"]

FIELDS = ("genre", "artist", "album", "playlist", "split", "plain")
DEFAULT_K = 10
MAX_POINTS = 50_000
SVG_LIMIT = 3_000
LEGEND_MAX = 20
TSNE_SAMPLE = 2_000  # t-SNE runs on at most this many tracks; the others are placed by their neighbours
UNKNOWN, OTHER = "unknown", "other"
AUDIO_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg")  # what embed reads and a browser plays


# ----------------------------------------------------------------------------------------- projection
def project(vectors: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """``(N, D)`` track vectors → ``(N, 2)`` map coordinates, scaled into [-1, 1].

    ``"tsne"``: scikit-learn's t-SNE (cosine, PCA start) on at most :data:`TSNE_SAMPLE` tracks (a
    seeded sample); every other track is placed at the distance-weighted mean of its 5 nearest sampled
    tracks (cosine). ``"pca"``: the first two principal components of the unit vectors.
    """
    x = np.asarray(vectors, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    if n < 4:  # too few for either method to mean anything
        return np.pad(x[:, :2], ((0, 0), (0, max(0, 2 - x.shape[1]))))
    if method not in ("tsne", "pca"):
        raise ConfigError(f"projection {method!r}: choose tsne or pca")
    from threadpoolctl import threadpool_limits

    # one thread: scikit-learn's OpenMP threads spin while they wait, so on a busy machine t-SNE took
    # 25x the CPU time with them (measured: 300 tracks, 2 cores under load, 29 s of CPU against 0.9 s)
    with threadpool_limits(1):
        if method == "pca":
            from sklearn.decomposition import PCA

            y = PCA(2, random_state=seed).fit_transform(x)
        else:
            y = _tsne(x, seed)
    y = y - y.mean(axis=0)
    return (y / (np.abs(y).max() or 1.0)).astype(np.float32)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    sample = np.sort(np.random.default_rng(seed).choice(n, TSNE_SAMPLE, replace=False)) if n > TSNE_SAMPLE \
        else np.arange(n)
    perplexity = min(30.0, (len(sample) - 1) / 3.0)
    fitted = TSNE(2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed,
                  n_jobs=1).fit_transform(x[sample])
    if len(sample) == n:
        return fitted
    dist, near = NearestNeighbors(n_neighbors=5, metric="cosine").fit(x[sample]).kneighbors(x)
    weight = 1.0 / (dist + 1e-3)
    y = (fitted[near] * (weight / weight.sum(axis=1, keepdims=True))[..., None]).sum(axis=1)
    y[sample] = fitted
    return y


# ------------------------------------------------------------------------------------------ metadata
def _song_id(track_id: str) -> int | None:
    last = track_id.rsplit("/", 1)[-1]
    return int(last) if last.isdigit() and len(last) < 19 else None


def _melon_info(ids: list[str], melon) -> dict[str, list]:
    """Name and fields of the tracks whose id names a song of ``melon``'s ``song_meta.json``."""
    from cmir_tf.data.melon import PLAYLIST_FILES, MelonLayout, read_genres, read_playlists, read_song_meta

    layout = MelonLayout(melon)
    songs, _ = read_song_meta(layout.song_meta)
    genres = read_genres(layout.genres) if os.path.isfile(layout.genres) else {}
    sid = [_song_id(i) for i in ids]
    rows = {s: r for r, s in enumerate(sid) if s in songs}
    info = {f: [None] * len(ids) for f in ("name", "artist", "album", "genre", "playlist")}
    for s, r in rows.items():
        song = songs[s]
        artist = ", ".join(map(str, song.artist_name_basket))
        info["name"][r] = f"{song.song_name or s} — {artist}" if artist else (song.song_name or str(s))
        info["artist"][r] = artist or None
        info["album"][r] = song.album_name or (f"album {song.album_id}" if song.album_id is not None else None)
        info["genre"][r] = genres.get(song.major[0], song.major[0]) if song.major else None
    best = {}  # row -> (songs of its playlist on the map, -playlist id, title)
    for name in PLAYLIST_FILES:
        if os.path.isfile(layout.playlists(name)):
            for p in read_playlists(layout.playlists(name)):
                here = [rows[s] for s in p["songs"] if s in rows]
                key = (len(here), -p["id"], p["plylst_title"] or f"playlist {p['id']}")
                for r in here:
                    best[r] = max(best.get(r, key), key)
    for r, key in best.items():
        info["playlist"][r] = key[2]
    return info


def _library_song_ids(ids: list[str], paths: dict[int, str]) -> list[int | None]:
    """Each track id's song in a library's ``{song id: path}``: the id is the file's path without its
    extension (as ``embed`` names it), relative to the library or to any folder in or above it (the
    longest match wins; a tail two songs share names neither)."""
    by_tail: dict[str, int | None] = {}
    for sid, path in paths.items():
        parts = os.path.splitext(path)[0].split(os.sep)
        for k in range(1, len(parts) + 1):
            tail = "/".join(parts[-k:])
            by_tail[tail] = sid if by_tail.get(tail, sid) == sid else None
    out = []
    for track in ids:
        parts = track.split("/")
        out.append(next((by_tail[t] for t in ("/".join(parts[j:]) for j in range(len(parts))) if t in by_tail
                         and by_tail[t] is not None), None))
    return out


def _prepared_info(ids: list[str], prepared) -> dict[str, list]:
    """Each track's split in a prepared folder's ``splits.json`` (None when it holds no such song); for a
    folder prepared from a library (``library_ids.json``), tracks are matched by their file's path and also
    get the largest of the library's playlists (or albums) they are in."""
    from cmir_tf.data.prepared import LIBRARY_PLAYLISTS, PreparedData

    data = PreparedData(prepared)
    split_of = {s: name for name, songs in data.read_splits().items() for s in songs}
    paths = data.read_library_songs()
    if paths is None:
        return {"split": [split_of.get(_song_id(i)) for i in ids]}
    sid = _library_song_ids(ids, paths)
    best = {}  # song -> (size of its largest playlist, name)
    if os.path.isfile(data.path(LIBRARY_PLAYLISTS)):
        _, lists, names = data.read_library_playlists()
        for songs, name in zip(lists, names):
            for s in songs:
                best[s] = max(best.get(s, (0, "")), (len(songs), name))
    return {"split": [split_of.get(s) for s in sid], "playlist": [best.get(s, (0, None))[1] for s in sid]}


def _tag_info(ids: list[str], files: list[str | None]) -> dict[str, list]:
    """Title (with artist), artist, album and genre from the tags libsndfile reads in the audio files."""
    import soundfile

    info = {f: [None] * len(ids) for f in ("name", "artist", "album", "genre")}
    for r, path in enumerate(files):
        if path is None:
            continue
        try:
            with soundfile.SoundFile(path) as f:
                tags = f.copy_metadata()
        except (RuntimeError, OSError, TypeError, ValueError):  # libsndfile cannot open it (mp3 on old ones)
            continue
        artist = tags.get("artist") or None
        if tags.get("title"):
            info["name"][r] = f"{tags['title']} — {artist}" if artist else tags["title"]
        info["artist"][r], info["album"][r], info["genre"][r] = artist, tags.get("album"), tags.get("genre")
    return info


def track_info(ids: list[str], *, melon=None, prepared=None, audio_files=None) -> dict[str, list[str]]:
    """``{"name": [...], field: [...] for field in FIELDS}``, one entry per id (see the module doc)."""
    sources = []
    if melon is not None:
        sources.append(_melon_info(ids, melon))
    if prepared is not None:
        sources.append(_prepared_info(ids, prepared))
    if audio_files is not None:
        sources.append(_tag_info(ids, audio_files))
    out = {"name": list(ids), "plain": ["all tracks"] * len(ids)}
    for field in ("name", *FIELDS[:-1]):
        values = [next((s[field][r] for s in sources if field in s and s[field][r]), None) for r in range(len(ids))]
        out[field] = [v or (ids[r] if field == "name" else UNKNOWN) for r, v in enumerate(values)]
    return out


def audio_links(ids: list[str], audio_dir, out_dir) -> tuple[list[str | None], list[str | None]]:
    """``(files, links)``: each track's audio file under ``audio_dir`` (its id + an audio extension, as
    ``python -m cmir_tf.embed`` named it from that folder; or its file name alone when unambiguous) and
    that file's URL relative to ``out_dir``; None where there is none."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise ConfigError(f"{audio_dir}: audio folder does not exist")
    by_id, by_name = {}, Counter()
    for root, _, names in os.walk(audio_dir):
        for n in names:
            stem, ext = os.path.splitext(n)
            if ext.lower() in AUDIO_EXTENSIONS:
                rel = Path(root, stem).relative_to(audio_dir).as_posix()
                by_id.setdefault(rel, os.path.join(root, n))
                by_name[stem] += 1
    names = {rel.rsplit("/", 1)[-1]: f for rel, f in by_id.items() if by_name[rel.rsplit("/", 1)[-1]] == 1}
    files = [by_id.get(i) or names.get(i.rsplit("/", 1)[-1]) for i in ids]
    return files, [_relative_url(f, out_dir) if f else None for f in files]


def _relative_url(path: str, out_dir) -> str | None:
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir))
    except ValueError:  # another drive (Windows): no relative path
        return None
    return urllib.parse.quote(Path(rel).as_posix())


def neighbours(index, ids: list[str], rows, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """For each row of ``rows``: its ``k`` nearest tracks as rows of ``ids`` and their cosines, from
    ``similar``'s :meth:`SimilarityIndex.query_id` (what ``python -m cmir_tf.similar --id`` prints)."""
    row_of = {t: r for r, t in enumerate(ids)}
    near, score = [], []
    for r in rows:
        hits = index.query_id(ids[r], k)
        near.append([row_of[t] for t, _ in hits])
        score.append([round(s, 6) for _, s in hits])
    return near, score


# ---------------------------------------------------------------------------------------------- page
def _figure(xy: np.ndarray, names: list[str], labels: list[str], drawn: list[int], field: str, title: str):
    """The Plotly figure of the page's ``drawn`` rows: one trace per legend value (largest first, the
    tail as grey "other"), each point's ``customdata`` its row in the page's data; then the two (empty)
    traces a click fills (lines to the neighbours, rings around them)."""
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    counts = Counter(labels[r] for r in drawn)
    shown = [v for v, _ in counts.most_common() if v not in (UNKNOWN, OTHER)][:LEGEND_MAX]
    palette = qualitative.Plotly if len(shown) <= 10 else qualitative.Dark24
    colour = {v: palette[i % len(palette)] for i, v in enumerate(shown)}
    group = {r: labels[r] if labels[r] in colour else (UNKNOWN if labels[r] == UNKNOWN else OTHER) for r in drawn}
    n = len(drawn)
    scatter = go.Scattergl if n > SVG_LIMIT else go.Scatter
    size = 10 if n <= 300 else 6 if n <= SVG_LIMIT else 3
    fig = go.Figure()
    for value in [*shown, OTHER, UNKNOWN]:
        rows = np.array([r for r in drawn if group[r] == value], np.int64)
        if len(rows):
            fig.add_trace(scatter(
                x=xy[rows, 0], y=xy[rows, 1], mode="markers", customdata=rows, hovertext=[names[r] for r in rows],
                name=f"{value} ({len(rows)})", hovertemplate="%{hovertext}<extra></extra>",
                marker=dict(size=size, color=colour.get(value, "#b8b8b8"), opacity=0.85,
                            line=dict(width=0.5 if n <= SVG_LIMIT else 0, color="white"))))
    fig.add_trace(go.Scatter(x=[], y=[], mode="lines", hoverinfo="skip", showlegend=False, name="links",
                             line=dict(color="rgba(40,40,40,0.45)", width=1)))
    fig.add_trace(go.Scatter(x=[], y=[], mode="markers", showlegend=False, name="selection", customdata=[],
                             hovertext=[], hovertemplate="%{hovertext}<extra></extra>",
                             marker=dict(size=[], symbol=[], color="black", line=dict(width=2.5))))
    axis = dict(showticklabels=False, showgrid=False, zeroline=False, title=None)
    fig.update_layout(template="plotly_white", title=dict(text=title, x=0.01, font=dict(size=15)),
                      legend=dict(title=dict(text=field), itemsizing="constant"), xaxis=axis,
                      yaxis=axis, margin=dict(l=10, r=10, t=40, b=10),
                      hovermode="closest", dragmode="pan", uirevision="map")
    return fig


def _json_script(obj) -> str:
    """JSON safe inside a <script> element (no ``</script>`` can end it early)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def page_html(fig, data: dict, title: str) -> str:
    """The whole page: Plotly's JavaScript inlined, the figure, the track data and the panel's script."""
    plot = fig.to_html(full_html=False, include_plotlyjs=True, div_id="map",
                       config={"responsive": True, "scrollZoom": True, "displaylogo": False})
    return (_PAGE.replace("%TITLE%", html.escape(title)).replace("%PLOT%", plot)
            .replace("%DATA%", _json_script(data)).replace("%SCRIPT%", _SCRIPT))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>%TITLE%</title>
<style>
/* the panel comes first in the page so that its width is known when Plotly sizes the map */
body{margin:0;font:14px system-ui,sans-serif;display:flex;height:100vh;color:#222}
#plot{order:1;flex:1;min-width:0}#plot>div,#map{height:100%}
#panel{order:2;flex:none;width:340px;padding:10px 12px;overflow-y:auto;border-left:1px solid #ddd;background:#fafafa}
#search{width:100%;box-sizing:border-box;padding:6px;font-size:14px}
ul,ol{padding-left:22px;margin:6px 0}li{margin:3px 0;cursor:pointer}li:hover{text-decoration:underline}
li.undrawn{color:#888;cursor:default}li.undrawn:hover{text-decoration:none}
.score{color:#666;font-variant-numeric:tabular-nums}audio{width:100%;height:30px;margin-top:2px}
h3{margin:12px 0 4px;font-size:15px}.hint{color:#666;font-size:12px}
</style></head><body>
<div id="panel">
<input id="search" type="search" placeholder="Find a track by name…" autocomplete="off">
<ul id="matches"></ul>
<div id="selected"><p class="hint">Click a point to list its nearest tracks (cosine, as
<code>python -m cmir_tf.similar</code> gives them) and play them when their audio is linked.
Scroll to zoom, drag to pan, double-click to reset; click a legend entry to hide it.</p></div>
</div>
<div id="plot">%PLOT%</div>
<script type="application/json" id="cmir-data">%DATA%</script>
<script>%SCRIPT%</script>
</body></html>
"""

_SCRIPT = r"""
const D = JSON.parse(document.getElementById('cmir-data').textContent);
const gd = document.getElementById('map');
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text; return e; };
function player(row) {
  if (!D.audio || !D.audio[row]) return null;
  const a = el('audio'); a.controls = true; a.preload = 'none'; a.src = D.audio[row];
  a.addEventListener('play', () => document.querySelectorAll('audio').forEach(o => { if (o !== a) o.pause(); }));
  return a;
}
function select(row, play) {
  const box = document.getElementById('selected'); box.replaceChildren(); box.dataset.id = D.ids[row];
  box.append(el('h3', 'name', D.names[row]), el('div', 'hint', D.ids[row] + ' · ' + D.field + ': ' + D.labels[row]));
  const a = player(row); if (a) { box.append(a); if (play) a.play().catch(() => {}); }
  const near = D.near[row] || [], score = D.score[row] || [];
  box.append(el('h3', null, near.length + ' nearest tracks'));
  const list = el('ol', 'neighbours');
  near.forEach((r, i) => {
    const li = el('li', 'nbr' + (D.drawn[r] ? '' : ' undrawn')); li.dataset.id = D.ids[r]; li.dataset.score = score[i];
    li.append(el('span', 'score', score[i].toFixed(3) + ' '), el('span', 'name', D.names[r]));
    if (!D.drawn[r]) li.append(el('span', 'hint', ' (not drawn)'));
    else li.addEventListener('click', () => select(r, true));
    const p = player(r); if (p) li.append(p);
    list.append(li);
  });
  box.append(list);
  const lx = [], ly = [], drawn = [row, ...near.filter(r => D.drawn[r])];
  drawn.slice(1).forEach(r => { lx.push(D.x[row], D.x[r], null); ly.push(D.y[row], D.y[r], null); });
  const n = gd.data.length;
  Plotly.restyle(gd, {x: [lx, drawn.map(r => D.x[r])], y: [ly, drawn.map(r => D.y[r])],
    customdata: [null, drawn], hovertext: [null, drawn.map(r => D.names[r])],
    'marker.size': [null, drawn.map((r, i) => i ? 13 : 20)],
    'marker.symbol': [null, drawn.map((r, i) => i ? 'circle-open' : 'star-open')]}, [n - 2, n - 1]);
}
gd.on('plotly_click', ev => { const p = ev.points && ev.points[0];
  if (p && p.customdata !== undefined && p.customdata !== null) select(Number(p.customdata), false); });
const search = document.getElementById('search'), matches = document.getElementById('matches');
const lower = D.names.map((s, r) => (s + ' ' + D.ids[r]).toLowerCase());
function find() {
  const q = search.value.trim().toLowerCase(); matches.replaceChildren(); if (!q) return [];
  const found = [];
  for (let r = 0; r < lower.length && found.length < 30; r++) if (D.drawn[r] && lower[r].includes(q)) found.push(r);
  found.forEach(r => { const li = el('li', 'match', D.names[r]); li.dataset.id = D.ids[r];
    li.addEventListener('click', () => select(r, false)); matches.append(li); });
  if (!found.length) matches.append(el('li', 'hint', 'no track matches'));
  return found;
}
search.addEventListener('input', find);
search.addEventListener('keydown', e => { if (e.key === 'Enter') { const f = find(); if (f.length) select(f[0], false); } });
window.cmirSelect = select;
"""


# ------------------------------------------------------------------------------------------ the whole
def _coords(values: np.ndarray) -> list:
    return [round(float(v), 5) if np.isfinite(v) else None for v in values]


def _drawn_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def write_explorer(folder, out, *, k: int = DEFAULT_K, color: str = "plain", melon=None, prepared=None,
                   audio=None, projection: str = "tsne", index_path=None, n_trees: int = DEFAULT_TREES,
                   max_points: int = MAX_POINTS, seed: int = 0, log=None) -> dict:
    """Write ``out/index.html`` for the embedding folder ``folder`` (see the module doc); return a summary
    ``{"page", "tracks", "drawn", "projection", "seconds": {step: s}}``."""
    _check_options(k, color, projection, max_points, melon, prepared)
    require_output_dir(out, "output folder")
    seconds, t = {}, time.perf_counter()
    ids, vectors = load_embedding_folder(folder)
    index = open_index(folder, index_path, n_trees=n_trees)  # the index `similar` builds or reuses
    seconds["read"], t = time.perf_counter() - t, time.perf_counter()
    drawn = _drawn_rows(len(ids), max_points, seed)
    near, score = neighbours(index, ids, drawn, k)
    seconds["neighbours"], t = time.perf_counter() - t, time.perf_counter()
    keep = sorted(set(drawn.tolist()).union(*map(set, near)))  # drawn tracks and their neighbours
    new = {r: i for i, r in enumerate(keep)}
    page_ids = [ids[r] for r in keep]
    files, links = audio_links(page_ids, audio, out) if audio is not None else (None, None)
    info = track_info(page_ids, melon=melon, prepared=prepared, audio_files=files)
    seconds["metadata"], t = time.perf_counter() - t, time.perf_counter()
    xy = np.full((len(keep), 2), np.nan, np.float32)
    xy[[new[r] for r in drawn]] = project(vectors[drawn], projection, seed)
    seconds["projection"], t = time.perf_counter() - t, time.perf_counter()
    shown = [new[r] for r in drawn]
    data = {"ids": page_ids, "names": info["name"], "labels": info[color], "field": color, "k": k,
            "x": _coords(xy[:, 0]), "y": _coords(xy[:, 1]), "drawn": [bool(v) for v in np.isfinite(xy[:, 0])],
            "near": [None] * len(keep), "score": [None] * len(keep), "audio": links}
    for r, nr, sc in zip(shown, near, score):
        data["near"][r], data["score"][r] = [new[i] for i in nr], sc
    title = (f"{len(drawn)} tracks of {Path(folder).name or folder}"
             + (f" (a sample of {len(ids)})" if len(drawn) < len(ids) else "")
             + f" · {projection.upper() if projection == 'pca' else 't-SNE'} of the embeddings · colour: {color}")
    fig = _figure(xy, info["name"], info[color], shown, color, title)
    page = Path(out) / "index.html"
    atomic_write_text(page, page_html(fig, data, title))
    seconds["page"] = time.perf_counter() - t
    if log is not None:
        print(f"{page}: {len(drawn)} of {len(ids)} tracks drawn, {k} neighbours each; "
              + ", ".join(f"{s} {v:.1f}s" for s, v in seconds.items()), file=log)
    return {"page": str(page), "tracks": len(ids), "drawn": len(drawn), "projection": projection, "seconds": seconds}


def _check_options(k, color, projection, max_points, melon, prepared) -> None:
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if max_points < 1:
        raise ConfigError(f"the maximum number of points must be at least 1, got {max_points}")
    if color not in FIELDS:
        raise ConfigError(f"colour field {color!r}: choose one of {', '.join(FIELDS)}")
    if projection not in ("tsne", "pca"):
        raise ConfigError(f"projection {projection!r}: choose tsne or pca")
    need = {"split": ("a prepared folder", prepared)}.get(color)
    if need and need[1] is None:
        raise ConfigError(f"colour by {color} needs {need[0]} (--prepared)")
    if melon is not None and not os.path.isfile(os.path.join(melon, "song_meta.json")):
        raise ConfigError(f"{melon}: not a Melon folder (no song_meta.json)")
    if prepared is not None and not os.path.isfile(os.path.join(prepared, "splits.json")):
        raise ConfigError(f"{prepared}: not a prepared folder (no splits.json; make one with "
                          "python -m cmir_tf.prepare)")
