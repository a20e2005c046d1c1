"""Encoders (paper sec. 2.1): architecture sizes, config round trips, genre masking."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cmir_tf import constants as C  # noqa: E402
from cmir_tf.model.encoders import AUDIO_BLOCKS, AudioEncoder, CFEncoder, GenreEncoder  # noqa: E402


def _expected_audio_params(embed_dim=128):
    """Independent count from the paper's architecture (sec. 2.1, eq. 1–4: 7 conv blocks, FFB) (trainable, non-trainable)."""
    trainable, frozen = 0, 0

    def bn(ch):  # gamma, beta trainable; moving mean / variance not
        return 2 * ch, 2 * ch

    t, f = bn(1)
    trainable, frozen = trainable + t, frozen + f
    cin = 1
    for cout in (128, 128, 256, 256, 256, 256, 512):
        trainable += 3 * 3 * cin * cout + cout
        t, f = bn(cout)
        trainable, frozen = trainable + t, frozen + f
        cin = cout
    # (256, 48) pooled by (2,2)x4, (2,1)x2, (2,2) -> (2, 1) x 512 = 1024
    trainable += 1024 * 512 + 512
    t, f = bn(512)
    trainable, frozen = trainable + t, frozen + f
    trainable += 512 * embed_dim + embed_dim + 2 * embed_dim  # Dense + LayerNorm
    return trainable, frozen


def _copy_weights(src, dst):
    dst.set_weights(src.get_weights())


def test_audio_encoder_shapes_and_parameter_count():
    enc = AudioEncoder()
    x = np.random.default_rng(0).normal(size=(2, C.PATCH_FRAMES, C.N_BANDS)).astype("float32")
    emb, feat = enc(x, training=False)
    assert tuple(emb.shape) == (2, 128) and tuple(feat.shape) == (2, 1024)
    trainable, frozen = _expected_audio_params()
    assert sum(int(np.prod(w.shape)) for w in enc.trainable_weights) == trainable == 3_989_762
    assert sum(int(np.prod(w.shape)) for w in enc.non_trainable_weights) == frozen
    assert [blk[0] for blk in AUDIO_BLOCKS] == [128, 128, 256, 256, 256, 256, 512]
    # PyTorch's BatchNorm defaults and LayerNorm eps 1e-6 (the published code)
    assert enc.input_bn.momentum == 0.9 and enc.input_bn.epsilon == 1e-5
    assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5 for bn in enc.conv_bns)
    assert enc.ln.epsilon == 1e-6
    # the embedding is LayerNorm'ed (gamma=1, beta=0 at init): zero mean per row
    np.testing.assert_allclose(np.asarray(emb).mean(axis=1), 0.0, atol=1e-5)


def test_audio_encoder_rejects_wrong_patch_shape():
    with pytest.raises(ValueError, match=r"\(batch, 256, 48\)"):
        AudioEncoder()(np.zeros((2, 48, 256), "float32"))


def test_audio_encoder_config_round_trip_gives_identical_outputs():
    enc = AudioEncoder(dropout=0.3, embed_dim=64, name="ea")
    x = np.random.default_rng(1).normal(size=(3, C.PATCH_FRAMES, C.N_BANDS)).astype("float32")
    enc(x)
    config = keras.saving.serialize_keras_object(enc)
    assert config["registered_name"] == "cmir_tf>AudioEncoder"
    clone = keras.saving.deserialize_keras_object(config)
    assert clone.get_config() == enc.get_config()
    clone(x)
    # training-mode BN statistics change the moving averages: give the clone trained-looking ones
    enc(x * 3 + 1, training=True)
    _copy_weights(enc, clone)
    for training in (False,):
        a1, f1 = enc(x, training=training)
        a2, f2 = clone(x, training=training)
        np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
        np.testing.assert_array_equal(np.asarray(f1), np.asarray(f2))
    assert tuple(a1.shape) == (3, 64)


def test_audio_encoder_batch_norm_updates_running_statistics_with_momentum_0_9():
    enc = AudioEncoder()
    x = np.random.default_rng(2).normal(3.0, 2.0, size=(4, C.PATCH_FRAMES, C.N_BANDS)).astype("float32")
    enc(x, training=True)
    # input BN sees the raw input: new running mean = 0.9 * 0 + 0.1 * batch mean
    np.testing.assert_allclose(np.asarray(enc.input_bn.moving_mean), [0.1 * x.mean()], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(enc.input_bn.moving_variance), [0.9 + 0.1 * x.var()], rtol=1e-4)


