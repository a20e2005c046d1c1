"""Melon folder (real or synthetic) → prepared training data: split, CF vectors, genre word2vec, TFRecords.

``python -m cmir_tf.prepare --melon DIR --out DIR [--workers N] [--seed S] ...``

Steps (issue 2):

1. **Songs.** ``song_meta.json`` (duplicate ids: the first entry is kept, the rest counted), the songs
   named by the playlists of ``train/val/test.json`` (entries naming songs absent from ``song_meta`` are
   dropped and counted). A song is a candidate when it appears in a playlist (else ``no_playlist``), has
   at least one genre (else ``no_genres``) and its mel passes the header check of
   :func:`cmir_tf.melon.inspect_mel` (``missing``, ``unreadable``, ``pickled``, ``bad_dtype``,
   ``bad_shape``, ``wrong_bands``, ``too_short``). Stray files in ``arena_mel`` are never looked at:
   mels are opened by their song's path only.
2. **Split.** Iterative multi-label stratification (Sechidis et al. 2011, the ``iterative-stratification``
   package's ``IterativeStratification`` called once with ratios 0.8/0.1/0.1) on the multi-hot genre
   vectors (major + detailed), seeded. Measured: 650k songs × 250 genres in ~20 s, 0.5 GB.
3. **CF.** Binary playlist × song matrix of ALL playlists restricted to train+val songs, factorised with
   ``implicit`` (CPU classes; BPR by default — the closest to the paper's WARP —, ALS selectable). BPR's
   item factors carry the item bias as last column, so BPR is fitted with ``cf_dim − 1`` factors to give
   ``cf_dim`` values; learning rate 0.05 (see :func:`train_cf`), iterations by matrix size (see
   :func:`default_cf_iterations`). Test songs get none (cold start).
4. **Word2vec.** gensim skip-gram on the candidate songs' genre baskets (major + detailed), seeded and
   single-threaded (deterministic). Vocabulary = every genre code of a candidate song, sorted
   (``GNxx00`` before its ``GNxxyy``); names from ``genre_gn_all.json`` (a code missing there gets "").
5. **Records.** Each split's songs, shuffled with the seed, in shards of ``shard_size`` songs written by
   ``--workers`` processes: every mel is fully loaded with :func:`cmir_tf.melon.load_mel`; one whose
   values fail (``non_finite``, or ``out_of_range`` for float16) is skipped there and recorded — so a
   split can lose those few songs after the split was drawn (Melon: a handful among 650k). A record holds
   ALL the song's genres (songs with more than 10 are kept; the pipeline truncates to T_w = 10).
6. **Resume.** Shards are written as ``*.tmp`` then renamed; a finished shard leaves
   ``.prepare/done/<shard>.json``. The plan (split, shards, skips) and the vocabulary / word2vec / CF
   factors are computed once and cached in ``OUT/.prepare`` with a fingerprint of the parameters and
   input files; a rerun with the same fingerprint rewrites only shards that are not finished, a rerun
   with another raises :class:`~cmir_tf.errors.ConfigError` (use ``--overwrite`` or another ``--out``).
   Everything is also deterministic for a seed, so a fresh run reproduces the same bytes.

Output layout (docs/ARCHITECTURE.md): ``manifest.json``, ``splits.json``, ``vocab.json``,
``word2vec.npy``, ``cf_song_ids.npy``, ``cf_factors.npy``, ``{train,val,test}/*.tfrecord``.
``manifest.json`` is written last: its presence means the folder is complete.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time
import zlib
from collections import Counter

import numpy as np

from .constants import CF_DIM, MAX_GENRES, SPLITS, W2V_DIM
from .errors import CmirError, ConfigError, DataError
from .fileio import save_npy, write_json
from .melon import (PLAYLIST_FILES, MelError, MelonLayout, inspect_mel, load_mel, read_genres, read_playlists,
                    read_song_meta)
from .tfrecords import shard_name

STATE_DIR = ".prepare"
F16_MAX = float(np.finfo(np.float16).max)  # 65504: records store the mel as float16
RATIOS = (0.8, 0.1, 0.1)
CF_MODELS = ("bpr", "als")
ALS_ITERATIONS = 15
BPR_SAMPLES = 60_000_000  # default BPR iterations: ~this many SGD samples, clamped to [10, 200] iterations
BPR_LEARNING_RATE = 0.05  # lightfm's (the paper's WARP) default; implicit's 0.01 barely moved 300-d factors
W2V_MIN_TOKENS = 200_000  # tiny corpora get more epochs: at least this many tokens seen in training …
W2V_MAX_EPOCHS = 200  # … but no more than this many epochs


def default_cf_iterations(model: str, nnz: int) -> int:
    """ALS: 15. BPR: ``BPR_SAMPLES / nnz`` clamped to [10, 200] — 200 on small data, 10 at Melon's 5.9M
    entries, where one single-threaded 300-factor BPR epoch took ~10 s here (benchmarks/prepare_scale.py)."""
    if model == "als":
        return ALS_ITERATIONS
    return int(min(200, max(10, math.ceil(BPR_SAMPLES / max(1, nnz)))))


# -------------------------------------------------------------------------------------------- stage 1
def load_metadata(melon_dir) -> dict:
    """Read a Melon folder's JSON files → ``{"songs", "genre_names", "playlists", "stats"}``.

    ``playlists`` is a list of song-id lists (all three files; unknown songs and repeats removed).
    """
    layout = MelonLayout(melon_dir)
    layout.check()
    songs, n_dup = read_song_meta(layout.song_meta)
    genre_names = read_genres(layout.genres)
    playlists, n_entries, n_unknown = [], 0, 0
    for f in PLAYLIST_FILES:
        for p in read_playlists(layout.playlists(f)):
            n_entries += len(p["songs"])
            kept = [s for s in dict.fromkeys(p["songs"]) if s in songs]
            n_unknown += sum(1 for s in p["songs"] if s not in songs)
            playlists.append(kept)
    stats = {"songs_in_meta": len(songs), "duplicate_song_meta": n_dup, "playlists": len(playlists),
             "playlist_entries": n_entries, "unknown_playlist_entries": n_unknown}
    return {"songs": songs, "genre_names": genre_names, "playlists": playlists, "stats": stats}


def select_songs(meta: dict) -> tuple[list, dict]:
    """Songs in a playlist with ≥ 1 genre → ``(sorted ids, {id: reason})`` for ``no_playlist``/``no_genres``."""
    in_pl = set()
    for p in meta["playlists"]:
        in_pl.update(p)
    skipped, ids = {}, []
    for sid in sorted(meta["songs"]):
        if sid not in in_pl:
            skipped[sid] = "no_playlist"
        elif not meta["songs"][sid].genres:
            skipped[sid] = "no_genres"
        else:
            ids.append(sid)
    return ids, skipped


def _inspect_chunk(args):
    root, ids = args
    layout = MelonLayout(root)
    out = {}
    for sid in ids:
        try:
            inspect_mel(layout.mel_path(sid))
        except MelError as e:
            out[sid] = e.reason
    return out


def scan_mels(melon_dir, ids, workers: int = 1, progress: bool = True) -> dict:
    """Header-check every song's mel (a few hundred bytes each) → ``{id: reason}`` of the failing ones."""
    chunks = [(os.fspath(melon_dir), list(ids[i:i + 2000])) for i in range(0, len(ids), 2000)]
    bad = {}
    bar = _bar(len(ids), "check mels", progress)
    if workers > 1 and len(chunks) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for c, r in zip(chunks, pool.imap(_inspect_chunk, chunks)):
                bad.update(r); bar.update(len(c[1]))
    else:
        for c in chunks:
            bad.update(_inspect_chunk(c)); bar.update(len(c[1]))
    bar.close()
    return bad


