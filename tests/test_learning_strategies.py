"""Proof of learning for the follow-up study's strategies (tests/learning_common.py): A-IM playlist and
Hybrid continue playlists better than the same network's random initialisation, A-IM artist separates
artists better (an artist probe) and SS genres (the genre probe)."""
import pytest
from learning_common import (STRATEGY_STEPS, artist_probe_accuracy, genre_probe_accuracy, playlist_continuation,
                             trained_export)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["aim_playlist", "hybrid"])
def test_playlist_pairs_beat_random_init_on_playlist_continuation(learning, mode):
    root, initial, _ = learning
    results = playlist_continuation(root, {mode: trained_export(learning, mode, STRATEGY_STEPS[mode]),
                                            "initial": initial})
    print({name: (round(r["ndcg"], 4), round(r["map"], 4)) for name, r in results.items()})
    assert results[mode]["ndcg"] > results["initial"]["ndcg"]
    assert results[mode]["map"] > results["initial"]["map"]


def test_artist_pairs_beat_random_init_on_an_artist_probe(learning):
    root, initial, _ = learning
    trained = artist_probe_accuracy(root, trained_export(learning, "aim_artist", STRATEGY_STEPS["aim_artist"]))
    start = artist_probe_accuracy(root, initial)
    print(f"artist probe: aim_artist {trained:.3f}, random init {start:.3f}")
    assert trained >= start + 0.04


def test_self_supervised_crops_beat_random_init_on_the_genre_probe(learning):
    root, initial, _ = learning
    trained, n = genre_probe_accuracy(root, trained_export(learning, "ss", STRATEGY_STEPS["ss"]))
    start, _ = genre_probe_accuracy(root, initial)
    print(f"genre probe on {n} held-out songs: ss {trained:.3f}, random init {start:.3f}")
    assert trained >= start + 0.10
