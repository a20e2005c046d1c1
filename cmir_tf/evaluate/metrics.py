"""Ranking metrics of the playlist-continuation task (paper sec. 3.3, Table 3): nDCG@k and AP@k.

Binary relevance, the trec_eval definitions:

    DCG@k  = sum_{i=1..k} rel_i / log2(i + 1)          (rank i counted from 1)
    nDCG@k = DCG@k / IDCG@k,  IDCG@k = sum_{i=1..min(|R|, k)} 1 / log2(i + 1)
    AP@k   = sum_{i=1..k} rel_i * P@i / min(|R|, k),    P@i = (relevant items in the first i) / i

Edge cases (decided here, the same in both functions):
- ``relevant`` empty → 0.0 (nothing can be found; callers normally skip such queries — the playlist
  protocol only evaluates playlists with at least one relevant song);
- ``ranked`` empty → 0.0; ``k`` larger than ``ranked`` → the list is scored as it is (missing ranks
  count as non-relevant), while the ideal still uses ``min(|R|, k)``;
- an item repeated in ``ranked`` counts only at its first position (later copies are non-relevant),
  so a list cannot score above 1 by repeating a hit;
- ``k`` must be a positive integer (``ValueError`` otherwise).

ROC-AUC (the tagging task) is scikit-learn's ``roc_auc_score``; it is not rewritten here.
"""
from __future__ import annotations

import math
from typing import Collection, Hashable, Sequence

__all__ = ["ndcg_at_k", "average_precision_at_k"]


def _hits(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> list[bool]:
    """Relevance of the first ``k`` ranks, a repeated item counting only at its first position."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    relevant = set(relevant)
    seen: set = set()
    hits = []
    for item in list(ranked)[:k]:
        hits.append(item in relevant and item not in seen)
        seen.add(item)
    return hits


def ndcg_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Normalised discounted cumulative gain of ``ranked`` (best first) against the ``relevant`` set."""
    hits = _hits(ranked, relevant, k)
    n_rel = len(set(relevant))
    if n_rel == 0:
        return 0.0
    dcg = sum(1.0 / math.log2(i + 2) for i, hit in enumerate(hits) if hit)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(n_rel, k)))
    return dcg / idcg


def average_precision_at_k(ranked: Sequence[Hashable], relevant: Collection[Hashable], k: int) -> float:
    """Average precision of the first ``k`` of ``ranked``, normalised by ``min(|relevant|, k)``."""
    hits = _hits(ranked, relevant, k)
    n_rel = len(set(relevant))
    if n_rel == 0:
        return 0.0
    found = 0
    total = 0.0
    for i, hit in enumerate(hits):
        if hit:
            found += 1
            total += found / (i + 1)
    return total / min(n_rel, k)
