"""Melon playlist continuation (paper Table 3): nearest test songs of a playlist's songs, nDCG@k / MAP@k.

Inputs (:func:`read_playlist_task`): the prepared folder's split (``python -m cmir_tf.prepare``: song
ids per ``train`` / ``val`` / ``test``; read in :func:`read_prepared_splits` only) and Melon's
``train.json`` / ``val.json`` / ``test.json`` playlists (``{"id", "songs": [song ids], …}``; a playlist
listed in several files counts once, a song repeated in a playlist once), mels at
``arena_mel/{id // 1000}/{id}.npy``.

Task: the playlists holding at least one song of the prepared test split. Relevant = the playlist's
test songs; queries = its songs of the train/val splits (songs outside the prepared splits have no
usable mel and are ignored). A playlist whose songs are all test songs has no query: it is counted in
``n_no_query`` and left out of the averages (of the model and of the random baseline alike).

Protocol (:func:`playlist_protocol`): a song's vector is the mean of its patch embeddings. Each query
song's ``Params.k`` (100) nearest test songs come from an annoy angular index with ``n_trees`` (50)
trees, seeded (:class:`cmir_tf.similar.index.SimilarityIndex`); the ``k`` test songs retrieved most often
over the playlist's queries are the prediction (ties: higher summed cosine, then lower song id);
nDCG@k and MAP@k (:mod:`cmir_tf.evaluate.metrics`) against the relevant songs, averaged over playlists. The
random baseline ranks ``k`` test songs drawn uniformly without replacement (seeded with ``seed``).
"""
from __future__ import annotations

import os
import sys
from collections import Counter

import numpy as np

from cmir_tf.data.melon import MelonLayout, read_playlists
from cmir_tf.data.prepared import PreparedData
from cmir_tf.errors import ConfigError, DataError
from cmir_tf.evaluate.cache import EmbeddingCache, Model
from cmir_tf.evaluate.downstream import Params, require_dir
from cmir_tf.evaluate.metrics import average_precision_at_k, ndcg_at_k
from cmir_tf.similar.index import SimilarityIndex

SHOWN = 10  # predicted songs listed per playlist in a library's per-playlist results

__all__ = ["read_prepared_splits", "read_playlist_task", "playlist_protocol", "evaluate_playlists",
           "evaluate_playlist_task", "major_genre_labels",
           "folder_labels"]


def read_prepared_splits(data_dir) -> dict[str, set[int]]:
    """The prepared folder's song split → ``{"train"|"val"|"test": {song id}}`` (read by PreparedData)."""
    prepared = PreparedData(require_dir(data_dir, "prepared folder"))
    out = {s: set(ids) for s, ids in prepared.read_splits().items()}
    if not out["test"]:
        raise DataError(f"{prepared.splits_path}: the test split is empty")
    return out


def _melon_playlists(melon_dir):
    """Melon's playlists ``[(id, [song ids])]`` (each playlist once) and the mel path of a song."""
    layout = MelonLayout(require_dir(melon_dir, "Melon folder"))
    files = [layout.playlists(s) for s in ("train", "val", "test") if os.path.isfile(layout.playlists(s))]
    if not files:
        raise DataError(f"{layout.root}: none of train.json, val.json, test.json is there (Melon folder)")
    out, seen = [], set()
    for f in files:
        for pl in read_playlists(f):
            if pl["id"] not in seen:
                seen.add(pl["id"])
                out.append((pl["id"], pl["songs"]))
    return out, layout.mel_path


def _library_playlists(data_dir):
    """A library folder's playlists (its M3Us, or its albums) ``[(index, [song ids])]``, each song's audio
    file (the library's folder, as the manifest records it, + the path of ``library_ids.json``) and
    ``{song id: relative path}``."""
    prepared = PreparedData(data_dir)
    names = prepared.read_library_songs()
    if names is None:
        raise ConfigError(f"{data_dir}: not prepared from a music library (no library_ids.json): give --melon, "
                          "the Melon folder its playlists come from")
    root = prepared.read_manifest().get("library", {}).get("root")
    if not isinstance(root, str):
        raise DataError(f"{prepared.manifest_path}: no library root recorded (an unfinished prepare?)")
    _, lists, pl_names = prepared.read_library_playlists()
    return list(enumerate(lists)), (lambda s: os.path.join(root, names[s])), names, pl_names


