"""Proof of learning on planted structure: short trainings beat the same network's random initialisation.

The synthetic Melon set plants genres (band envelopes, rhythm), a hidden playlist "taste" and artists
(one per genre × taste cell, each with an audio signature) into the spectrograms. The same network is
exported as initialised (seed 0) and after a short training from that initialisation, and every export
goes through the user-facing path (SavedModel → Embedder / evaluate). contr_cf_g (20 steps) must
separate genres better (a logistic-regression probe on held-out songs, the paper's genre task in
miniature) and continue playlists better (the paper's playlist protocol with an annoy index, Table 3 in
miniature); of the follow-up study's strategies, A-IM playlist and Hybrid must continue playlists
better, A-IM artist must separate artists better (an artist probe) and SS genres.

``train`` seeds Keras with the run's seed before building the model, and the audio encoder is built
first, so every preset starts from the same audio encoder as the exported initialisation (checked).
"""
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SEED = 0
# Steps of each strategy's run (batch 32 rows, lr 1e-3), the fewest that clear the margin on this data.
# Measured (trained vs random init): aim_playlist nDCG 0.455 / MAP 0.273 vs 0.435 / 0.251 (30 steps:
# 0.429, not yet); hybrid 0.448 / 0.264; aim_artist artist probe 0.111 vs 0.050; ss genre probe 0.795
# vs 0.279 (training is deterministic for the seed on one machine; another CPU may move the last digits).
STRATEGY_STEPS = {"aim_playlist": 40, "hybrid": 20, "aim_artist": 30, "ss": 20}


@pytest.fixture(scope="module")
def learning(tmp_path_factory):
    """(root with melon/ and data/, the export of the initialisation, a memo of trained exports)."""
    import keras

    from cmir_tf.export import export_model
    from cmir_tf.model import build_model, dummy_batch
    from cmir_tf.prepare import prepare
    from cmir_tf.synth import make_synthetic_melon

    root = tmp_path_factory.mktemp("learning")
    make_synthetic_melon(root / "melon", songs=500, playlists=200, seed=3)
    prepare(root / "melon", root / "data", workers=2, seed=3, progress=False, verbose=False)
    word2vec = np.load(root / "data" / "word2vec.npy")
    keras.utils.set_random_seed(SEED)
    untrained = build_model("contr_cf_g", word2vec)
    untrained(dummy_batch(), training=False)
    for mode in STRATEGY_STEPS:  # every preset starts from this audio encoder
        keras.utils.set_random_seed(SEED)
        other = build_model(mode, word2vec, compile=False)
        assert all(np.array_equal(a, b) for a, b in zip(other.audio_encoder.get_weights(),
                                                         untrained.audio_encoder.get_weights())), mode
    vocab = json.loads((root / "data" / "vocab.json").read_text())
    initial = export_model(untrained.audio_encoder, untrained.genre_encoder, vocab, root / "export_initial")
    return root, initial.out_dir, {}


def trained_export(learning, mode: str, steps: int) -> str:
    """Train ``mode`` for ``steps`` (once per module) and export it; returns the export folder."""
    from cmir_tf.export import export_run
    from cmir_tf.train import TrainConfig, train

    root, _, done = learning
    if mode not in done:
        cfg = TrainConfig(data=str(root / "data"), out=str(root / f"run_{mode}"), mode=mode, epochs=1,
                          steps_per_epoch=steps, batch_size=32, lr=1e-3, validation_steps=1, seed=SEED, export=False)
        done[mode] = export_run(train(cfg), root / f"export_{mode}").out_dir
    return done[mode]


@pytest.fixture(scope="module")
def exports(learning):
    root, initial, _ = learning
    return root, {"trained": trained_export(learning, "contr_cf_g", 20), "initial": initial}


def _genre_probe_accuracy(root, export_dir):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from cmir_tf.embed import Embedder
    from cmir_tf.melon import MelonLayout, load_mel

    layout = MelonLayout(root / "melon")
    splits = json.loads((root / "data" / "splits.json").read_text())
    meta = {s["id"]: s for s in json.loads((root / "melon" / "song_meta.json").read_text())}
    embedder = Embedder(export_dir)
    X, y = [], []
    for song in splits["val"] + splits["test"]:  # songs the model never trained on
        X.append(embedder.embed_mel(load_mel(layout.mel_path(song)))[1])
        y.append(meta[song]["song_gn_gnr_basket"][0])
    X = np.asarray(X)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    scores = cross_val_score(LogisticRegression(max_iter=3000), X, y, cv=folds)
    return float(scores.mean()), len(y)


