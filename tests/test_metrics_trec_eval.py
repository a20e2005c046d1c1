"""nDCG@k and AP@k equal trec_eval's own ``ndcg_cut`` / ``map_cut`` (its C code, via pytrec-eval-terrier)."""
import numpy as np
import pytest
import pytrec_eval  # the test extra's pytrec-eval-terrier: trec_eval's C code

from cmir_tf.evaluate.metrics import average_precision_at_k, ndcg_at_k


def _trec(ranked, relevant, k):
    qrel = {"q": {f"d{d}": 1 for d in relevant}}
    # trec_eval orders a run by score, descending: give the ranked list strictly decreasing scores
    run = {"q": {f"d{d}": float(len(ranked) - i) for i, d in enumerate(ranked)}}
    measures = {f"ndcg_cut.{k}", f"map_cut.{k}"}
    out = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)["q"]
    return out[f"ndcg_cut_{k}"], out[f"map_cut_{k}"]


@pytest.mark.parametrize("seed", range(40))
def test_equal_to_trec_eval_on_random_rankings(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.choice([5, 10, 100]))
    pool = rng.permutation(300)
    ranked = pool[: int(rng.integers(1, 150))].tolist()
    relevant = rng.choice(300, size=int(rng.integers(1, k + 1)), replace=False).tolist()  # |relevant| ≤ k
    ndcg, ap = _trec(ranked, relevant, k)
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(ndcg, abs=1e-9)
    assert average_precision_at_k(ranked, relevant, k) == pytest.approx(ap, abs=1e-9)


def test_ap_denominator_differs_from_map_cut_only_when_more_relevant_than_k():
    # trec_eval's map_cut divides by all relevant documents; AP@k here (the paper's, Melon's) by min(|R|, k)
    ranked, relevant, k = list(range(20)), list(range(0, 40, 2)), 10
    ndcg, ap = _trec(ranked, relevant, k)
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(ndcg, abs=1e-9)
    assert average_precision_at_k(ranked, relevant, k) * min(len(relevant), k) / len(relevant) == pytest.approx(ap, abs=1e-9)