def _genre_inputs(rng, batch=5, vocab=12):
    genres = rng.integers(0, vocab, size=(batch, C.MAX_GENRES)).astype("int32")
    lengths = np.array([1, 3, 10, 2, 6])[:batch]
    mask = np.arange(C.MAX_GENRES)[None, :] < lengths[:, None]
    genres[~mask] = 0  # the pipeline pads with index 0
    return genres, mask


def test_genre_encoder_ignores_padded_positions():
    rng = np.random.default_rng(3)
    vocab = 12
    w2v = rng.normal(size=(vocab, C.W2V_DIM)).astype("float32")
    enc = GenreEncoder(w2v, num_heads=4, dropout=0.0)
    genres, mask = _genre_inputs(rng, vocab=vocab)
    out = np.asarray(enc(genres, mask))
    assert out.shape == (5, 128)
    # other indices at the padded positions: no effect
    g2 = genres.copy()
    g2[~mask] = rng.integers(0, vocab, size=int((~mask).sum()))
    np.testing.assert_allclose(np.asarray(enc(g2, mask)), out, rtol=1e-5, atol=1e-6)
    # a different word vector for a genre that only sits at padded positions: no effect
    used = set(genres[mask].tolist())
    unused = [i for i in range(vocab) if i not in used]
    assert unused, "test needs a vocabulary entry not used by any real genre"
    g3 = genres.copy()
    g3[~mask] = unused[0]
    before = np.asarray(enc(g3, mask))
    w = enc.word2vec.numpy()
    w[unused[0]] = 100.0 * rng.normal(size=C.W2V_DIM)
    enc.word2vec.assign(w)
    np.testing.assert_allclose(np.asarray(enc(g3, mask)), before, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(before, out, rtol=1e-5, atol=1e-6)
    # a real genre's vector does change the embedding of the songs that have it
    w[genres[0, 0]] += 1.0
    enc.word2vec.assign(w)
    assert not np.allclose(np.asarray(enc(genres, mask))[0], out[0], atol=1e-3)


def test_genre_encoder_matches_equations_5_to_7():
    """Recompute eq. 5–7 in numpy from the layer's weights (dropout off) for one song."""
    rng = np.random.default_rng(4)
    vocab, heads = 9, 4
    w2v = rng.normal(size=(vocab, C.W2V_DIM)).astype("float32")
    enc = GenreEncoder(w2v, num_heads=heads, dropout=0.0, embed_dim=16)
    genres, mask = _genre_inputs(rng, vocab=vocab)
    out = np.asarray(enc(genres, mask))
    att = enc.attention
    wq, bq = att._query_dense.kernel.numpy(), att._query_dense.bias.numpy()
    wk, bk = att._key_dense.kernel.numpy(), att._key_dense.bias.numpy()
    wv, bv = att._value_dense.kernel.numpy(), att._value_dense.bias.numpy()
    wo, bo = att._output_dense.kernel.numpy(), att._output_dense.bias.numpy()
    for b in range(len(genres)):
        x = w2v[genres[b][mask[b]]].astype("float64")  # only the real genres
        q = np.einsum("tf,fhd->thd", x, wq) + bq
        k = np.einsum("tf,fhd->thd", x, wk) + bk
        v = np.einsum("tf,fhd->thd", x, wv) + bv
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1])
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        ctx = np.einsum("hqk,khd->qhd", p, v)
        v1 = np.einsum("qhd,hdf->qf", ctx, wo) + bo  # V' (eq. 5)
        vv = v1 + (v1 @ enc.ff.kernel.numpy() + enc.ff.bias.numpy())  # eq. 6, dropout off
        z = vv.sum(0) @ enc.proj.kernel.numpy() + enc.proj.bias.numpy()  # sum over genres, projection
        z = (z - z.mean()) / np.sqrt(z.var() + 1e-6)  # LayerNorm eps 1e-6, gamma 1 beta 0
        np.testing.assert_allclose(out[b], z, rtol=2e-4, atol=2e-4)


