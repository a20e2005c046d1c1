"""Melon playlist continuation: the task read from the prepared split and Melon's playlists, the protocol
checked against a hand-worked case and an independent brute-force re-computation."""
import json

import numpy as np
import pytest
from downstream_data import FAST, NoiseEmbedder, SignalEmbedder, fake_model, melon  # noqa: F401 (fixture)

from cmir_tf.errors import DataError
from cmir_tf.evaluate.downstream import Params
from cmir_tf.evaluate.metrics import average_precision_at_k, ndcg_at_k
from cmir_tf.evaluate.playlists import evaluate_playlists, playlist_protocol, read_playlist_task


def test_playlist_task_queries_and_relevant(melon):
    layout, prepared = melon
    task = read_playlist_task(prepared, layout.root)
    splits = json.loads((prepared / "splits.json").read_text())
    test = set(splits["test"])
    by_id = {p: (q, r) for p, q, r in task["playlists"]}
    assert 900 not in by_id and 901 not in by_id and task["n_no_query"] == 1
    assert by_id[902] == ([splits["train"][0]], [splits["test"][0]])  # unknown song dropped, duplicate once
    for _, queries, relevant in task["playlists"]:
        assert relevant and set(relevant) <= test and queries and not set(queries) & test
    assert task["n_with_test"] == len(task["playlists"]) + 1
    assert task["test_ids"] == sorted(test)


def test_playlist_protocol_hand_worked():
    vectors = {1: [1, 0], 2: [0, 1], 3: [-1, 0], 4: [0.8, 0.6], 10: [1, 0.1], 11: [0.6, 0.8]}
    vectors = {s: np.asarray(v, np.float32) for s, v in vectors.items()}
    # query 10 → [1, 4]; query 11 → [4, 2]; counts 4:2, 1:1 (cos .995), 2:1 (cos .8) → [4, 1]
    playlists = [("A", [10, 11], [1]), ("B", [10], [3]), ("C", [99], [2])]  # C: query without a vector
    r = playlist_protocol(playlists, vectors, [1, 2, 3, 4], Params(k=2, progress=False))
    assert r["n_playlists"] == 2 and r["n_test_songs"] == 4 and r["n_query_songs"] == 2
    assert r["ndcg"] == pytest.approx((1 / np.log2(3) + 0) / 2)
    assert r["map"] == pytest.approx((0.5 + 0) / 2)


def _brute_force_playlists(task, vectors, k):
    cands = np.asarray(task["test_ids"])
    c = np.stack([vectors[s] for s in cands])
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    nd, ap = [], []
    for _, queries, relevant in task["playlists"]:
        count, sims = {}, {}
        for q in queries:
            cos = c @ (vectors[q] / np.linalg.norm(vectors[q]))
            for i in np.argsort(-cos)[:k]:
                count[cands[i]] = count.get(cands[i], 0) + 1
                sims[cands[i]] = sims.get(cands[i], 0.0) + cos[i]
        ranked = sorted(count, key=lambda s: (-count[s], -sims[s], s))[:k]
        nd.append(ndcg_at_k(ranked, relevant, k))
        ap.append(average_precision_at_k(ranked, relevant, k))
    return np.mean(nd), np.mean(ap)


def test_playlists_signal_high_noise_chance(melon):
    layout, prepared = melon
    fake = SignalEmbedder()
    keep = {}
    good = evaluate_playlists(prepared, layout.root, fake_model(fake), params=FAST, keep_embeddings=keep)
    task = read_playlist_task(prepared, layout.root)
    assert good["n_playlists"] == len(task["playlists"]) and good["n_no_query"] == 1
    # the test songs and the queries are embedded, nothing else
    assert fake.calls == len(set(task["test_ids"]) | {q for _, qs, _ in task["playlists"] for q in qs})
    vectors = {s: fake(layout.mel_path(s)).mean(axis=0) for s in json.loads((prepared / "splits.json").read_text())["train"]
               + task["test_ids"] + json.loads((prepared / "splits.json").read_text())["val"]}
    want_ndcg, want_map = _brute_force_playlists(task, vectors, FAST.k)
    assert good["ndcg"] == pytest.approx(want_ndcg, abs=1e-9) and good["map"] == pytest.approx(want_map, abs=1e-9)
    # measured: signal 0.69-0.73, random and noise 0.07-0.14 (three fixture seeds)
    assert good["ndcg"] >= 0.55 and good["map"] >= 0.45 and good["random"]["ndcg"] <= 0.2
    noise = evaluate_playlists(prepared, layout.root, fake_model(NoiseEmbedder()), params=FAST)
    assert noise["ndcg"] <= 0.25 and abs(noise["ndcg"] - noise["random"]["ndcg"]) <= 0.1
    assert noise["random"] == good["random"]  # the seeded baseline does not depend on the model
    assert len(keep["melon"]) == 40


def test_playlist_errors(melon, tmp_path):
    layout, prepared = melon
    with pytest.raises(DataError, match="splits.json: missing"):
        read_playlist_task(tmp_path, layout.root)
    with pytest.raises(DataError, match="nope: Melon folder does not exist"):
        read_playlist_task(prepared, tmp_path / "nope")
    with pytest.raises(DataError, match="none of train.json"):
        read_playlist_task(prepared, tmp_path)
