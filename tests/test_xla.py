"""XLA (``jit_compile``) for every preset: the compiled step equals the uncompiled one on one device; under
two replicas the XLA form of the cross-replica gather gives the one-device update, and the per-replica
step lowers to XLA with its collectives inside, as it does on GPUs.

TensorFlow cannot run cross-replica collectives inside XLA on CPU devices ("Collectives are not yet
implemented for CPU devices when compiling with XLA"), so the two-replica step is checked in two halves
that together cover what a GPU runs: (a) its arithmetic, with the XLA-form gather (an all-reduce of
zero-padded rows) executed outside XLA; (b) its compilation: with ``MirroredStrategy`` told to behave as
on GPUs (no merge calls inside an XLA function, NCCL-style collectives), the replica step is lowered to
XLA HLO and holds its all-reduces (synchronised BatchNorm, loss gathers, sums). Only a GPU can run it.
"""
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

from cmir_tf.errors import ConfigError  # noqa: E402
from cmir_tf.model import presets  # noqa: E402
from cmir_tf.model.contrastive import LOSS_PARTS, MODES, build_model  # noqa: E402
from cmir_tf.model.distribute import resolve_jit_compile  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
from batches import V, make_batch  # noqa: E402  (tests/batches.py)


def test_jit_compile_settings_on_this_cpu():
    """auto: off on CPU (XLA made the float32 step slower), on for a float16 CNN (no fast CPU kernels)."""
    assert resolve_jit_compile("auto") is False and resolve_jit_compile("auto", cnn_dtype="mixed_float16") is True
    assert resolve_jit_compile("on") is True and resolve_jit_compile(True) is True
    assert resolve_jit_compile("off") is False and resolve_jit_compile(False) is False
    with pytest.raises(ConfigError, match="jit_compile: unknown setting 'yes'"):
        resolve_jit_compile("yes")
    model = build_model("contr_cf", None, jit_compile="on")
    assert model.jit_replica_step and not model.jit_compile  # Keras's whole-step XLA stays off


@pytest.fixture
def float64():
    """Keras layers built in float64 for the test (BatchNorm then takes Keras's unfused path). The global
    dtype policy too: Keras fixes it from floatx when the process builds its first layer."""
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


# The paper's six, and the follow-up study's Hybrid with genre pairs: intra-modal weighted NT-Xent over
# semantic weights, cross-modal terms over all rows, mixup (drawn outside the compiled step).
CASES = [*MODES, "hybrid:genre"]


