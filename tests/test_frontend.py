"""The audio front end against independent references.

Essentia's own mel chain (run in a child process by tests/essentia_ref.py — essentia must never share a
process with tensorflow), on a sweep, white noise, a chord, near-silence, exact silence, a 30 s signal and
signals of awkward lengths.

Decoding and resampling (cmir_tf.audio.decoding) are tested in tests/test_audio.py.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from essentia_ref import essentia_available, essentia_mel, essentia_melbank, essentia_predict2d

from cmir_tf import constants as C
from cmir_tf.audio import frontend as F

needs_essentia = pytest.mark.skipif(not essentia_available(), reason="essentia-tensorflow (test extra) not installed")

SR = C.SAMPLE_RATE
# Awkward lengths around the frame and hop sizes; 0 gives no frame at all.
EDGE_LENGTHS = (0, 1, 255, 256, 257, 511, 512, 513)


def _signals() -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    sig = {
        # 20 Hz → 7.9 kHz linear sweep
        "sweep": 0.5 * np.sin(2 * np.pi * (20 * t + (7900 - 20) / 6 * t**2)),
        "noise": 0.3 * rng.standard_normal(len(t)),
        "chord": sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0, 523.25)),
        # near-silence (−106 dBFS noise): mel power straddles Essentia's 1e-10 floor (a quarter clip)
        "near_silence": 5e-6 * rng.standard_normal(len(t)) + 2.5e-6 * np.sin(2 * np.pi * 440 * t),
        "silence": np.zeros(len(t)),
        # 30 s, Melon's segment length: 1876 frames
        "thirty_seconds": 0.1 * rng.standard_normal(30 * SR) + 0.2 * np.sin(2 * np.pi * 1000 * np.arange(30 * SR) / SR),
    }
    for n in EDGE_LENGTHS:
        sig[f"len{n}"] = 0.1 * rng.standard_normal(n)
    return {k: v.astype(np.float32) for k, v in sig.items()}


@pytest.fixture(scope="module")
def signals():
    return _signals()


@pytest.fixture(scope="module")
def essentia_mels(signals, tmp_path_factory):
    # One child process for every signal: Essentia's start-up costs more than its work here.
    return essentia_mel(signals, tmp_path_factory.mktemp("essentia_mel"))


# ---------------------------------------------------------------------------------------------
# Filter bank and framing
# ---------------------------------------------------------------------------------------------
@needs_essentia
def test_filterbank_equals_essentia_melbands_weights(tmp_path):
    ref = essentia_melbank(tmp_path)  # (257, 48), read off Essentia's MelBands one unit bin at a time
    ours = F.mel_filterbank()
    assert ours.shape == ref.shape == (257, 48) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours != 0, ref != 0)  # same bins in every band
    # single-precision agreement: weights are ≤ 0.013; measured max difference 2.2e-8
    np.testing.assert_allclose(ours, ref, rtol=0, atol=5e-8)
    # unit_tri: equal areas — each band's weights sum to about 1/Δf = 1/31.25 Hz (docs/DATASETS.md:
    # 0.0320), not unit height; sampling the narrowest triangles on the bin grid moves this by ≤ 1.8 %
    np.testing.assert_allclose(ours.sum(axis=0), 1 / 31.25, rtol=0.02)
    assert ours.max() < 0.02


def test_frame_count_formula():
    # docs/DATASETS.md: 3 s → 189 frames, 30 s → 1876 (Melon); first frame centred on sample 0
    assert F.num_frames(3 * SR) == 189
    assert F.num_frames(30 * SR) == C.MELON_FRAMES == 1876
    assert [F.num_frames(n) for n in EDGE_LENGTHS] == [0, 2, 2, 2, 3, 3, 3, 4]
    for n in (0, 1, 256, 257, 48000):
        assert F.melspectrogram(np.zeros(n, np.float32)).shape == (F.num_frames(n), 48)


@needs_essentia
def test_frame_count_equals_essentia(signals, essentia_mels):
    for name, x in signals.items():
        ours = F.melspectrogram(x)
        assert ours.shape == essentia_mels[name].shape == (F.num_frames(len(x)), 48), name
    assert essentia_mels["thirty_seconds"].shape == (1876, 48)
    assert essentia_mels["sweep"].shape == (189, 48)


# ---------------------------------------------------------------------------------------------
# dB values against Essentia
# ---------------------------------------------------------------------------------------------
BROADBAND = ["noise", "near_silence", "thirty_seconds"] + [f"len{n}" for n in EDGE_LENGTHS if n]


@needs_essentia
@pytest.mark.parametrize("name", BROADBAND)
def test_broadband_mel_equals_essentia_everywhere(name, signals, essentia_mels):
    """Every value, floor included, within 2e-4 dB (measured max 1e-4 dB, on the 30 s signal)."""
    ours = F.melspectrogram(signals[name]).numpy()
    ref = essentia_mels[name]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-4)
    if name == "near_silence":  # the floor is really exercised: both clip the same values to -200 dB
        clipped = ref == C.DB_FLOOR
        assert 0.1 < clipped.mean() < 0.5
        assert (ours[clipped] <= C.DB_FLOOR + 1e-3).all() and ours.min() == C.DB_FLOOR


@needs_essentia
@pytest.mark.parametrize("name", ["sweep", "chord"])
def test_tonal_mel_equals_essentia(name, signals, essentia_mels):
    """Tones leave bands far below the frame's loudest one, where both sides' float32 round-off shows.

    Measured max |error| (sweep; chord smaller): 5.4e-4 dB within 60 dB of the frame's loudest band,
    1.5e-3 dB within 120 dB, 8.6e-3 dB within 160 dB; below that (mel power under 1e-8 of the loudest
    band, close to the floor) up to 0.44 dB — a float64 numpy chain shows the same differences, so they
    are Essentia's own float32 round-off. (dB here is Melon's 2·10·log10, so 160 dB is a 1e-8 ratio.)
    """
    ours = F.melspectrogram(signals[name]).numpy()
    ref = essentia_mels[name]
    err = np.abs(ours - ref)
    below_max = ref - ref.max(axis=1, keepdims=True)  # dB under the frame's loudest band
    assert err[below_max > -60].max() < 1e-3
    assert err[below_max > -120].max() < 2e-3
    assert err[below_max > -160].max() < 0.01
    assert err.max() < 1.0
    assert (ref == C.DB_FLOOR).any()  # bands that are digitally silent do clip, on both sides


@needs_essentia
def test_exact_silence_is_the_floor(signals, essentia_mels):
    ours = F.melspectrogram(signals["silence"]).numpy()
    assert (ours == C.DB_FLOOR).all() and (essentia_mels["silence"] == C.DB_FLOOR).all()


# ---------------------------------------------------------------------------------------------
# Graph use: batches, tf.function, Keras layer, SavedModel without tensorflow-io
# ---------------------------------------------------------------------------------------------
def test_batched_equals_one_by_one(signals):
    batch = np.stack([signals["sweep"], signals["noise"], signals["chord"]])
    out = F.melspectrogram(batch).numpy()
    assert out.shape == (3, 189, 48)
    for i in range(3):
        np.testing.assert_array_equal(out[i], F.melspectrogram(batch[i]).numpy())


def test_tf_function_with_unknown_length_uses_core_ops_only(signals):
    fn = tf.function(F.melspectrogram, input_signature=[tf.TensorSpec([None], tf.float32)])
    concrete = fn.get_concrete_function()
    assert concrete.structured_outputs.shape.as_list() == [None, 48]
    op_types = {op.type for op in concrete.graph.get_operations()}
    assert {"RFFT", "MatMul"} <= op_types
    assert not [t for t in op_types if t.startswith("IO>")]  # no tensorflow-io kernel in the graph
    for name in ("sweep", "len1", "len0"):
        np.testing.assert_array_equal(fn(signals[name]).numpy(), F.melspectrogram(signals[name]).numpy())


def test_keras_layer_in_a_model_and_config_round_trip(signals):
    import keras

    inp = keras.Input(shape=(None,), dtype="float32")
    model = keras.Model(inp, F.MelSpectrogram(name="mel")(inp))
    batch = np.stack([signals["noise"], signals["chord"]])
    np.testing.assert_allclose(model(batch).numpy(), F.melspectrogram(batch).numpy(), rtol=0, atol=1e-5)
    clone = keras.Model.from_config(model.get_config())
    np.testing.assert_allclose(clone(batch).numpy(), F.melspectrogram(batch).numpy(), rtol=0, atol=1e-5)


def test_savedmodel_runs_in_a_process_without_tensorflow_io(signals, tmp_path):
    """What TF Serving needs: the exported front end loads and runs where tensorflow-io is absent."""
    module = tf.Module()
    module.mel = tf.function(F.melspectrogram, input_signature=[tf.TensorSpec([None], tf.float32, name="waveform")])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.mel})
    np.save(tmp_path / "x.npy", signals["chord"])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["tensorflow_io"] = None  # any import of tensorflow-io now fails
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(tmp_path / "sm")!r})
        out = m.signatures["serving_default"](waveform=tf.constant(np.load({str(tmp_path / "x.npy")!r})))
        np.save({str(tmp_path / "y.npy")!r}, list(out.values())[0].numpy())
        print(sorted(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), F.melspectrogram(signals["chord"]).numpy())


# ---------------------------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------------------------
def test_patches_non_overlapping_tail_dropped():
    mel = np.random.default_rng(1).normal(-50, 10, (1876, 48)).astype(np.float32)
    p = F.patches(mel).numpy()
    assert p.shape == (7, 256, 48)  # 1876 // 256; the last 84 frames are dropped
    np.testing.assert_array_equal(p, mel[: 7 * 256].reshape(7, 256, 48))
    assert F.patches(mel[:512]).shape == (2, 256, 48)
    assert F.patches(mel[:600], patch_frames=100).shape == (6, 100, 48)


@pytest.mark.parametrize("n", [0, 1, 100, 255])
def test_short_track_gives_one_floor_padded_patch(n):
    mel = np.full((n, 48), -20.0, np.float32)
    p = F.patches(mel).numpy()
    assert p.shape == (1, 256, 48)
    assert (p[0, :n] == -20.0).all() and (p[0, n:] == C.DB_FLOOR).all()


def test_patches_in_a_graph_with_unknown_frames():
    fn = tf.function(lambda m: F.patches(m), input_signature=[tf.TensorSpec([None, 48], tf.float32)])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, 256, 48]
    mel = np.arange(300 * 48, dtype=np.float32).reshape(300, 48)
    np.testing.assert_array_equal(fn(mel).numpy(), mel[None, :256])
    assert fn(mel[:10]).shape == (1, 256, 48)
    with pytest.raises(ValueError, match="patch_frames"):
        F.patches(mel, patch_frames=0)


# ---------------------------------------------------------------------------------------------
# The runner's predict2d sub-command (used by the export tests) on a tiny frozen graph
# ---------------------------------------------------------------------------------------------
@needs_essentia
def test_essentia_predict2d_runner_matches_tensorflow(tmp_path):
    import keras
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(256, 48))
    h = keras.layers.Reshape((256, 48, 1))(inp)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    emb = keras.layers.Dense(8)(h)
    prob = keras.layers.Dense(3, activation="sigmoid")(emb)
    model = keras.Model(inp, [emb, prob])

    @tf.function(input_signature=[tf.TensorSpec([None, 256, 48], tf.float32, name="melspectrogram")])
    def serve(x):
        e, p = model(x, training=False)
        return {"embeddings": tf.identity(e, name="embeddings"), "scores": tf.identity(p, name="scores")}

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    for node in graph_def.node:  # attributes older TF runtimes (Essentia's) do not know
        for attr in ("grad_a", "grad_b"):
            if attr in node.attr:
                del node.attr[attr]
    pb = tmp_path / "tiny.pb"
    pb.write_bytes(graph_def.SerializeToString())

    mel = np.random.default_rng(7).normal(-40, 15, (600, 48)).astype(np.float32)  # 2 patches + tail
    emb_ess, prob_ess = essentia_predict2d(pb, mel, "melspectrogram", ["embeddings", "scores"], tmp_path,
                                           patch_size=256, batch_size=1)
    emb_tf, prob_tf = (t.numpy() for t in model(F.patches(mel), training=False))
    assert emb_ess.shape == (2, 8) and prob_ess.shape == (2, 3)
    np.testing.assert_allclose(emb_ess, emb_tf, rtol=0, atol=1e-5)
    np.testing.assert_allclose(prob_ess, prob_tf, rtol=0, atol=1e-5)
    os.remove(pb)
