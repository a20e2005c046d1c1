"""mixed_float16: loss scaling in the custom train_step (update = float32's, overflow skipped, scale halved,
reported loss unscaled), agreement of the replicas on an overflow, and the loss scale in the run's backup."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
import keras  # noqa: E402

from cmir_tf.errors import DataError  # noqa: E402
from cmir_tf.model.contrastive import build_model  # noqa: E402
from cmir_tf.model.precision import PRECISIONS, cnn_dtype, loss_scale_state, needs_loss_scaling  # noqa: E402
from cmir_tf.train.rundir import RunDir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
from batches import V, make_batch  # noqa: E402  (tests/batches.py)


@pytest.fixture(scope="module")
def w2v():
    return np.random.default_rng(0).normal(size=(V, 200)).astype("float32")


def test_precisions_map_to_the_cnn_policy_and_only_float16_is_loss_scaled(w2v):
    assert PRECISIONS == ("float32", "mixed_float16", "mixed_bfloat16")
    assert [cnn_dtype(p) for p in PRECISIONS] == [None, "mixed_float16", "mixed_bfloat16"]
    assert [needs_loss_scaling(cnn_dtype(p)) for p in PRECISIONS] == [False, True, False]
    f16 = build_model("contr_cf", None, cnn_dtype="mixed_float16")
    assert isinstance(f16.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(f16.optimizer.inner_optimizer, keras.optimizers.Adam)
    assert not isinstance(build_model("contr_cf", None, cnn_dtype="mixed_bfloat16").optimizer,
                          keras.optimizers.LossScaleOptimizer)
    # float16 only in the convolution blocks: variables, embeddings and losses stay float32
    assert all(w.dtype == "float32" for w in f16.weights)
    assert f16.audio_encoder.convs[0].compute_dtype == "float16" and f16.audio_encoder.fc1.compute_dtype == "float32"
    out = f16(make_batch(np.random.default_rng(1), batch=2), training=False)
    assert out["audio"].dtype == "float32" and out["cf"].dtype == "float32"


def _delta(after, before):
    return {k: after[k] - before[k] for k in before}


@pytest.mark.slow
def test_float16_step_equals_the_float32_update_and_an_overflow_is_skipped(w2v):
    """One SGD step of contr_cf_g with a float16 CNN and loss scale 1024 moves every weight as the float32
    step does, within float16's rounding (SGD: the update is proportional to the gradient, so a gradient
    left scaled by 1024 would be 1024× too large); a step at scale 2⁴⁰ overflows float16, is skipped (no
    weight moves, no iteration counted) and halves the scale; both report the unscaled loss. The float16
    model runs with XLA (auto on one CPU replica): TensorFlow's CPU float16 convolution gradients are
    ~50× slower."""
    data = make_batch(np.random.default_rng(2))
    keras.utils.set_random_seed(0)
    m32 = build_model("contr_cf_g", w2v, dropout=0.0, compile=False)
    m32.compile(optimizer=keras.optimizers.SGD(0.1))
    m16 = build_model("contr_cf_g", w2v, dropout=0.0, compile=False, cnn_dtype="mixed_float16")
    m16.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile="auto")
    assert m16.jit_replica_step and not m32.jit_replica_step
    m16.set_weights(m32.get_weights())
    before = {w.path: w.numpy() for w in m32.trainable_weights}
    lso = m16.optimizer
    lso.build(m16.trainable_variables)

    lso.dynamic_scale.assign(2.0**40)
    skipped = m16.train_on_batch(data, return_dict=True)
    assert all(np.array_equal(w.numpy(), before[w.path]) for w in m16.trainable_weights)
    assert int(lso.iterations.numpy()) == 0 and float(lso.dynamic_scale.numpy()) == 2.0**39

    lso.dynamic_scale.assign(1024.0)
    m16.reset_metrics()
    got16 = m16.train_on_batch(data, return_dict=True)
    got32 = m32.train_on_batch(data, return_dict=True)
    assert int(lso.iterations.numpy()) == 1 and float(lso.dynamic_scale.numpy()) == 1024.0
    assert int(lso.step_counter.numpy()) == 1
    for key, value in got32.items():  # unscaled, as float32's (and the skipped step's forward too)
        assert got16[key] == pytest.approx(value, rel=5e-3), key
        assert skipped[key] == pytest.approx(value, rel=5e-3), key
    d16 = _delta({w.path: w.numpy() for w in m16.trainable_weights}, before)
    d32 = _delta({w.path: w.numpy() for w in m32.trainable_weights}, before)
    flat16 = np.concatenate([d16[k].ravel() for k in d32])
    flat32 = np.concatenate([d32[k].ravel() for k in d32])
    assert np.linalg.norm(flat16) / np.linalg.norm(flat32) == pytest.approx(1.0, abs=0.05)
    assert flat16 @ flat32 / (np.linalg.norm(flat16) * np.linalg.norm(flat32)) > 0.98
    for path, d in d32.items():
        if path.endswith("kernel"):  # float16 blocks: ~1e-1 (rounding of activations); float32 parts: ~1e-2
            limit = 0.25 if "/conv" in path else 0.1
            assert np.linalg.norm(d16[path] - d) / np.linalg.norm(d) < limit, path


def _save_and_restore(tmp_path, saved, restored):
    run = RunDir(tmp_path / "run")
    run.backup_dir.mkdir(parents=True, exist_ok=True)
    run.save_backup(saved, epoch=1, step=3, best_val_loss=2.5)
    state = run.restore_backup(restored)
    return run, state


def test_loss_scale_is_backed_up_and_restored_with_the_optimizer_state(tmp_path):
    """The dynamic scale and its counter go into backup/state.json, Adam's state (iterations first) into
    optimizer.npz, whatever the precision; a backup resumes in any precision."""
    f16 = build_model("contr_cf", None, cnn_dtype="mixed_float16")
    f16.optimizer.build(f16.trainable_variables)
    f16.optimizer.dynamic_scale.assign(1234.0)
    f16.optimizer.step_counter.assign(7)
    f16.optimizer.iterations.assign(5)
    clone = build_model("contr_cf", None, cnn_dtype="mixed_float16")
    run, state = _save_and_restore(tmp_path, f16, clone)
    assert json.loads((run.backup_dir / "state.json").read_text())["loss_scale"] == {"scale": 1234.0, "good_steps": 7}
    assert loss_scale_state(clone.optimizer) == {"scale": 1234.0, "good_steps": 7}
    assert int(clone.optimizer.iterations.numpy()) == 5 and (state["epoch"], state["step"]) == (1, 3)
    with np.load(run.backup_dir / "optimizer.npz", allow_pickle=False) as saved:
        assert int(saved["v00000"]) == 5  # the wrapped optimizer's variables, iterations first
    # the float16 backup resumes a float32 model (no scale to restore) ...
    f32 = build_model("contr_cf", None)
    run.restore_backup(f32)
    assert int(f32.optimizer.iterations.numpy()) == 5
    # ... and a float32 backup a float16 model, which keeps the initial scale
    fresh16 = build_model("contr_cf", None, cnn_dtype="mixed_float16")
    _, state = _save_and_restore(tmp_path / "b", f32, fresh16)
    assert "loss_scale" not in json.loads((tmp_path / "b" / "run" / "backup" / "state.json").read_text())
    assert loss_scale_state(fresh16.optimizer) == {"scale": 2.0**15, "good_steps": 0}
    assert int(fresh16.optimizer.iterations.numpy()) == 5


def test_a_broken_loss_scale_in_the_backup_names_the_file(tmp_path):
    f16 = build_model("contr_cf", None, cnn_dtype="mixed_float16")
    f16.optimizer.build(f16.trainable_variables)
    run, _ = _save_and_restore(tmp_path, f16, build_model("contr_cf", None, cnn_dtype="mixed_float16"))
    path = run.backup_dir / "state.json"
    for bad in ({"scale": 0.0, "good_steps": 0}, {"scale": "big"}, 5):
        path.write_text(json.dumps(dict(json.loads(path.read_text()), loss_scale=bad)))
        with pytest.raises(DataError, match=r"state\.json: loss_scale"):
            run.restore_backup(build_model("contr_cf", None, cnn_dtype="mixed_float16"))


_OVERFLOW_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from cmir_tf.model.distribute import agree_on_overflow

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {}
    for agree in (True, False):
        with strategy.scope():
            w = keras.Variable(np.ones(3, np.float32))
            opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=8.0)
            opt.build([w])

        def step(x):
            grads = [x * opt.scale_loss(1.0)]  # replica 1's input holds an inf: its gradient overflows
            if agree:
                grads = agree_on_overflow(grads, opt)
            opt.apply_gradients(zip(grads, [w]))
            return tf.constant(0.0)

        x = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant([1.0, 1.0, 1.0]) if ctx.replica_id_in_sync_group == 0
            else tf.constant([1.0, np.inf, 1.0]))
        strategy.run(tf.function(step), args=(x,))
        result[str(agree)] = {"w": [v.numpy().tolist() for v in strategy.experimental_local_results(w.value)],
                              "scale": float(opt.dynamic_scale.numpy()), "iterations": int(opt.iterations.numpy())}
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_an_overflow_on_one_replica_skips_the_step_on_every_replica():
    """Two logical CPU replicas, only the second overflows: every replica skips the update and the scale
    halves. Keras's own check (``agree=False``) looks at the first replica's gradients only and applies
    the summed, infinite gradient — the weights are destroyed, which this guards against."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _OVERFLOW_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    agreed = result["True"]
    assert agreed["w"] == [[1.0, 1.0, 1.0]] * 2 and agreed["scale"] == 4.0 and agreed["iterations"] == 0
    unguarded = result["False"]
    assert not np.all(np.isfinite(unguarded["w"]))  # what agree_on_overflow prevents