def build_vocab(songs: dict, ids, genre_names: dict) -> list:
    """``[{"index", "code", "name"}]`` over every genre code of the songs ``ids``, sorted by code."""
    codes = sorted({c for sid in ids for c in songs[sid].genres})
    return [{"index": i, "code": c, "name": genre_names.get(c, "")} for i, c in enumerate(codes)]


# -------------------------------------------------------------------------------------------- stage 2
def stratified_split(ids, genre_index_lists, n_genres: int, seed: int, ratios=RATIOS) -> dict:
    """Iterative multi-label stratification → ``{"train": [...], "val": [...], "test": [...]}`` (sorted ids).

    ``genre_index_lists[i]`` are the vocabulary indices of ``ids[i]``. Deterministic for a seed.
    """
    from iterstrat.ml_stratifiers import IterativeStratification

    ids = np.asarray(ids, dtype=np.int64)
    out = {s: [] for s in SPLITS}
    if len(ids) == 0:
        return out
    y = np.zeros((len(ids), n_genres), dtype=bool)
    rows = np.repeat(np.arange(len(ids)), [len(g) for g in genre_index_lists])
    y[rows, np.concatenate([np.asarray(g, dtype=np.int64) for g in genre_index_lists])] = True
    folds = IterativeStratification(labels=y, r=np.asarray(ratios, dtype=float),
                                    random_state=np.random.RandomState(seed))
    for k, s in enumerate(SPLITS):
        out[s] = sorted(int(v) for v in ids[folds == k])
    return out