def _build(case, w2v, **kwargs):
    mode, _, pairs = case.partition(":")
    return build_model(mode, w2v, dropout=0.0, compile=False, audio_pairs=pairs or None, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("mode", CASES)
def test_xla_train_step_equals_the_uncompiled_step(mode, float64):
    """One SGD step of each preset, compiled with XLA and not, from the same weights on the same batch:
    same loss and parts, same updated weights. In float64, so that summation order (which XLA changes,
    and which in float32 moves this BatchNorm network's first-step gradients by ~1e-2 relative) cannot
    hide a difference: masks, softmax, gathers and the update agree to ~1e-12. Batch 2: XLA's float64
    convolutions on CPU are slow."""
    rng = np.random.default_rng(3)
    w2v = rng.normal(size=(V, 200))
    data = {k: (v.astype("float64") if v.dtype == np.float32 else v) for k, v in make_batch(rng, 2).items()}
    keras.utils.set_random_seed(0)
    models = []
    for jit in (False, True):
        model = _build(mode, w2v)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
        models.append(model)
    plain, compiled = models
    assert plain.audio_encoder.convs[0].kernel.dtype == "float64"
    compiled.set_weights(plain.get_weights())
    before = {w.path: w.numpy() for w in plain.trainable_weights}
    got = [m.train_on_batch(data, return_dict=True) for m in models]
    assert set(got[1]) == {"loss", *plain.parts}
    for key, value in got[0].items():
        assert got[1][key] == pytest.approx(value, rel=1e-10), key
    after = [{w.path: w.numpy() for w in m.trainable_weights} for m in models]
    step = max(float(np.abs(after[0][p] - before[p]).max()) for p in before)
    assert step > 1e-3  # it did train
    assert max(float(np.abs(after[1][p] - after[0][p]).max()) for p in before) < 1e-9 * step


_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from cmir_tf import compat
    from cmir_tf.model.distribute import resolve_jit_compile
    from cmir_tf.errors import ConfigError
    from cmir_tf.model import build_model

    def build(spec, w2v, **kwargs):  # "mode" or "mode:audio pairs"
        mode, _, pairs = spec.partition(":")
        return build_model(mode, w2v, compile=False, audio_pairs=pairs or None, **kwargs)

    rng = np.random.default_rng(0)
    B, V = 4, 11
    mask = np.arange(10)[None] < rng.integers(1, 11, size=(B, 1))
    batch = {"mel": rng.normal(size=(B, 256, 48)), "genre_mask": mask,
             "genres": np.where(mask, rng.integers(0, V, size=(B, 10)), 0).astype("int32"),
             "cf": rng.random(size=(B, 300)), "song_id": np.arange(B, dtype="int64")}
    w2v = rng.normal(size=(V, 200))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"settings": {"auto": resolve_jit_compile("auto", strategy)}}
    try:
        resolve_jit_compile("on", strategy)
    except ConfigError as exc:
        result["settings"]["on"] = str(exc)

    def dataset(dtype):
        cast = {k: (v.astype(dtype) if v.dtype == np.float64 else v) for k, v in batch.items()}
        return tf.data.Dataset.from_tensor_slices(cast).batch(B, drop_remainder=True)  # static: 2 rows per replica

    # (a) arithmetic, float64: one device vs two replicas whose loss gathers take the XLA form (the
    # presets with a contrastive part: the others gather nothing, and test_model covers them)
    keras.config.set_floatx("float64")
    real_in_xla = compat.in_xla_context
    compat.in_xla_context = lambda: True
    for mode in sys.argv[1:]:
        result[mode] = {}
        keras.utils.set_random_seed(0)
        one = build(mode, w2v, dropout=0.0, mixup=0)  # mixup draws differ per replica by design
        if one.parts[0] in ("genre", "cf"):
            continue
        one.compile(optimizer=keras.optimizers.SGD(0.01))
        init = {v.path: v.numpy() for v in one.weights}
        with strategy.scope():
            two = build(mode, w2v, dropout=0.0, mixup=0)
            two.compile(optimizer=keras.optimizers.SGD(0.01))
        for v in two.weights:
            v.assign(init[v.path])
        h1 = one.fit(dataset("float64"), epochs=1, verbose=0).history
        h2 = two.fit(dataset("float64"), epochs=1, verbose=0).history
        w1, w2 = ({v.path: v.numpy() for v in m.weights} for m in (one, two))
        result[mode] = {"losses": [h1, h2], "weight_err": max(float(np.abs(w1[p] - w2[p]).max()) for p in w1),
                        "moved": max(float(np.abs(w1[p] - init[p]).max()) for p in w1)}
    compat.in_xla_context = real_in_xla
    keras.config.set_floatx("float32")

    # (b) compilation: the per-replica step as on GPUs, lowered to XLA HLO (CPUs cannot run it)
    from tensorflow.python.distribute import collective_util, mirrored_strategy
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import control_flow_util

    mirrored_strategy.MirroredExtended._use_merge_call = (
        lambda self: not control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))
    collectives = strategy.extended._collective_ops
    nccl = collective_util.Options(implementation=collective_util.CommunicationImplementation.NCCL)
    collectives._options = strategy.extended._communication_options = nccl
    for launcher in collectives._launchers:
        launcher._options = nccl
    data = next(iter(strategy.experimental_distribute_dataset(dataset("float32"))))
    for mode in sys.argv[1:]:
        with strategy.scope():
            model = build(mode, w2v.astype("float32"))  # dropout on: its RNG compiles too
            model.compile(optimizer=keras.optimizers.SGD(0.01))
        model.jit_replica_step = True  # "on" is refused for CPU replicas; this only lowers, never runs
        step = model._replica_step("train", model._gradients)
        hlo = strategy.run(lambda d: step.experimental_get_compiler_ir(d)(stage="hlo"), args=(data,))
        texts = strategy.experimental_local_results(hlo)
        result[mode]["all_reduces"] = [t.count(" all-reduce(") for t in texts]
    print(json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def two_replicas():
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", _REPLICA_SCRIPT, *CASES], capture_output=True, text=True, env=env,
                         timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_jit_compile_with_two_cpu_replicas_is_refused_naming_why(two_replicas):
    settings = two_replicas["settings"]
    assert settings["auto"] is False
    assert "2 replicas on CPU devices" in settings["on"] and "cannot compile cross-replica collectives" in settings["on"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", CASES)
def test_two_replica_xla_step_gathers_as_one_device_and_compiles_with_its_collectives(mode, two_replicas):
    res = two_replicas[mode]
    name, _, pairs = mode.partition(":")
    parts = presets.resolve(name, audio_pairs=pairs or None).parts
    if any(LOSS_PARTS[part].aligns for part in parts) or pairs:  # the presets that gather
        one, two = res["losses"]
        assert set(one) == {"loss", *parts}
        for key in one:
            assert two[key][0] == pytest.approx(one[key][0], rel=1e-10), key
        assert res["weight_err"] < 1e-10 and res["moved"] > 1e-3
    # every replica's compiled step holds its collectives: synchronised BatchNorm's moments (9 layers,
    # forward and backward), the loss's gathers (forward and backward) and counts (contr_cf_g: 49)
    assert len(res["all_reduces"]) == 2 and min(res["all_reduces"]) >= 18, res["all_reduces"]