def read_playlist_task(data_dir, melon_dir=None) -> dict:
    """Playlists with ≥ 1 test song → ``{"playlists": [(id, queries, relevant)], "test_ids", "n_no_query",
    "n_with_test", "path_of", "names", "playlist_names"}``; song ids are ints, queries are the playlist's
    train/val songs.

    ``melon_dir`` None: ``data_dir`` is a library folder (``prepare --library``): its playlists (the M3Us,
    or the albums) come from ``library_playlists.json``, each song is its audio file, ``names`` maps
    song id → path relative to the library and ``playlist_names`` playlist index → name (both None for
    Melon)."""
    splits = read_prepared_splits(data_dir)
    if melon_dir is None:
        lists, path_of, names, pl_names = _library_playlists(data_dir)
    else:
        (lists, path_of), names, pl_names = _melon_playlists(melon_dir), None, None
    test, known = splits["test"], splits["train"] | splits["val"]
    out, n_no_query, n_with_test = [], 0, 0
    for pl_id, pl_songs in lists:
        songs = list(dict.fromkeys(pl_songs))
        relevant = [s for s in songs if s in test]
        if not relevant:
            continue
        n_with_test += 1
        queries = [s for s in songs if s in known]
        if not queries:
            n_no_query += 1
            continue
        out.append((pl_id, queries, relevant))
    return {"playlists": out, "test_ids": sorted(test), "n_no_query": n_no_query, "n_with_test": n_with_test,
            "path_of": path_of, "names": names, "playlist_names": pl_names}


def _nearest(index: SimilarityIndex, vectors, query_songs, n_nn: int, progress: bool):
    """Each query song's ``n_nn`` nearest indexed songs → ``(row of song, ids (Q, n_nn), cosines)``."""
    from tqdm.auto import tqdm

    nn_ids = np.full((len(query_songs), n_nn), -1, dtype=np.int64)
    nn_cos = np.zeros((len(query_songs), n_nn), dtype=np.float32)
    row = {}
    for r, q in enumerate(tqdm(query_songs, desc="nearest test songs", unit="song",
                               disable=not progress, file=sys.stderr)):
        hits = index.query(vectors[q], n_nn)
        nn_ids[r, :len(hits)] = [h for h, _ in hits]
        nn_cos[r, :len(hits)] = [c for _, c in hits]
        row[q] = r
    return row, nn_ids, nn_cos


def _most_retrieved(ids: np.ndarray, cos: np.ndarray, k: int) -> list[int]:
    """The ``k`` songs retrieved most often (ties: higher summed cosine, then lower id); -1 = no hit."""
    keep = ids >= 0
    count, simsum = Counter(), Counter()
    for s, c in zip(ids[keep].tolist(), cos[keep].tolist()):
        count[s] += 1
        simsum[s] += c
    return sorted(count, key=lambda s: (-count[s], -simsum[s], s))[:k]


def playlist_protocol(playlists, vectors: dict[int, np.ndarray], test_ids, params: Params = Params(),
                      details: bool = False) -> dict:
    """nDCG@k / MAP@k of frequency-aggregated nearest test songs, beside a seeded random ranking.

    ``playlists`` = ``[(id, query song ids, relevant test song ids)]``; ``vectors`` maps song id → track
    vector (queries and candidates without one are dropped); ``test_ids`` are the candidates. With
    ``details``, ``per_playlist`` lists ``{"id", "ndcg", "map", "relevant", "predicted"}`` (the first
    :data:`SHOWN` predicted songs) for each playlist scored.
    """
    k = params.k
    cands = [s for s in test_ids if s in vectors]
    if not cands:
        raise DataError("playlist task: no test song has an embedding")
    index = SimilarityIndex(cands, np.stack([vectors[s] for s in cands]), n_trees=params.n_trees, seed=params.seed)
    query_songs = sorted({q for _, qs, _ in playlists for q in qs if q in vectors})
    row, nn_ids, nn_cos = _nearest(index, vectors, query_songs, min(k, len(cands)), params.progress)
    rng = np.random.default_rng(params.seed)
    cand_arr = np.asarray(cands, dtype=np.int64)
    scores, per = {"ndcg": [], "map": [], "random_ndcg": [], "random_map": []}, []
    for pl_id, queries, relevant in playlists:
        rows = [row[q] for q in queries if q in row]
        if not rows:
            continue
        ranked = _most_retrieved(nn_ids[rows].ravel(), nn_cos[rows].ravel(), k)
        random_ranked = rng.choice(cand_arr, size=min(k, len(cand_arr)), replace=False).tolist()
        for prefix, r in (("", ranked), ("random_", random_ranked)):
            scores[prefix + "ndcg"].append(ndcg_at_k(r, relevant, k))
            scores[prefix + "map"].append(average_precision_at_k(r, relevant, k))
        if details:
            per.append({"id": pl_id, "ndcg": scores["ndcg"][-1], "map": scores["map"][-1],
                        "relevant": list(relevant), "predicted": ranked[:SHOWN]})
    if not scores["ndcg"]:
        raise DataError("playlist task: no playlist has an embedded query song")
    mean = {name: float(np.mean(v)) for name, v in scores.items()}
    return {"ndcg": mean["ndcg"], "map": mean["map"], "k": k,
            "random": {"ndcg": mean["random_ndcg"], "map": mean["random_map"]},
            "n_playlists": len(scores["ndcg"]), "n_test_songs": len(cands), "n_query_songs": len(query_songs),
            **({"per_playlist": per} if details else {})}


