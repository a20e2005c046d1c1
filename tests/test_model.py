"""The model presets: losses against independent numpy, training steps, serialisation, resuming,
and one-device ≡ two-replica equivalence of a training step (global-batch semantics)."""
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from cmir_tf.errors import ConfigError  # noqa: E402
from cmir_tf.model.contrastive import MODES, ContrastiveModel, build_model, multi_hot  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
V = 11  # genre vocabulary of the tests


def make_batch(rng, batch=4, vocab=V):
    lengths = rng.integers(1, 11, size=(batch, 1))
    mask = np.arange(10)[None] < lengths
    genres = rng.integers(0, vocab, size=(batch, 10)).astype("int32")
    genres[~mask] = 0
    return {
        "mel": rng.normal(size=(batch, 256, 48)).astype("float32"),
        "genres": genres,
        "genre_mask": mask,
        "cf": rng.random(size=(batch, 300)).astype("float32"),
        "song_id": np.arange(batch, dtype="int64"),
    }


@pytest.fixture(scope="module")
def w2v():
    return np.random.default_rng(0).normal(size=(V, 200)).astype("float32")


def np_nt_xent(a, b, tau):
    """Mean over the 2M anchors of eq. 9's per-anchor terms (float64, explicit loops)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    z = np.concatenate([a, b])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    m = len(a)
    total = 0.0
    for i in range(2 * m):
        pos = i + m if i < m else i - m
        denom = sum(math.exp(z[i] @ z[k] / tau) for k in range(2 * m) if k != i)
        total += -(z[i] @ z[pos] / tau - math.log(denom))
    return total / (2 * m)


def test_rejects_unknown_mode_and_missing_vocabulary(w2v):
    with pytest.raises(ConfigError, match="unknown mode 'contr_x'.*contr_cf_g"):
        build_model("contr_x", w2v)
    with pytest.raises(ConfigError, match="word2vec"):
        build_model("contr_g", None)
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        build_model("contr_cf", None, temperature=0.0)
    # the CF-only modes need no genre vocabulary
    assert build_model("contr_cf", None, compile=False).genre_encoder is None


def test_multi_hot_targets_ignore_padding():
    genres = np.array([[3, 1, 0, 0], [0, 2, 2, 0]])
    mask = np.array([[True, True, False, False], [True, True, True, False]])
    expected = np.array([[0, 1, 0, 1], [1, 0, 1, 0]], np.float32)
    np.testing.assert_array_equal(multi_hot(genres, mask, 4).numpy(), expected)


@pytest.mark.parametrize("mode", list(MODES))
def test_evaluation_loss_matches_independent_computation(mode, w2v):
    """test_step's loss and parts = λ-weighted numpy losses recomputed from the model's outputs.

    The weight of each part is written out from the paper's eq. 13 and the baselines' definition (model
    docstring), with three distinct λ, so a model that weighted a part by the wrong λ would fail.
    """
    rng = np.random.default_rng(1)
    data = make_batch(rng, batch=5)
    lambda_a2g, lambda_a2p, lambda_g2p = 0.5, 2.0, 3.0
    model = build_model(mode, w2v, temperature=0.2, lambdas=(lambda_a2g, lambda_a2p, lambda_g2p), dropout=0.0)
    out = {k: np.asarray(v, np.float64) for k, v in model(data, training=False).items()}
    expected = {}
    if "a2g" in MODES[mode]:
        expected["a2g"] = np_nt_xent(out["audio"], out["genre"], 0.2)
    if "a2p" in MODES[mode]:
        expected["a2p"] = np_nt_xent(out["audio"], out["cf"], 0.2)
    if "g2p" in MODES[mode]:
        expected["g2p"] = np_nt_xent(out["genre"], out["cf"], 0.2)
    if "genre" in MODES[mode]:
        y = np.zeros((5, V))
        for i in range(5):
            y[i, data["genres"][i][data["genre_mask"][i]]] = 1.0
        p = 1 / (1 + np.exp(-out["genre_logits"]))
        expected["genre"] = float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))
    if "cf" in MODES[mode]:
        pred, cf = out["cf_pred"], data["cf"].astype(np.float64)
        cos = (pred * cf).sum(1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(cf, axis=1))
        expected["cf"] = float(np.mean(1 - cos))
    # eq. 13: L = λ_A2G·L_A2G + λ_A2P·L_A2P + λ_G2P·L_G2P; baselines: λ_A2G·BCE(genres) + λ_A2P·(1 − cos)(CF)
    paper_weight = {"a2g": lambda_a2g, "a2p": lambda_a2p, "g2p": lambda_g2p, "genre": lambda_a2g, "cf": lambda_a2p}
    expected["loss"] = sum(paper_weight[k] * v for k, v in expected.items())
    got = model.evaluate(tf.data.Dataset.from_tensors(data), verbose=0, return_dict=True)
    assert set(got) == {"loss", *MODES[mode]}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-5), key


def test_model_outputs_per_mode(w2v):
    data = make_batch(np.random.default_rng(2), batch=3)
    shapes = {
        "contr_cf_g": {"audio": (3, 128), "features": (3, 1024), "genre": (3, 128), "cf": (3, 128)},
        "contr_g": {"audio": (3, 128), "features": (3, 1024), "genre": (3, 128)},
        "bline_cf_g": {"audio": (3, 128), "features": (3, 1024), "genre_logits": (3, V), "cf_pred": (3, 300)},
    }
    for mode, expected in shapes.items():
        out = build_model(mode, w2v, compile=False)(data, training=False)
        assert {k: tuple(v.shape) for k, v in out.items()} == expected


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode, cnn_dtype", [(mode, None) for mode in MODES] + [("contr_cf_g", "mixed_bfloat16")]
)
def test_each_mode_trains_and_its_loss_decreases_on_a_fixed_batch(mode, cnn_dtype, w2v):
    keras.utils.set_random_seed(3)
    data = make_batch(np.random.default_rng(3), batch=6)
    model = build_model(mode, w2v, learning_rate=1e-3, cnn_dtype=cnn_dtype)
    losses = [model.train_on_batch(data, return_dict=True) for _ in range(6)]
    assert set(losses[0]) == {"loss", *MODES[mode]}
    first = losses[0]["loss"]
    # train_on_batch reports the running mean since the last reset; undo it for the last step's loss
    last = 6 * losses[-1]["loss"] - 5 * losses[-2]["loss"]
    assert all(math.isfinite(x["loss"]) for x in losses)
    assert last < first, [x["loss"] for x in losses]


@pytest.mark.slow
def test_weights_and_config_round_trip(tmp_path, w2v):
    data = make_batch(np.random.default_rng(4), batch=4)
    model = build_model("contr_cf_g", w2v, dropout=0.3, temperature=0.07, lambdas=(1, 0.5, 2))
    model.train_on_batch(data)  # moves BN statistics and creates optimizer state
    ref = {k: np.asarray(v) for k, v in model(data, training=False).items()}

    path = tmp_path / "run.weights.h5"
    model.save_weights(path)
    # rebuilt from its config (no word2vec passed: it comes back from the weights file)
    clone = ContrastiveModel.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()
    clone.load_weights(path)
    np.testing.assert_array_equal(clone.genre_encoder.word2vec.numpy(), w2v)
    for key, value in clone(data, training=False).items():
        np.testing.assert_array_equal(np.asarray(value), ref[key])

    full = tmp_path / "model.keras"
    model.save(full)
    loaded = keras.models.load_model(full)
    assert isinstance(loaded, ContrastiveModel) and loaded.mode == "contr_cf_g"
    for key, value in loaded(data, training=False).items():
        np.testing.assert_array_equal(np.asarray(value), ref[key])


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.model._interrupt_at == (self._epoch, batch):
            raise RuntimeError("simulated crash")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


@pytest.mark.slow
def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path, w2v):
    rng = np.random.default_rng(5)
    batches = [make_batch(rng, batch=4) for _ in range(2)]
    ds = tf.data.Dataset.from_tensor_slices({k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
    ds = ds.batch(4)
    backup = str(tmp_path / "backup")

    keras.utils.set_random_seed(6)
    model = build_model("contr_cf", None)
    model._interrupt_at = (1, 0)
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(ds, epochs=3, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), _Interrupt()])
    assert os.listdir(backup)

    fresh = build_model("contr_cf", None)
    fresh._interrupt_at = None
    history = fresh.fit(ds, epochs=3, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup), _Interrupt()])
    assert history.epoch == [1, 2]  # continued after the backed-up epoch 0 instead of starting over
    # optimizer state came back too: 2 steps of epoch 0 + 2 × 2 steps after resuming
    assert int(fresh.optimizer.iterations.numpy()) == 6


_EQUIVALENCE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    keras.config.set_floatx("float64")
    from cmir_tf.model import build_model

    rng = np.random.default_rng(0)
    B, V, STEPS = 8, 11, 2

    def make_batch():
        mask = np.arange(10)[None] < rng.integers(1, 11, size=(B, 1))
        g = rng.integers(0, V, size=(B, 10)).astype("int32")
        g[~mask] = 0
        return {"mel": rng.normal(size=(B, 256, 48)), "genres": g, "genre_mask": mask,
                "cf": rng.random(size=(B, 300)), "song_id": np.arange(B, dtype="int64")}

    batches = [make_batch() for _ in range(STEPS)]
    w2v = rng.normal(size=(V, 200))

    def dataset(order=np.arange(B)):  # STEPS global batches of B rows; under the strategy each replica gets B/2
        stacked = {k: np.concatenate([b[k][order] for b in batches]) for k in batches[0]}
        return tf.data.Dataset.from_tensor_slices(stacked).batch(B)

    # "mode:source" = mode with audio pairs (mixup off): a replica's rows are [its first songs; partners],
    # so the one-device batch holds the same pairs as [every replica's first songs; every partner]
    h = B // 2
    pair_order = np.concatenate([np.arange(h // 2), h + np.arange(h // 2), h // 2 + np.arange(h // 2),
                                 h + h // 2 + np.arange(h // 2)])
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])  # one per process: collective keys
    result = {}
    for spec in sys.argv[1:]:
        mode, _, pairs = spec.partition(":")
        kwargs = {"audio_pairs": pairs, "mixup": 0} if pairs else {}
        keras.utils.set_random_seed(0)
        one = build_model(mode, w2v, dropout=0.0, compile=False, **kwargs)
        # SGD: the update is proportional to the gradient, so a mis-scaled gradient shows
        # (Adam's first steps are nearly scale-invariant and would hide it).
        one.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        init = {v.path: v.numpy() for v in one.weights}
        with strategy.scope():
            two = build_model(mode, w2v, dropout=0.0, compile=False, **kwargs)
            two.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        for v in two.weights:
            v.assign(init[v.path])
        h1 = one.fit(dataset(pair_order if pairs else np.arange(B)), epochs=1, verbose=0).history
        h2 = two.fit(dataset(), epochs=1, verbose=0).history
        w1 = {v.path: v.numpy() for v in one.weights}
        w2 = {v.path: v.numpy() for v in two.weights}
        result[spec] = {
            "replicas": strategy.num_replicas_in_sync,
            "synced": [bool(two.audio_encoder.input_bn.synchronized), bool(one.audio_encoder.input_bn.synchronized)],
            "losses": [h1, h2],
            "weight_err": max(float(np.abs(w1[p] - w2[p]).max()) for p in w1),
            "moved": {p: float(np.abs(w1[p] - init[p]).max()) for p in w1},
        }
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_two_replica_step_equals_one_device_step():
    """Global-batch semantics: 2 steps under MirroredStrategy on 2 logical CPUs = 2 steps on one device.

    Run in float64 (where BatchNorm takes Keras's unfused path; the fused kernel is checked against
    it in test_encoders) so that float32 summation-order noise (which in this BN network alone moves some
    gradients by ~1e-2 relative when the batch is merely permuted) cannot hide or fake a difference:
    all-gathered negatives, synchronised BN, and the per-replica loss share make the two runs agree
    to ~1e-14; local-only negatives, unsynchronised BN or a wrong loss scale would differ at ~1e-2.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-c", _EQUIVALENCE_SCRIPT, "contr_cf_g", "bline_cf_g"],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for mode, res in result.items():
        assert res["replicas"] == 2 and res["synced"] == [True, False]
        one, two = res["losses"]
        assert set(one) == {"loss", *MODES[mode]}
        for key in one:
            assert two[key][0] == pytest.approx(one[key][0], rel=1e-10), (mode, key)
        assert res["weight_err"] < 1e-10, mode
        # every trained layer really moved (BN statistics included), so agreement is not vacuous
        moved = res["moved"]
        assert moved["audio_encoder/conv0/kernel"] > 1e-3 and moved["audio_encoder/fc1_bn/moving_mean"] > 1e-3