# -------------------------------------------------------------------------------------------- stage 3
def train_cf(playlists, song_ids, cf_dim: int = CF_DIM, model: str = "bpr", seed: int = 0,
             iterations: int | None = None, threads: int = 1, progress: bool = False,
             learning_rate: float = BPR_LEARNING_RATE):
    """Factorise the binary playlist × song matrix restricted to ``song_ids``.

    Returns ``(ids int64 (n,), factors float32 (n, cf_dim), info dict)`` for the songs of ``song_ids``
    that occur in at least one playlist, sorted. ``threads=1`` makes
    BPR deterministic (its multi-threaded SGD is lock-free); ALS is deterministic at any thread count.
    ``learning_rate`` is BPR's: at Melon scale (5.3M entries, 12 epochs, 300 factors) co-occurring songs'
    mean cosine was 0.005 (random pairs −0.012) with implicit's default 0.01, 0.39 (random 0.00) with 0.05
    and 0.51 (0.02) with 0.1; 0.05 is lightfm's default for the paper's WARP.
    """
    import scipy.sparse as sp

    if model not in CF_MODELS:
        raise ConfigError(f"--cf-model must be one of {CF_MODELS}, got {model!r}")
    if cf_dim < 2:
        raise ConfigError(f"--cf-dim must be ≥ 2, got {cf_dim}")
    col_of = {int(s): j for j, s in enumerate(sorted(int(s) for s in song_ids))}
    indptr, indices = [0], []
    for p in playlists:
        cols = sorted({col_of[s] for s in p if s in col_of})
        if cols:
            indices.extend(cols); indptr.append(len(indices))
    if not indices:
        return np.zeros(0, np.int64), np.zeros((0, cf_dim), np.float32), {"playlists": 0, "nnz": 0}
    m = sp.csr_matrix((np.ones(len(indices), np.float32), np.asarray(indices, np.int32),
                       np.asarray(indptr, np.int64)), shape=(len(indptr) - 1, len(col_of)))
    used = np.flatnonzero(np.asarray((m > 0).sum(axis=0)).ravel() > 0)
    m = m[:, used].tocsr()
    ids = np.asarray(sorted(col_of), np.int64)[used]
    iterations = default_cf_iterations(model, m.nnz) if iterations is None else int(iterations)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        if model == "bpr":
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            mf = BayesianPersonalizedRanking(factors=cf_dim - 1, learning_rate=learning_rate, iterations=iterations,
                                             num_threads=threads, random_state=seed)
        else:
            from implicit.cpu.als import AlternatingLeastSquares

            mf = AlternatingLeastSquares(factors=cf_dim, iterations=iterations, num_threads=threads,
                                         random_state=seed)
        mf.fit(m, show_progress=progress)
    f = np.asarray(mf.item_factors, dtype=np.float32)[:, :cf_dim]
    info = {"model": model, "iterations": iterations, "threads": threads,
            "learning_rate": learning_rate if model == "bpr" else None, "playlists": int(m.shape[0]),
            "songs": int(m.shape[1]), "nnz": int(m.nnz)}
    return ids, np.ascontiguousarray(f), info


# -------------------------------------------------------------------------------------------- stage 4
def _stable_hash(s):  # gensim's seeded vectors must not depend on PYTHONHASHSEED
    return zlib.crc32(str(s).encode("utf-8"))


