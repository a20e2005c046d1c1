"""nDCG@k and AP@k against hand-worked values and an independent array implementation."""
import math

import numpy as np
import pytest

from cmir_tf.evaluate.metrics import average_precision_at_k, ndcg_at_k


def _reference(ranked, relevant, k):
    """The trec_eval definitions written with numpy arrays (a different code path from the module)."""
    ranked = np.asarray(ranked, dtype=np.int64)[:k]
    relevant = np.unique(np.asarray(list(relevant), dtype=np.int64))
    if relevant.size == 0:
        return 0.0, 0.0
    first = np.zeros(ranked.size, dtype=bool)
    first[np.unique(ranked, return_index=True)[1]] = True  # only first occurrences can be hits
    rel = (np.isin(ranked, relevant) & first).astype(np.float64)
    ranks = np.arange(1, ranked.size + 1)
    dcg = float(np.sum(rel / np.log2(ranks + 1)))
    ideal = np.arange(1, min(relevant.size, k) + 1)
    idcg = float(np.sum(1.0 / np.log2(ideal + 1)))
    ap = float(np.sum(rel * np.cumsum(rel) / ranks) / min(relevant.size, k))
    return dcg / idcg, ap


@pytest.mark.parametrize(
    "ranked, relevant, k, ndcg, ap",
    [
        # DCG = 1/log2(2) + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3); AP = (1/1 + 2/3) / 2
        (["a", "b", "c"], {"a", "c"}, 3, 1.5 / (1 + 1 / math.log2(3)), (1 + 2 / 3) / 2),
        (["x", "a"], {"a"}, 1, 0.0, 0.0),  # the hit is beyond k
        (["x", "a"], {"a"}, 2, 1 / math.log2(3), 0.5),
        # more relevant items than k: the ideal list is k hits, so two hits in two ranks is perfect
        (["a", "b"], {"a", "b", "c", "d"}, 2, 1.0, 1.0),
        # k larger than the list: missing ranks are misses, the ideal still has min(|R|, k) = 2 hits
        (["a"], {"a", "b"}, 5, 1 / (1 + 1 / math.log2(3)), 0.5),
        # duplicates count once, at their first position
        (["a", "a", "b"], {"a"}, 3, 1.0, 1.0),
        (["a", "a"], {"a", "b"}, 2, 1 / (1 + 1 / math.log2(3)), 0.5),
        (["x", "a", "a", "a"], {"a"}, 4, 1 / math.log2(3), 0.5),
        # empty inputs score 0
        ([], {"a"}, 10, 0.0, 0.0),
        (["a", "b"], set(), 10, 0.0, 0.0),
        ([], [], 1, 0.0, 0.0),
    ],
)
def test_hand_worked_examples(ranked, relevant, k, ndcg, ap):
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(ndcg, abs=1e-12)
    assert average_precision_at_k(ranked, relevant, k) == pytest.approx(ap, abs=1e-12)


def test_matches_independent_implementation_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(500):
        universe = int(rng.integers(1, 60))
        ranked = rng.integers(0, universe, size=int(rng.integers(0, 40))).tolist()  # may repeat
        relevant = set(rng.integers(0, universe, size=int(rng.integers(0, 20))).tolist())
        k = int(rng.integers(1, 50))
        want_ndcg, want_ap = _reference(ranked, relevant, k)
        assert ndcg_at_k(ranked, relevant, k) == pytest.approx(want_ndcg, abs=1e-12)
        assert average_precision_at_k(ranked, relevant, k) == pytest.approx(want_ap, abs=1e-12)
        assert 0.0 <= ndcg_at_k(ranked, relevant, k) <= 1.0
        assert 0.0 <= average_precision_at_k(ranked, relevant, k) <= 1.0


def test_perfect_and_reversed_rankings():
    relevant = list(range(5))
    perfect = relevant + list(range(100, 120))
    assert ndcg_at_k(perfect, relevant, 10) == pytest.approx(1.0)
    assert average_precision_at_k(perfect, relevant, 10) == pytest.approx(1.0)
    worst = list(range(100, 105)) + relevant  # hits at ranks 6..10
    assert 0 < ndcg_at_k(worst, relevant, 10) < 1
    # AP = (1/6 + 2/7 + 3/8 + 4/9 + 5/10) / 5
    assert average_precision_at_k(worst, relevant, 10) == pytest.approx((1/6 + 2/7 + 3/8 + 4/9 + 5/10) / 5)


def test_relevant_may_be_any_collection_and_ranked_any_sequence():
    assert ndcg_at_k((1, 2, 3), [3, 3, 3], 3) == ndcg_at_k([1, 2, 3], {3}, 3)  # |R| counts distinct items
    assert ndcg_at_k(np.array([1, 2, 3]), frozenset({3}), 3) == pytest.approx(0.5)


@pytest.mark.parametrize("k", [0, -1, 2.0, True, None])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k([1], {1}, k)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        average_precision_at_k([1], {1}, k)
