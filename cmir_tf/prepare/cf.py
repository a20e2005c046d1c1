"""The collaborative-filtering (CF) song vectors: the playlist side input the audio is aligned to.

The binary playlist × song matrix of ALL playlists, restricted to the songs given (prepare passes the
train+val songs; test songs get none: cold start), is factorised with ``implicit``'s CPU classes:

* **BPR** (default; the closest to the paper's WARP). Its item factors carry the item bias as last
  column, so it is fitted with ``cf_dim − 1`` factors to give ``cf_dim`` values. Learning rate 0.05
  (:data:`BPR_LEARNING_RATE`, see :func:`train_cf`); iterations by matrix size
  (:func:`default_cf_iterations`). Single-threaded it is deterministic for a seed (its multi-threaded
  SGD is lock-free).
* **ALS** (selectable): ``cf_dim`` factors, 15 iterations, deterministic at any thread count.

BLAS is limited to one thread while fitting (``threadpoolctl``), so ``threads`` is the only knob.
"""
from __future__ import annotations

import math

import numpy as np

from cmir_tf.constants import CF_DIM
from cmir_tf.errors import ConfigError

CF_MODELS = ("bpr", "als")
ALS_ITERATIONS = 15
BPR_SAMPLES = 60_000_000  # default BPR iterations: ~this many SGD samples, clamped to [10, 200] iterations
BPR_LEARNING_RATE = 0.05  # lightfm's (the paper's WARP) default; implicit's 0.01 barely moved 300-d factors


def default_cf_iterations(model: str, nnz: int) -> int:
    """ALS: 15. BPR: ``BPR_SAMPLES / nnz`` clamped to [10, 200] — 200 on small data, 10 at Melon's 5.9M
    entries, where one single-threaded 300-factor BPR epoch took ~10 s here (benchmarks/prepare_scale.py)."""
    if model == "als":
        return ALS_ITERATIONS
    return int(min(200, max(10, math.ceil(BPR_SAMPLES / max(1, nnz)))))


def check_cf_params(model: str, cf_dim: int) -> None:
    """Raise :class:`ConfigError` for an unknown model or fewer than 2 values."""
    if model not in CF_MODELS:
        raise ConfigError(f"cf_model must be one of {CF_MODELS}, got {model!r}")
    if cf_dim < 2:
        raise ConfigError(f"cf_dim must be ≥ 2, got {cf_dim}")


def playlist_matrix(playlists, song_ids):
    """Binary playlist × song CSR matrix over the songs of ``song_ids`` that occur in a playlist.

    Returns ``(matrix, ids int64)``: column j is song ``ids[j]`` (sorted); playlists without any of the
    songs are dropped. ``matrix`` is None when no playlist holds any of them.
    """
    import scipy.sparse as sp

    col_of = {int(s): j for j, s in enumerate(sorted(int(s) for s in song_ids))}
    indptr, indices = [0], []
    for p in playlists:
        cols = sorted({col_of[s] for s in p if s in col_of})
        if cols:
            indices.extend(cols); indptr.append(len(indices))
    if not indices:
        return None, np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(indices), np.float32), np.asarray(indices, np.int32),
                       np.asarray(indptr, np.int64)), shape=(len(indptr) - 1, len(col_of)))
    used = np.flatnonzero(np.asarray((m > 0).sum(axis=0)).ravel() > 0)
    return m[:, used].tocsr(), np.asarray(sorted(col_of), np.int64)[used]


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
    check_cf_params(model, cf_dim)
    m, ids = playlist_matrix(playlists, song_ids)
    if m is None:
        return ids, np.zeros((0, cf_dim), np.float32), {"model": model, "iterations": 0, "threads": threads,
                                                        "playlists": 0, "songs": 0, "nnz": 0}
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