def train_word2vec(baskets, vocab: list, dim: int = W2V_DIM, seed: int = 0, epochs: int = 5) -> np.ndarray:
    """Skip-gram word2vec on genre baskets → ``(len(vocab), dim)`` float32, row i = vocabulary index i.

    A basket is a whole "sentence" (window = the longest basket). No frequent-word down-sampling
    (``sample=0``): with ~250 codes the majors are the frequent "words", and down-sampling them dropped
    most of them (on 250 synthetic songs, detailed→own-major nearest neighbour 11 % vs 51 % without).
    Small corpora get ``min(200, ceil(W2V_MIN_TOKENS / tokens))`` epochs if that is more than ``epochs``.
    """
    from gensim.models import Word2Vec

    baskets = [list(b) for b in baskets if b]
    if not baskets:
        raise DataError("no song has a genre: cannot train the genre word2vec")
    window = max(2, max(len(b) for b in baskets))
    n_tokens = sum(len(b) for b in baskets)
    epochs = max(int(epochs), min(W2V_MAX_EPOCHS, math.ceil(W2V_MIN_TOKENS / n_tokens)))
    w2v = Word2Vec(sentences=baskets, vector_size=dim, window=window, min_count=1, sg=1, negative=5, sample=0,
                   epochs=epochs, workers=1, seed=seed, hashfxn=_stable_hash)
    mat = np.zeros((len(vocab), dim), np.float32)
    for v in vocab:
        mat[v["index"]] = w2v.wv[v["code"]]
    return mat


# -------------------------------------------------------------------------------------------- stage 5
def _bar(total, desc, enabled):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="song", disable=not enabled, file=sys.stderr, mininterval=0.5)


def _write_shard(task: dict) -> dict:
    """Worker: write one shard (``.tmp`` then rename), then its done-record. Returns the done-record."""
    import tensorflow as tf

    from .tfrecords import serialize_example

    layout = MelonLayout(task["melon"])
    path = os.path.join(task["out"], task["split"], task["name"])
    tmp = path + ".tmp"
    written, skipped = [], []
    opts = tf.io.TFRecordOptions(compression_type="GZIP" if task["compress"] else "")
    with tf.io.TFRecordWriter(tmp, opts) as w:
        for sid, genres, cf in task["songs"]:
            try:
                mel = load_mel(layout.mel_path(sid))
            except MelError as e:
                skipped.append([sid, e.reason]); continue
            if np.abs(mel).max() > F16_MAX:  # finite float32 that float16 would turn into inf
                skipped.append([sid, "out_of_range"]); continue
            w.write(serialize_example(sid, mel, genres, cf))
            written.append(sid)
    os.replace(tmp, path)
    done = {"shard": task["name"], "split": task["split"], "written": written, "skipped": skipped,
            "bytes": os.path.getsize(path)}
    write_json(_done_path(task["out"], task["name"]), done)
    return done


def _done_path(out, name):
    return os.path.join(out, STATE_DIR, "done", name + ".json")


def _finished(out, split, name):
    """The done-record of a shard if the shard is finished (record present, file present, same size)."""
    dp = _done_path(out, name)
    path = os.path.join(out, split, name)
    try:
        with open(dp, encoding="utf-8") as f:
            done = json.load(f)
        return done if os.path.getsize(path) == done["bytes"] else None
    except (OSError, ValueError, KeyError):
        return None


# ----------------------------------------------------------------------------------------- orchestrate
def _fingerprint(layout: MelonLayout, params: dict) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for p in (layout.song_meta, layout.genres, *(layout.playlists(s) for s in PLAYLIST_FILES)):
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("numpy", "scipy", "implicit", "gensim", "iterative-stratification", "tensorflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _clear(out):
    for name in (STATE_DIR, *SPLITS):
        shutil.rmtree(os.path.join(out, name), ignore_errors=True)
    for name in ("manifest.json", "splits.json", "vocab.json", "word2vec.npy", "cf_song_ids.npy",
                 "cf_factors.npy"):
        if os.path.exists(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))