def test_contrastive_training_beats_random_init_on_a_genre_probe(exports):
    root, dirs = exports
    trained, n = _genre_probe_accuracy(root, dirs["trained"])
    initial, _ = _genre_probe_accuracy(root, dirs["initial"])
    print(f"genre probe on {n} held-out songs: trained {trained:.3f}, random init {initial:.3f}")
    # measured here: trained ≈ 0.55, random init ≈ 0.32 (8 major genres, chance 0.125)
    assert trained >= initial + 0.10


def test_contrastive_training_beats_random_init_on_playlist_continuation(exports):
    root, dirs = exports
    results = _playlist_continuation(root, dirs)
    print({name: (round(r["ndcg"], 4), round(r["map"], 4), r["random"]) for name, r in results.items()})
    assert results["trained"]["n_playlists"] >= 20
    assert results["trained"]["ndcg"] > results["initial"]["ndcg"]
    assert results["trained"]["map"] > results["initial"]["map"]
    assert results["trained"]["ndcg"] > results["trained"]["random"]["ndcg"]


def _playlist_continuation(root, dirs):
    from cmir_tf.cache import load_model
    from cmir_tf.downstream import Params
    from cmir_tf.playlists import evaluate_playlists

    params = Params(progress=False)
    return {name: evaluate_playlists(root / "data", root / "melon", load_model(name, d), params=params)
            for name, d in dirs.items()}


@pytest.mark.parametrize("mode", ["aim_playlist", "hybrid"])
def test_playlist_pairs_beat_random_init_on_playlist_continuation(learning, mode):
    root, initial, _ = learning
    results = _playlist_continuation(root, {mode: trained_export(learning, mode, STRATEGY_STEPS[mode]),
                                            "initial": initial})
    print({name: (round(r["ndcg"], 4), round(r["map"], 4)) for name, r in results.items()})
    assert results[mode]["ndcg"] > results["initial"]["ndcg"]
    assert results[mode]["map"] > results["initial"]["map"]


def _artist_probe_accuracy(root, export_dir):
    """3-fold logistic-regression accuracy of the artist, on the training songs of artists with ≥ 3 of
    them (one centre crop a song, through the SavedModel's serving signature)."""
    import tensorflow as tf
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from cmir_tf.melon import MelonLayout, load_mel

    layout = MelonLayout(root / "melon")
    train = json.loads((root / "data" / "splits.json").read_text())["train"]
    artist = {s["id"]: s["artist_id_basket"][0] for s in json.loads((root / "melon" / "song_meta.json").read_text())}
    counts = {a: sum(artist[s] == a for s in train) for a in {artist[s] for s in train}}
    songs = [s for s in train if counts[artist[s]] >= 3]
    serve = tf.saved_model.load(str(export_dir) + "/saved_model/1").signatures["serving_default"]
    crops = np.stack([load_mel(layout.mel_path(s))[810:1066] for s in songs]).astype(np.float32)
    x = np.concatenate([serve(melspectrogram=tf.constant(crops[i:i + 64]))["embeddings"].numpy()
                        for i in range(0, len(crops), 64)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    return float(cross_val_score(LogisticRegression(max_iter=3000), x, [artist[s] for s in songs], cv=folds).mean())


def test_artist_pairs_beat_random_init_on_an_artist_probe(learning):
    root, initial, _ = learning
    trained = _artist_probe_accuracy(root, trained_export(learning, "aim_artist", STRATEGY_STEPS["aim_artist"]))
    start = _artist_probe_accuracy(root, initial)
    print(f"artist probe: aim_artist {trained:.3f}, random init {start:.3f}")
    assert trained >= start + 0.04


def test_self_supervised_crops_beat_random_init_on_the_genre_probe(learning):
    root, initial, _ = learning
    trained, n = _genre_probe_accuracy(root, trained_export(learning, "ss", STRATEGY_STEPS["ss"]))
    start, _ = _genre_probe_accuracy(root, initial)
    print(f"genre probe on {n} held-out songs: ss {trained:.3f}, random init {start:.3f}")
    assert trained >= start + 0.10