def test_genre_encoder_word2vec_is_frozen_and_config_keeps_only_its_shape():
    rng = np.random.default_rng(5)
    w2v = rng.normal(size=(7, C.W2V_DIM)).astype("float32")
    enc = GenreEncoder(w2v, num_heads=4, dropout=0.1, embed_dim=32, name="ew")
    genres, mask = _genre_inputs(rng, vocab=7)
    enc(genres, mask)
    assert enc.word2vec.trainable is False
    assert all(w is not enc.word2vec for w in enc.trainable_weights)
    np.testing.assert_array_equal(enc.word2vec.numpy(), w2v)
    config = enc.get_config()
    assert config["vocab_size"] == 7 and config["w2v_dim"] == C.W2V_DIM
    assert "word2vec" not in config or config["word2vec"] is None
    clone = GenreEncoder.from_config(config)
    clone(genres, mask)
    _copy_weights(enc, clone)
    np.testing.assert_array_equal(np.asarray(clone(genres, mask)), np.asarray(enc(genres, mask)))
    np.testing.assert_array_equal(clone.word2vec.numpy(), w2v)


def test_genre_encoder_rejects_bad_word2vec():
    with pytest.raises(ValueError, match="matrix"):
        GenreEncoder(np.zeros(200, "float32"))
    with pytest.raises(ValueError, match="divisible"):
        GenreEncoder(np.zeros((3, 10), "float32"), num_heads=4)


def test_cf_encoder_matches_equation_8_and_round_trips():
    rng = np.random.default_rng(6)
    enc = CFEncoder(dropout=0.5, embed_dim=128, name="ecf")
    x = rng.random(size=(4, C.CF_DIM)).astype("float32")
    out = np.asarray(enc(x, training=False))
    h = np.maximum(x @ enc.fc1.kernel.numpy() + enc.fc1.bias.numpy(), 0)
    z = h @ enc.fc2.kernel.numpy() + enc.fc2.bias.numpy()
    z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out, z, rtol=1e-4, atol=1e-4)
    # dropout is active in training mode only
    assert not np.allclose(np.asarray(enc(x, training=True)), out)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(enc))
    clone(x)
    _copy_weights(enc, clone)
    np.testing.assert_array_equal(np.asarray(clone(x)), out)


def test_fused_batch_norm_matches_the_keras_computation():
    """The fused training kernel: same outputs, gradients and moving statistics as Keras's own BN."""
    import tensorflow as tf

    from cmir_tf.model.encoders import FusedBatchNorm

    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(1.5, 2.0, size=(3, 10, 6, 4)).astype("float32"))
    fused = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    plain = FusedBatchNorm(momentum=0.9, epsilon=1e-5)
    plain.use_fused_kernel = False
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign(rng.normal(size=4).astype("float32"))
        layer.beta.assign(rng.normal(size=4).astype("float32"))
    plain.set_weights(fused.get_weights())
    weight = tf.constant(rng.normal(size=x.shape).astype("float32"))
    results = []
    for layer in (fused, plain):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * weight)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y.numpy()] + [g.numpy() for g in grads] + [w.numpy() for w in layer.non_trainable_weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # moving variance uses the biased batch variance, as Keras (0.9 * 1 + 0.1 * var)
    xv = x.numpy().reshape(-1, 4)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * xv.var(0), rtol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.1 * xv.mean(0), rtol=1e-5)
    # inference uses the moving statistics (both paths agree)
    np.testing.assert_allclose(fused(x, training=False).numpy(), plain(x, training=False).numpy(), rtol=1e-6)


def test_bfloat16_cnn_keeps_outputs_float32_and_close_to_float32():
    x = np.random.default_rng(8).normal(size=(4, C.PATCH_FRAMES, C.N_BANDS)).astype("float32")
    f32 = AudioEncoder(dropout=0.0)
    bf16 = AudioEncoder(dropout=0.0, cnn_dtype="mixed_bfloat16")
    f32(x)
    bf16(x)
    bf16.set_weights(f32.get_weights())  # same variables (float32) whatever the compute precision
    assert all(w.dtype == "float32" for w in bf16.weights)
    assert bf16.get_config()["cnn_dtype"] == "mixed_bfloat16"
    for training in (True, False):
        e32, f_32 = f32(x, training=training)
        e16, f_16 = bf16(x, training=training)
        assert e16.dtype == "float32" and f_16.dtype == "float32"
        # bfloat16 keeps 8 significant bits: embeddings agree to a few per cent, not more
        cos = np.sum(np.asarray(e32) * np.asarray(e16), 1) / (
            np.linalg.norm(np.asarray(e32), axis=1) * np.linalg.norm(np.asarray(e16), axis=1)
        )
        assert np.all(cos > 0.99), cos