def _log(verbose, msg):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def prepare(melon_dir, out_dir, *, workers: int = 1, seed: int = 0, cf_dim: int = CF_DIM,
            w2v_dim: int = W2V_DIM, cf_model: str = "bpr", cf_iterations: int | None = None,
            cf_threads: int = 1, cf_learning_rate: float = BPR_LEARNING_RATE, w2v_epochs: int = 5,
            shard_size: int = 256, compress: bool = False,
            metadata_only: bool = False, overwrite: bool = False, progress: bool = True,
            verbose: bool = True) -> dict:
    """Prepare ``melon_dir`` into ``out_dir`` (see the module docstring); returns the manifest dict.

    ``metadata_only=True`` runs steps 1–4 without opening a mel (every song with genres counts as
    usable) and writes no shard — the metadata path at Melon scale (``benchmarks/prepare_scale.py``).
    ``workers > 1`` uses ``spawn`` processes (no fork after TensorFlow/OpenMP threads): a script calling
    this must guard its top level with ``if __name__ == "__main__":``.
    """
    t0 = time.time()
    if workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {workers}")
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be ≥ 1, got {shard_size}")
    if cf_model not in CF_MODELS:
        raise ConfigError(f"--cf-model must be one of {CF_MODELS}, got {cf_model!r}")
    if cf_dim < 2 or w2v_dim < 1:
        raise ConfigError(f"--cf-dim must be ≥ 2 and --w2v-dim ≥ 1, got {cf_dim} and {w2v_dim}")
    layout = MelonLayout(melon_dir)
    layout.check()
    out = os.fspath(out_dir)
    params = {"seed": seed, "cf_dim": cf_dim, "w2v_dim": w2v_dim, "cf_model": cf_model,
              "cf_iterations": cf_iterations,
              "cf_threads": cf_threads, "cf_learning_rate": cf_learning_rate, "w2v_epochs": w2v_epochs,
              "shard_size": shard_size,
              "compress": bool(compress), "ratios": list(RATIOS), "metadata_only": bool(metadata_only)}
    fp = _fingerprint(layout, params)
    state = os.path.join(out, STATE_DIR)
    plan_path = os.path.join(state, "plan.json")
    if overwrite:
        _clear(out)
    os.makedirs(os.path.join(state, "done"), exist_ok=True)

    plan = None
    if os.path.exists(plan_path):
        with open(plan_path, encoding="utf-8") as f:
            plan = json.load(f)
        if plan.get("fingerprint") != fp:
            raise ConfigError(f"{out}: already prepared from other inputs or parameters ({plan_path}); "
                              "pass --overwrite or choose another --out")
        _log(verbose, f"resuming {out}: plan, vocabulary, word2vec and CF loaded from {state}")

    meta = load_metadata(layout.root)
    songs = meta["songs"]
    if plan is None:
        ids, skipped = select_songs(meta)
        _log(verbose, f"{len(ids)} songs in playlists with genres; checking their mels"
             if not metadata_only else f"{len(ids)} songs in playlists with genres (metadata only)")
        if not metadata_only:
            bad = scan_mels(layout.root, ids, workers, progress)
            skipped.update(bad)
            ids = [s for s in ids if s not in bad]
        vocab = build_vocab(songs, ids, meta["genre_names"])
        index = {v["code"]: v["index"] for v in vocab}
        genre_idx = {sid: [index[c] for c in songs[sid].genres] for sid in ids}
        t = time.time()
        splits = stratified_split(ids, [genre_idx[s] for s in ids], len(vocab), seed)
        split_seconds = round(time.time() - t, 1)
        _log(verbose, f"split {len(ids)} songs in {time.time() - t:.1f} s: "
             + ", ".join(f"{s} {len(splits[s])}" for s in SPLITS))
        t = time.time()
        trainval = splits["train"] + splits["val"]
        cf_ids, cf, cf_info = train_cf(meta["playlists"], trainval, cf_dim, cf_model, seed, cf_iterations,
                                       cf_threads, progress=progress, learning_rate=cf_learning_rate)
        cf_info["seconds"] = round(time.time() - t, 1)
        _log(verbose, f"CF ({cf_model}, {cf_dim} values, {cf_info['iterations']} iterations, "
             f"{cf_info['nnz']} entries) for {len(cf_ids)} songs in {time.time() - t:.1f} s")
        t = time.time()
        baskets = [songs[s].genres for s in ids]
        w2v = train_word2vec(baskets, vocab, w2v_dim, seed, w2v_epochs)
        w2v_seconds = round(time.time() - t, 1)
        _log(verbose, f"word2vec ({len(vocab)} genres × {w2v_dim}) in {w2v_seconds} s")
        rng = np.random.default_rng([seed, 5])
        shards = {}
        for s in SPLITS:
            order = [int(v) for v in rng.permutation(np.asarray(splits[s], np.int64))]
            n = math.ceil(len(order) / shard_size)
            shards[s] = [{"name": shard_name(s, i, n, compress), "songs": order[i * shard_size:(i + 1) * shard_size]}
                         for i in range(n)]
        save_npy(os.path.join(state, "cf_song_ids.npy"), cf_ids)
        save_npy(os.path.join(state, "cf_factors.npy"), cf)
        save_npy(os.path.join(state, "word2vec.npy"), w2v)
        write_json(os.path.join(state, "vocab.json"), vocab)
        plan = {"fingerprint": fp, "params": params, "splits": splits, "shards": shards, "cf": cf_info,
                "seconds": {"split": split_seconds, "cf": cf_info["seconds"], "word2vec": w2v_seconds},
                "skipped": [[int(k), v] for k, v in sorted(skipped.items())]}
        write_json(plan_path, plan)  # last: its presence means the cached state is complete
    with open(os.path.join(state, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    w2v = np.load(os.path.join(state, "word2vec.npy"), allow_pickle=False)
    cf_ids = np.load(os.path.join(state, "cf_song_ids.npy"), allow_pickle=False)
    cf = np.load(os.path.join(state, "cf_factors.npy"), allow_pickle=False)
    index = {v["code"]: v["index"] for v in vocab}

    # ---- records
    done = {}
    if not metadata_only:
        cf_row = {int(s): i for i, s in enumerate(cf_ids)}
        tasks = []
        for s in SPLITS:
            os.makedirs(os.path.join(out, s), exist_ok=True)
            for f in os.listdir(os.path.join(out, s)):
                if f.endswith(".tmp"):  # left by an interrupted run
                    os.unlink(os.path.join(out, s, f))
            for sh in plan["shards"][s]:
                d = _finished(out, s, sh["name"])
                if d is not None:
                    done[sh["name"]] = d
                    continue
                tasks.append({"melon": layout.root, "out": out, "split": s, "name": sh["name"],
                              "compress": bool(compress),
                              "songs": [(sid, [index[c] for c in songs[sid].genres],
                                         cf[cf_row[sid]] if s != "test" and sid in cf_row else None)
                                        for sid in sh["songs"]]})
        n_todo = sum(len(t["songs"]) for t in tasks)
        _log(verbose, f"writing {n_todo} songs in {len(tasks)} shards ({len(done)} shards already finished)")
        bar = _bar(n_todo, "write records", progress)
        if workers > 1 and len(tasks) > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(workers, len(tasks))) as pool:
                for d in pool.imap_unordered(_write_shard, tasks):
                    done[d["shard"]] = d; bar.update(len(d["written"]) + len(d["skipped"]))
        else:
            for t in tasks:
                d = _write_shard(t)
                done[d["shard"]] = d; bar.update(len(d["written"]) + len(d["skipped"]))
        bar.close()

    # ---- finalise
    skipped = {int(k): v for k, v in plan["skipped"]}
    written = {s: [] for s in SPLITS}
    shard_files = {s: [] for s in SPLITS}
    for s in SPLITS:
        for sh in plan["shards"][s]:
            if metadata_only:
                written[s].extend(sh["songs"])
                continue
            d = done[sh["name"]]
            written[s].extend(d["written"])
            skipped.update({int(k): v for k, v in d["skipped"]})
            shard_files[s].append(sh["name"])
        written[s] = sorted(written[s])
    keep = np.isin(cf_ids, np.asarray(written["train"] + written["val"], np.int64))
    save_npy(os.path.join(out, "cf_song_ids.npy"), cf_ids[keep])
    save_npy(os.path.join(out, "cf_factors.npy"), cf[keep])
    save_npy(os.path.join(out, "word2vec.npy"), w2v)
    write_json(os.path.join(out, "vocab.json"), vocab, indent=0)
    write_json(os.path.join(out, "splits.json"), written)
    n_many = sum(1 for s in SPLITS for sid in written[s] if len(songs[sid].genres) > MAX_GENRES)
    reasons = Counter(skipped.values())
    stats = dict(meta["stats"])
    stats.update({"songs_in_playlists": len({x for p in meta["playlists"] for x in p}),
                  "songs_over_max_genres": n_many,
                  "genres_missing_from_genre_gn_all": sum(1 for v in vocab if v["code"] not in meta["genre_names"]),
                  "cf": plan["cf"], "stage_seconds": plan["seconds"], "seconds": round(time.time() - t0, 1)})
    manifest = {
        "counts": {s: len(written[s]) for s in SPLITS},
        "skipped": [{"song_id": k, "reason": v} for k, v in sorted(skipped.items())],
        "skipped_by_reason": dict(sorted(reasons.items())),
        "stats": stats,
        "params": params,
        "versions": _versions(),
        "shards": shard_files,
        "n_genres": len(vocab),
        "cf_dim": cf_dim,
        "w2v_dim": w2v_dim,
        "metadata_only": bool(metadata_only),
        "compressed": bool(compress),
    }
    write_json(os.path.join(out, "manifest.json"), manifest, indent=1)
    if verbose:
        print(summary(manifest))
    return manifest


def summary(manifest: dict) -> str:
    """The human-readable count summary printed at the end of :func:`prepare`."""
    c, st = manifest["counts"], manifest["stats"]
    what = "songs per split (metadata only, no records)" if manifest.get("metadata_only") else "records written"
    lines = [f"{what}: train {c['train']}, val {c['val']}, test {c['test']} "
             f"({manifest['n_genres']} genres, CF {manifest['cf_dim']}, word2vec {manifest['w2v_dim']})",
             f"songs in song_meta {st['songs_in_meta']} (duplicate entries ignored: {st['duplicate_song_meta']}), "
             f"in playlists {st['songs_in_playlists']}; playlists {st['playlists']}, entries "
             f"{st['playlist_entries']} (naming unknown songs, ignored: {st['unknown_playlist_entries']})",
             f"songs with more than {MAX_GENRES} genres (kept, truncated by the pipeline): "
             f"{st['songs_over_max_genres']}",
             f"skipped {len(manifest['skipped'])} songs: "
             + (", ".join(f"{k} {v}" for k, v in manifest["skipped_by_reason"].items()) or "none")]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m cmir_tf.prepare",
        description="Turn a Melon folder (real or synthetic) into training data: stratified 80/10/10 split, "
                    "CF vectors (implicit), genre word2vec (gensim), sharded TFRecords and a manifest. "
                    "A rerun into the same --out resumes (finished shards are not rewritten).")
    ap.add_argument("--melon", required=True, help="Melon folder (song_meta.json, genre_gn_all.json, "
                                                   "train/val/test.json, arena_mel/)")
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--workers", type=int, default=1, help="processes writing shards (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, CF, word2vec and shard order")
    ap.add_argument("--cf-dim", type=int, default=CF_DIM, help=f"CF vector size F_cf (default {CF_DIM})")
    ap.add_argument("--w2v-dim", type=int, default=W2V_DIM, help=f"genre word2vec size F_w (default {W2V_DIM})")
    ap.add_argument("--cf-model", choices=CF_MODELS, default="bpr",
                    help="implicit model: bpr (default; closest to the paper's WARP) or als")
    ap.add_argument("--cf-iterations", type=int, default=None,
                    help="CF training iterations (default: als 15; bpr 60M SGD samples / matrix entries, "
                         "clamped to 10..200 — 10 at Melon scale)")
    ap.add_argument("--cf-threads", type=int, default=1,
                    help="CF threads (default 1: BPR is deterministic only single-threaded)")
    ap.add_argument("--cf-learning-rate", type=float, default=BPR_LEARNING_RATE,
                    help=f"BPR learning rate (default {BPR_LEARNING_RATE}, lightfm's; implicit's 0.01 learns "
                         "too slowly at Melon scale)")
    ap.add_argument("--w2v-epochs", type=int, default=5,
                    help="word2vec epochs (default 5; small corpora get more, up to 200k tokens seen)")
    ap.add_argument("--shard-size", type=int, default=256, help="songs per TFRecord shard (default 256)")
    ap.add_argument("--gzip", action="store_true", help="GZIP the shards (*.tfrecord.gz)")
    ap.add_argument("--metadata-only", action="store_true",
                    help="split, CF and word2vec only: no mel is opened and no shard written")
    ap.add_argument("--overwrite", action="store_true",
                    help="discard a previous preparation in --out instead of resuming it")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    a = ap.parse_args(argv)
    try:
        prepare(a.melon, a.out, workers=a.workers, seed=a.seed, cf_dim=a.cf_dim, w2v_dim=a.w2v_dim,
                cf_model=a.cf_model, cf_iterations=a.cf_iterations, cf_threads=a.cf_threads,
                cf_learning_rate=a.cf_learning_rate,
                w2v_epochs=a.w2v_epochs, shard_size=a.shard_size, compress=a.gzip,
                metadata_only=a.metadata_only, overwrite=a.overwrite, progress=not a.no_progress)
    except CmirError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
