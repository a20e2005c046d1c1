"""The paper's three encoders (sec. 2.1) as serialisable Keras 3 layers.

- `AudioEncoder` e_a (eq. 1–4): mel patch (B, 256, 48) → (φ_a (B, 128), features (B, 1024)).
- `GenreEncoder` e_w (eq. 5–7): genre indices (B, 10) + mask → φ_w (B, 128).
- `CFEncoder` e_cf (eq. 8): CF vector (B, 300) → φ_cf (B, 128).

Normalisation constants follow the published PyTorch code: BatchNorm running-average
momentum 0.1 in PyTorch's convention, i.e. Keras ``momentum=0.9``, ``epsilon=1e-5``; LayerNorm
``epsilon=1e-6``.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cmir_tf import constants as C
from cmir_tf.model.distribute import in_multi_replica_context

BN_MOMENTUM = 0.9  # Keras convention; = PyTorch momentum 0.1
BN_EPSILON = 1e-5
LN_EPSILON = 1e-6

# (filters, pool) of the 7 convolutional blocks; pools are (time, bands).
AUDIO_BLOCKS = (
    (128, (2, 2)),
    (128, (2, 2)),
    (256, (2, 2)),
    (256, (2, 2)),
    (256, (2, 1)),
    (256, (2, 1)),
    (512, (2, 2)),
)


def _resolve_sync(synchronized):
    """``None`` means: synchronise batch statistics iff the layer is built under a multi-replica strategy."""
    return in_multi_replica_context() if synchronized is None else bool(synchronized)


@keras.saving.register_keras_serializable(package="cmir_tf")
class FusedBatchNorm(keras.layers.BatchNormalization):
    """Keras BatchNormalization whose per-device training step on NHWC maps uses TF's fused kernel.

    Keras 3 computes training-mode batch norm as separate moments / normalise ops; on this CPU that
    costs ~25 % on top of a conv block's forward+backward, the fused kernel (oneDNN) ~5 %. Same
    weights, same semantics: normalises with the biased batch variance, and the moving averages are
    updated exactly as Keras does (with the biased variance, ``momentum``). Falls back to the Keras
    path for synchronised (cross-replica) statistics, other ranks, float64 and inference.
    """

    _FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)
    use_fused_kernel = True  # class default; set False on an instance to force the Keras path

    def call(self, inputs, training=None, mask=None):
        inputs = tf.convert_to_tensor(inputs)
        fused = (
            self.use_fused_kernel
            and training is True
            and self.trainable
            and not self.synchronized
            and not self.renorm
            and mask is None
            and inputs.shape.rank == 4
            and self.axis in (-1, 3)
            and inputs.dtype in self._FUSED_DTYPES
            and self.scale
            and self.center
        )
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        empty = tf.constant([], tf.float32)
        y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.cast(self.gamma, tf.float32),
            offset=tf.cast(self.beta, tf.float32),
            mean=empty,
            variance=empty,
            epsilon=self.epsilon,
            exponential_avg_factor=1.0,
            data_format="NHWC",
            is_training=True,
        )
        # the kernel returns the Bessel-corrected batch variance; Keras averages the biased one
        n = tf.cast(tf.size(inputs, out_type=tf.int64) // tf.cast(tf.shape(inputs)[-1], tf.int64), tf.float32)
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + tf.stop_gradient(variance) * (1.0 - momentum)
        )
        return tf.cast(y, self.compute_dtype)


def _batch_norm(synchronized: bool, name: str, dtype=None) -> keras.layers.BatchNormalization:
    return FusedBatchNorm(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=synchronized, name=name, dtype=dtype
    )


@keras.saving.register_keras_serializable(package="cmir_tf")
class AudioEncoder(keras.layers.Layer):
    """Audio encoder e_a: 7 × (Conv2D 3×3 → BN → ReLU → MaxPool) + FFB (eq. 1–4).

    Input: mel patches ``(B, 256, 48)`` float32, time × bands (the channel axis is added inside).
    A BatchNorm on the raw input (as the published code), then blocks with channels
    128, 128, 256, 256, 256, 256, 512 and pools (2,2)×4, (2,1)×2 (time only), (2,2), which leave a
    (2, 1, 512) map flattened to the 1024-d ``features``; then
    FFB = Dense 512 → BN → ReLU → Dropout(p) → Dense ``embed_dim`` → LayerNorm gives the embedding φ_a.

    Returns ``(embedding (B, embed_dim), features (B, 1024))``.

    ``synchronized``: use cross-replica ("synchronised") batch statistics, so that a step under a
    multi-replica strategy normalises with the global batch's moments as one device would.
    ``None`` (default) decides when the layer is created: on iff inside a strategy scope with more than
    one replica in sync. It is not part of the saved config (a model saved under two replicas reloads on one).

    ``cnn_dtype``: a Keras dtype policy for the 7 convolutional blocks only, ``"mixed_bfloat16"``
    (float32 variables, bfloat16 convolutions: ~1.7× faster convolutions on a CPU with AVX512_BF16) or
    ``"mixed_float16"`` (GPUs; the model's optimizer then scales the loss, ``cmir_tf.model.precision``).
    The input BatchNorm, the FFB, both outputs and therefore every loss stay in the layer's own dtype
    (float32). ``None``: the blocks use the layer's dtype. Weights are the same either way, so a model
    trained in mixed precision loads into a float32 encoder (which is what should be exported).
    """

    def __init__(
        self,
        dropout: float = C.DROPOUT,
        embed_dim: int = C.EMBED_DIM,
        synchronized=None,
        cnn_dtype=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"AudioEncoder: dropout must be in [0, 1), got {dropout}")
        self.dropout_rate = float(dropout)
        self.embed_dim = int(embed_dim)
        self.synchronized = _resolve_sync(synchronized)
        sync = self.synchronized
        self.cnn_dtype = cnn_dtype
        cnn = cnn_dtype if cnn_dtype is not None else self.dtype_policy
        self.input_bn = _batch_norm(sync, "input_bn", dtype=self.dtype_policy)
        self.convs, self.conv_bns, self.pools = [], [], []
        for i, (filters, pool) in enumerate(AUDIO_BLOCKS):
            self.convs.append(keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}", dtype=cnn))
            self.conv_bns.append(_batch_norm(sync, f"conv{i}_bn", dtype=cnn))
            self.pools.append(keras.layers.MaxPooling2D(pool, name=f"pool{i}", dtype=cnn))
        own = self.dtype_policy
        self.fc1 = keras.layers.Dense(C.HIDDEN_DIM, name="fc1", dtype=own)
        self.fc1_bn = _batch_norm(sync, "fc1_bn", dtype=own)
        self.drop = keras.layers.Dropout(self.dropout_rate, name="dropout", dtype=own)
        self.fc2 = keras.layers.Dense(self.embed_dim, name="fc2", dtype=own)
        self.ln = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln", dtype=own)

    def build(self, input_shape):
        if len(input_shape) != 3 or tuple(input_shape[1:]) != (C.PATCH_FRAMES, C.N_BANDS):
            raise ValueError(
                f"AudioEncoder expects mel patches of shape (batch, {C.PATCH_FRAMES}, {C.N_BANDS}) "
                f"(frames × bands), got {tuple(input_shape)}"
            )
        shape = (input_shape[0], C.PATCH_FRAMES, C.N_BANDS, 1)
        self.input_bn.build(shape)
        for conv, bn, pool in zip(self.convs, self.conv_bns, self.pools):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn.build(shape)
            shape = pool.compute_output_shape(shape)
        flat = int(np.prod(shape[1:]))
        assert flat == C.FEATURE_DIM, flat
        self.fc1.build((input_shape[0], flat))
        self.fc1_bn.build((input_shape[0], C.HIDDEN_DIM))
        self.fc2.build((input_shape[0], C.HIDDEN_DIM))
        self.ln.build((input_shape[0], self.embed_dim))
        self.built = True

    def call(self, mel, training=None):
        h = ops.expand_dims(mel, -1)
        h = self.input_bn(h, training=training)
        for conv, bn, pool in zip(self.convs, self.conv_bns, self.pools):
            h = pool(ops.relu(bn(conv(h), training=training)))
        features = ops.cast(ops.reshape(h, (-1, C.FEATURE_DIM)), self.compute_dtype)
        h = ops.relu(self.fc1_bn(self.fc1(features), training=training))
        h = self.drop(h, training=training)
        embedding = self.ln(self.fc2(h))
        return embedding, features

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embed_dim), (input_shape[0], C.FEATURE_DIM)

    def get_config(self):
        config = super().get_config()
        config.update(dropout=self.dropout_rate, embed_dim=self.embed_dim, cnn_dtype=self.cnn_dtype)
        return config


@keras.saving.register_keras_serializable(package="cmir_tf")
class GenreEncoder(keras.layers.Layer):
    """Genre encoder e_w (eq. 5–7) over a frozen word2vec table.

    Call ``(genres int (B, T_w), mask bool (B, T_w))``: the genre indices are looked up in the word2vec
    matrix (a non-trainable weight of shape (V, 200), saved with the weights; ``get_config`` stores only
    its shape), then
      V' = MultiHeadAttention(X_w) with ``num_heads`` heads, keys masked by ``mask`` (eq. 5),
      V  = V' + Dropout(FF_w(V')) (eq. 6),
      φ_w = LayerNorm(Dense_embed_dim(Σ_{unpadded i} V_i)) (eq. 7).
    The sum runs over the unpadded genres only, so padded positions (index and word vector) have no
    effect. The projection to ``embed_dim`` is not in eq. 7 but is needed: V lives in the 200-d word2vec
    space while φ_w must have φ_a's size (128) to be compared with it in the contrastive loss
    (the published code projects too). A song with no genre at all gets LayerNorm of the
    projection's bias (finite).
    """

    def __init__(
        self,
        word2vec=None,
        num_heads: int = C.NUM_HEADS,
        dropout: float = C.DROPOUT,
        embed_dim: int = C.EMBED_DIM,
        *,
        vocab_size: int | None = None,
        w2v_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if word2vec is not None:
            word2vec = np.asarray(word2vec, dtype=np.float32)
            if word2vec.ndim != 2:
                raise ValueError(f"GenreEncoder: word2vec must be a (vocab, dim) matrix, got shape {word2vec.shape}")
            vocab_size, w2v_dim = word2vec.shape
        if vocab_size is None:
            raise ValueError("GenreEncoder needs the word2vec matrix (or vocab_size when rebuilt from a config)")
        self.vocab_size = int(vocab_size)
        self.w2v_dim = int(w2v_dim if w2v_dim is not None else C.W2V_DIM)
        self.num_heads = int(num_heads)
        if self.w2v_dim % self.num_heads:
            raise ValueError(f"GenreEncoder: word2vec size {self.w2v_dim} is not divisible by num_heads={self.num_heads}")
        self.dropout_rate = float(dropout)
        self.embed_dim = int(embed_dim)
        self._initial_word2vec = word2vec
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.w2v_dim // self.num_heads, name="attention"
        )
        self.ff = keras.layers.Dense(self.w2v_dim, name="ff")
        self.drop = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.proj = keras.layers.Dense(self.embed_dim, name="proj")
        self.ln = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln")

    def build(self, genres_shape, mask_shape=None):
        init = self._initial_word2vec
        self.word2vec = self.add_weight(
            shape=(self.vocab_size, self.w2v_dim),
            initializer=(lambda shape, dtype=None: tf.constant(init, dtype=dtype)) if init is not None else "zeros",
            trainable=False,
            name="word2vec",
        )
        self._initial_word2vec = None  # do not keep a second copy of the matrix
        batch, length = genres_shape[0], genres_shape[1]
        seq = (batch, length, self.w2v_dim)
        self.attention.build(seq, seq)
        self.ff.build(seq)
        self.proj.build((batch, self.w2v_dim))
        self.ln.build((batch, self.embed_dim))
        self.built = True

    def call(self, genres, mask, training=None):
        mask = ops.cast(mask, "bool")
        x = ops.take(self.word2vec, ops.cast(genres, "int32"), axis=0)  # (B, T, F_w)
        attn_mask = ops.logical_and(ops.expand_dims(mask, 1), ops.expand_dims(mask, 2))  # (B, T_q, T_k)
        v1 = self.attention(x, x, attention_mask=attn_mask, training=training)
        v = v1 + self.drop(self.ff(v1), training=training)
        pooled = ops.sum(v * ops.expand_dims(ops.cast(mask, v.dtype), -1), axis=1)
        return self.ln(self.proj(pooled))

    def compute_output_shape(self, genres_shape, mask_shape=None):
        return (genres_shape[0], self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            dropout=self.dropout_rate,
            embed_dim=self.embed_dim,
            vocab_size=self.vocab_size,
            w2v_dim=self.w2v_dim,
        )
        return config


@keras.saving.register_keras_serializable(package="cmir_tf")
class CFEncoder(keras.layers.Layer):
    """CF encoder e_cf (eq. 8): Dense 512 → ReLU → Dropout → Dense ``embed_dim`` → LayerNorm; (B, 300) → (B, 128)."""

    def __init__(self, dropout: float = C.DROPOUT, embed_dim: int = C.EMBED_DIM, **kwargs):
        super().__init__(**kwargs)
        self.dropout_rate = float(dropout)
        self.embed_dim = int(embed_dim)
        self.fc1 = keras.layers.Dense(C.HIDDEN_DIM, name="fc1")
        self.drop = keras.layers.Dropout(self.dropout_rate, name="dropout")
        self.fc2 = keras.layers.Dense(self.embed_dim, name="fc2")
        self.ln = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="ln")

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((input_shape[0], C.HIDDEN_DIM))
        self.ln.build((input_shape[0], self.embed_dim))
        self.built = True

    def call(self, cf, training=None):
        h = self.drop(ops.relu(self.fc1(cf)), training=training)
        return self.ln(self.fc2(h))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(dropout=self.dropout_rate, embed_dim=self.embed_dim)
        return config