def evaluate_playlists(data_dir, melon_dir, model: Model, *, params: Params = Params(), cache_dir=None,
                       keep_embeddings: dict | None = None) -> dict:
    """Read the prepared split and Melon's playlists (:func:`read_playlist_task`), then
    :func:`evaluate_playlist_task`."""
    return evaluate_playlist_task(read_playlist_task(data_dir, melon_dir), model, params=params,
                                  cache_dir=cache_dir, keep_embeddings=keep_embeddings)


def evaluate_playlist_task(task: dict, model: Model, *, params: Params = Params(), cache_dir=None,
                           keep_embeddings: dict | None = None) -> dict:
    """Embed the songs of a :func:`read_playlist_task` task (cached) and run :func:`playlist_protocol`.

    A library's result also holds ``per_playlist``: ``[{"playlist" (name), "ndcg", "map", "test_songs",
    "predicted" (the first SHOWN)}]``, songs named by their path in the library, lowest nDCG first.
    With ``keep_embeddings`` (a dict), ``keep_embeddings["melon"]`` (a library: ``["library"]``) receives
    the test songs as ``[(mean embedding (D,), song id)]`` (see :func:`major_genre_labels`,
    :func:`folder_labels`).
    """
    songs = sorted(set(task["test_ids"]) | {q for _, qs, _ in task["playlists"] for q in qs})
    dataset = "melon" if task.get("names") is None else "library"
    embed = EmbeddingCache(model, cache_dir, dataset)
    paths = {s: task["path_of"](s) for s in songs}
    emb, skipped = embed.embed_all(list(paths.values()), desc=f"{model.name} {dataset}", progress=params.progress)
    vectors = {s: emb[p].mean(axis=0) for s, p in paths.items() if p in emb}
    names = task.get("names")
    result = playlist_protocol(task["playlists"], vectors, task["test_ids"], params, details=names is not None)
    if names is not None:  # a library: each playlist and song by its name, the worst scored first
        result["per_playlist"] = sorted(({"playlist": task["playlist_names"][p["id"]], "ndcg": p["ndcg"],
                                          "map": p["map"], "test_songs": [names[s] for s in p["relevant"]],
                                          "predicted": [names[s] for s in p["predicted"]]}
                                         for p in result["per_playlist"]), key=lambda p: (p["ndcg"], p["playlist"]))
    if keep_embeddings is not None:
        keep_embeddings[dataset] = [(vectors[s], s) for s in task["test_ids"] if s in vectors]
    return {**result, "n_with_test": task["n_with_test"], "n_no_query": task["n_no_query"],
            "skipped": skipped, "embedded": embed.misses}


def major_genre_labels(melon_dir, items, top: int = 10) -> list[tuple[np.ndarray, str]]:
    """``[(vector, song id)]`` → ``[(vector, first major genre)]``, keeping the ``top`` most common genres."""
    from cmir_tf.data.melon import read_song_meta

    songs, _ = read_song_meta(MelonLayout(melon_dir).song_meta)
    labelled = [(v, songs[s].major[0]) for v, s in items if s in songs and songs[s].major]
    common = {g for g, _ in Counter(g for _, g in labelled).most_common(top)}
    return [(v, g) for v, g in labelled if g in common]


def folder_labels(names: dict, items, top: int = 10) -> list[tuple[np.ndarray, str]]:
    """A library's ``[(vector, song id)]`` → ``[(vector, the file's folder)]`` (the album in the usual
    ``Artist/Album/track`` layout), keeping the ``top`` most common folders."""
    labelled = [(v, os.path.dirname(names[s]) or ".") for v, s in items if s in names]
    common = {g for g, _ in Counter(g for _, g in labelled).most_common(top)}
    return [(v, g) for v, g in labelled if g in common]
