"""The follow-up study's strategies in the model and the CLI: presets and their validation, mixup, each
preset's losses against independent numpy, configuration round trips, and two replicas ≡ one device
for the Hybrid preset with genre weighting."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from test_model import _EQUIVALENCE_SCRIPT, V, make_batch, np_nt_xent  # noqa: E402

from cmir_tf.errors import ConfigError  # noqa: E402
from cmir_tf.model import presets  # noqa: E402
from cmir_tf.model.contrastive import MODES, ContrastiveModel, build_model, mixup  # noqa: E402
from cmir_tf.train.config import config_from_args  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def w2v():
    return np.random.default_rng(0).normal(size=(V, 200)).astype("float32")


# --------------------------------------------------------------------------------------------- presets
def test_presets_compose_and_refuse_what_cannot_train():
    assert presets.resolve("hybrid").parts == ("a2g", "a2p", "g2p", "a2a_playlist")
    assert presets.resolve("hybrid", audio_pairs="genre", mixup=0).parts[-1] == "a2a_genre"
    assert presets.resolve("hybrid", mixup=0).mixup is None
    assert presets.resolve("contr_g", audio_pairs="artist").parts == ("a2g", "a2a_artist")
    assert presets.resolve("aim_playlist", align="g2p, a2g").parts == ("a2g", "g2p", "a2a_playlist")
    for mode, kwargs, message in (
            ("bline_g", {"audio_pairs": "playlist"}, "the baseline bline_g takes no cross-modal terms"),
            ("ss", {"align": "a2g"}, "each song would be its own negative"),
            ("cm", {"align": ""}, "has nothing to train"),
            ("contr_g", {"align": "a2x"}, "unknown term 'a2x'"),
            ("contr_g", {"audio_pairs": "album"}, "unknown source 'album'"),
            ("contr_g", {"mixup": -1.0}, "α must be ≥ 0"),
            ("aim_everything", {}, "unknown mode 'aim_everything'")):
        with pytest.raises(ConfigError, match=message):
            presets.resolve(mode, **kwargs)


def test_cli_flags_name_the_strategy_and_errors_name_the_flag():
    cfg, _ = config_from_args(["--data", "d", "--mode", "contr_g", "--audio-pairs", "artist", "--mixup"])
    assert (cfg.audio_pairs, cfg.mixup, cfg.preset().parts) == ("artist", 7.0, ("a2g", "a2a_artist"))
    cfg, _ = config_from_args(["--data", "d", "--mode", "contr_cf_g", "--mixup"])
    assert cfg.mixup == 5.0  # the study's α for cross-modal terms only
    cfg, _ = config_from_args(["--data", "d", "--self-supervised", "--align", "", "--lambda-audio", "0.5"])
    assert cfg.preset().parts == ("a2a_self",) and cfg.lambda_audio == 0.5
    cfg, _ = config_from_args(["--data", "d", "--mode", "hybrid", "--mixup", "0"])
    assert cfg.preset().mixup is None
    with pytest.raises(ConfigError, match=r"^--align: unknown term 'a2x'"):
        config_from_args(["--data", "d", "--align", "a2x"])
    with pytest.raises(ConfigError, match=r"^--mode: the baseline bline_cf takes no"):
        config_from_args(["--data", "d", "--mode", "bline_cf", "--audio-pairs", "genre"])


def test_help_lists_every_preset_and_strategy_flag(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--help"])
    text = capsys.readouterr().out
    for word in (*presets.PRESETS, "--audio-pairs", "--self-supervised", "--align", "--mixup", "--lambda-audio"):
        assert word in text


# ----------------------------------------------------------------------------------------------- mixup
def test_mixup_mixes_each_example_with_a_partner_of_its_batch():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(64, 5, 3)), tf.float32)
    mixed, gains, perm = (t.numpy() for t in mixup(x, 7.0, 2.0, [3, 4]))
    x = x.numpy()
    assert sorted(perm.tolist()) == list(range(64))  # a permutation of the batch
    assert ((0 <= gains) & (gains <= 1)).all()
    for i in range(64):  # on the segment between the example and its partner, at the drawn gain
        partner = x[perm[i]]
        if perm[i] == i:  # its own partner: left as it is
            np.testing.assert_allclose(mixed[i], x[i], atol=1e-6)
            continue
        direction = (x[i] - partner).ravel()
        coef = float(direction @ (mixed[i] - partner).ravel() / (direction @ direction))
        np.testing.assert_allclose(mixed[i], partner + coef * (x[i] - partner), atol=1e-5)
        assert coef == pytest.approx(gains[i], abs=1e-5)
    # the same seed, the same draw; the gains follow Beta(7, 2) (mean 7/9, variance 14/(81·10))
    np.testing.assert_array_equal(mixup(tf.constant(x), 7.0, 2.0, [3, 4])[0].numpy(), mixed)
    many = mixup(tf.zeros([40000, 1]), 7.0, 2.0, [5, 6])[1].numpy()
    assert many.mean() == pytest.approx(7 / 9, abs=0.005)
    assert many.var() == pytest.approx(14 / 810, rel=0.05)
    # α → ∞: the gain is 1, mixup is the identity
    np.testing.assert_allclose(mixup(tf.constant(x), 1e9, 2.0, [1, 2])[0].numpy(), x, atol=1e-6)


def test_mixup_is_applied_in_training_only(w2v):
    data = make_batch(np.random.default_rng(2), batch=8)
    mixed = build_model("aim_playlist", w2v, dropout=0.0, mixup=0.3)
    plain = build_model("aim_playlist", w2v, dropout=0.0, mixup=0)
    for v, w in zip(plain.weights, mixed.weights):
        v.assign(w)
    ds = tf.data.Dataset.from_tensors(data)
    assert mixed.evaluate(ds, verbose=0, return_dict=True) == plain.evaluate(ds, verbose=0, return_dict=True)
    # the loss of a training step is taken before its update, from the same weights: only mixup differs
    train_mixed = mixed.train_on_batch(data, return_dict=True)["loss"]
    train_plain = plain.train_on_batch(data, return_dict=True)["loss"]
    assert abs(train_mixed - train_plain) > 1e-3


# -------------------------------------------------------------------------------------------- losses
def np_weighted(a, b, sets, tau):
    """Weighted NT-Xent with W_ij = |G_i ∩ G_j| / (|G_i| + |G_j|), float64 loops."""
    z = np.concatenate([a, b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    terms = []
    for i in range(n):
        w = [len(sets[i] & sets[j]) / (len(sets[i]) + len(sets[j])) if j != i else 0.0 for j in range(n)]
        if sum(w) == 0:
            continue
        s = [float(z[i] @ z[j]) / tau for j in range(n)]
        terms.append(-sum(w[j] / sum(w) * s[j] for j in range(n))
                     + math.log(sum(math.exp(s[k]) for k in range(n) if k != i)))
    return sum(terms) / len(terms)


STRATEGIES = [("cm", {}), ("aim_playlist", {}), ("aim_artist", {}), ("aim_genre", {}), ("ss", {}),
              ("hybrid", {}), ("hybrid", {"audio_pairs": "genre"}), ("contr_g", {"audio_pairs": "artist"})]


@pytest.mark.parametrize("mode, overrides", STRATEGIES)
def test_evaluation_loss_of_each_strategy_matches_independent_computation(mode, overrides, w2v):
    """Rows [:m] and [m:] are the pairs; every λ distinct, so a term weighted by the wrong λ would fail."""
    data = make_batch(np.random.default_rng(3), batch=6)
    lambdas, lambda_audio, tau = (0.5, 2.0, 3.0), 0.25, 0.2
    model = build_model(mode, w2v, temperature=tau, lambdas=lambdas, lambda_audio=lambda_audio, dropout=0.0,
                        **overrides)
    out = {k: np.asarray(v, np.float64) for k, v in model(data, training=False).items()}
    preset = model.preset
    expected = {}
    for k, (left, right) in {"a2g": ("audio", "genre"), "a2p": ("audio", "cf"), "g2p": ("genre", "cf")}.items():
        if k in preset.align:
            expected[k] = np_nt_xent(out[left], out[right], tau)  # over all 2m rows
    if preset.audio_pairs:
        audio = out["audio"]
        if preset.audio_pairs == "genre":
            sets = [set(g[mask].tolist()) for g, mask in zip(data["genres"], data["genre_mask"])]
            expected[preset.intra_term] = np_weighted(audio[:3], audio[3:], sets, tau)
        else:
            expected[preset.intra_term] = np_nt_xent(audio[:3], audio[3:], tau)
    weight = {"a2g": lambdas[0], "a2p": lambdas[1], "g2p": lambdas[2]}
    expected["loss"] = sum(weight.get(k, lambda_audio) * v for k, v in expected.items())
    got = model.evaluate(tf.data.Dataset.from_tensors(data), verbose=0, return_dict=True)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key


def test_model_json_of_the_papers_modes_is_unchanged_and_strategies_round_trip(w2v):
    legacy = {"name", "mode", "vocab_size", "w2v_dim", "dropout", "temperature", "lambdas", "embed_dim",
              "num_heads", "cf_dim", "cnn_dtype"}
    for mode in MODES:
        assert set(build_model(mode, w2v, compile=False).get_config()) == legacy
    model = build_model("hybrid", w2v, compile=False, audio_pairs="genre", lambda_audio=0.5)
    config = json.loads(json.dumps(model.get_config()))
    assert {k: config[k] for k in ("align", "audio_pairs", "mixup", "lambda_audio")} == {
        "align": ["a2g", "a2p", "g2p"], "audio_pairs": "genre", "mixup": 7.0, "lambda_audio": 0.5}
    clone = ContrastiveModel.from_config(config)
    assert clone.get_config() == config and clone.parts == model.parts


@pytest.mark.slow
def test_two_replica_step_equals_one_device_step_for_hybrid_with_genre_weighting():
    """As tests/test_model.py's equivalence test (float64, SGD, 2 logical CPUs), for Hybrid with genre
    pairs (mixup off: its draws differ per replica by design). Each replica holds [its first songs; their
    partners]; the one-device batch holds the same pairs in the global order [every replica's first
    songs; every replica's partners], so the genre weights, the all-gathered negatives and synchronised
    BatchNorm must all be global for the two runs to agree."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _EQUIVALENCE_SCRIPT, "hybrid:genre"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])["hybrid:genre"]
    assert res["replicas"] == 2 and res["synced"] == [True, False]
    one, two = res["losses"]
    assert set(one) == {"loss", "a2g", "a2p", "g2p", "a2a_genre"}
    for key in one:
        assert two[key][0] == pytest.approx(one[key][0], rel=1e-10), key
    assert res["weight_err"] < 1e-10
    assert res["moved"]["audio_encoder/conv0/kernel"] > 1e-3
