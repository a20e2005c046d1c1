"""``--variant published``: what the authors' published code trains, where it differs by choice from the paper.

The published PyTorch code (GitHub ``andrebola/contrastive-mir-learning``, MIT licence; ``models.py``,
``utils.py``, ``trainer*.py``) differs from the paper's text in several rows of docs/FIDELITY.md. The
``published`` variant of ``python -m cmir_tf.train`` reproduces the deliberate ones:

- :class:`PublishedGenreEncoder` (``TagSelfAttentionEncoder``): the word vectors are a *trainable*
  table with a zero padding row in front (genre i is row i + 1, padding is row 0); 4 heads of 128 each
  (queries, keys and values 128 → 512 and the output 512 → 128, no biases), scores scaled by 1/√128,
  padded *keys* masked (−1e9), attention dropout 0.1 and dropout 0.1 after the output projection, no
  feed-forward and no skip, the sum over **all** 10 query positions (padding included), LayerNorm.
- :class:`PublishedCFEncoder` (``CFEncoder``): Dense → 128 → ReLU → Dropout 0.3 → Dense 128 → LayerNorm.
- the contrastive loss ``−log(num/den + 1e-5)`` (``losses.nt_xent(..., log_epsilon=1e-5)``);
- the CF baseline's MSE (``torch.nn.MSELoss``: mean over the batch and the CF values);
- :class:`CoupledL2Adam`: ``torch.optim.Adam(weight_decay=1e-4)``, i.e. L2 added to the gradient before
  Adam's moments (not AdamW's decoupled decay), ε = 1e-8;
- the training crops from the first :data:`CROP_WINDOW` = 1300 frames of each song (start uniform in
  [0, 1044)); the validation crop is the centre of that window.

It needs a prepared folder made with :data:`PREPARE_FLAGS` (128-d CBOW word vectors, 301-d CF vectors),
which ``prepare --variant published`` sets; :func:`check_prepared` refuses any other.

Two published behaviours look like accidents and stay out of the variant, each behind its own flag of
``train``: ``--published-view`` (the ``data.view(-1, 1, 48, 256)`` reshape that mixes time and bands
during training and validation but not at inference, :func:`published_view`) and ``--random-val-crops``
(validation on random crops instead of fixed ones, which makes the "best" checkpoint depend on the draw).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cmir_tf import constants as C
from cmir_tf.errors import ConfigError, DataError

VARIANTS = C.VARIANTS
CROP_WINDOW = C.CROP_WINDOW  # frames: the published HDF5 files keep the first 1300 frames of each mel
HEAD_DIM = 128  # d_k = d_v of every attention head
ATTENTION_DROPOUT = 0.1
GENRE_DROPOUT = 0.1
CF_HIDDEN = 128
CF_DROPOUT = 0.3
L2 = 1e-4  # torch.optim.Adam(weight_decay=1e-4): coupled L2
ADAM_EPSILON = 1e-8  # torch's default
W2V_DIM, CF_DIM = 128, 301  # embedding_matrix_128.npy; LightFM's 300 factors + the item bias
# the prepare flags whose values the variant needs: (manifest param, value, flag)
PREPARE_FLAGS = (("w2v_model", "cbow", "--w2v-model cbow"), ("w2v_dim", W2V_DIM, f"--w2v-dim {W2V_DIM}"),
                 ("cf_dim", CF_DIM, f"--cf-dim {CF_DIM}"))


def check_prepared(path, manifest: dict) -> None:
    """DataError naming the prepare flags when the folder was not prepared for ``--variant published``."""
    params = manifest.get("params", {})
    defaults = {"w2v_model": "skipgram", "w2v_dim": manifest.get("w2v_dim"), "cf_dim": manifest.get("cf_dim")}
    wrong = [flag for key, value, flag in PREPARE_FLAGS if params.get(key, defaults[key]) != value]
    if wrong:
        needed = " ".join(flag for _, _, flag in PREPARE_FLAGS)
        raise DataError(f"{path}: --variant published needs a folder prepared with {needed} "
                        f"(`prepare --variant published`); this one differs in {', '.join(wrong)}")


def published_view(mel):
    """The published training input as cmir_tf's (B, 256, 48) time × bands: the crop (256 frames × 48
    bands, row-major) read as 48 rows of 256 values (``data.view(-1, 1, 48, 256)``), transposed."""
    return ops.transpose(ops.reshape(mel, (-1, C.N_BANDS, C.PATCH_FRAMES)), (0, 2, 1))


@keras.saving.register_keras_serializable(package="cmir_tf")
class PublishedGenreEncoder(keras.layers.Layer):
    """The published genre encoder (module docstring). Call ``(genres (B, T), mask (B, T))`` like
    ``encoders.GenreEncoder``; returns φ_w (B, embed_dim). ``word2vec`` (V, F_w) is the prepared table;
    the layer's ``word2vec`` weight is (V + 1, F_w), row 0 the padding (zeros at start), all trainable.
    ``embed_dim`` must equal F_w (the published output projection returns to the word-vector size)."""

    def __init__(self, word2vec=None, num_heads: int = C.NUM_HEADS, embed_dim: int = C.EMBED_DIM, *,
                 vocab_size: int | None = None, w2v_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if word2vec is not None:
            word2vec = np.asarray(word2vec, np.float32)
            vocab_size, w2v_dim = word2vec.shape
        if vocab_size is None or w2v_dim is None:
            raise ValueError("PublishedGenreEncoder needs the word2vec matrix (or vocab_size and w2v_dim)")
        self.vocab_size, self.w2v_dim = int(vocab_size), int(w2v_dim)
        self.num_heads, self.embed_dim = int(num_heads), int(embed_dim)
        if self.embed_dim != self.w2v_dim:
            raise ConfigError(f"--variant published: the genre encoder returns word-vector-sized embeddings; "
                              f"--embed-dim {self.embed_dim} differs from the word vectors' {self.w2v_dim}")
        self._initial = word2vec
        width = self.num_heads * HEAD_DIM
        self.w_q, self.w_k, self.w_v = (keras.layers.Dense(width, use_bias=False, name=n) for n in ("w_q", "w_k", "w_v"))
        self.fc = keras.layers.Dense(self.w2v_dim, use_bias=False, name="fc")
        self.attention_dropout = keras.layers.Dropout(ATTENTION_DROPOUT, name="attention_dropout")
        self.dropout = keras.layers.Dropout(GENRE_DROPOUT, name="dropout")
        self.ln = keras.layers.LayerNormalization(epsilon=1e-6, name="ln")

    def build(self, genres_shape, mask_shape=None):
        init = self._initial
        table = None if init is None else np.concatenate([np.zeros((1, self.w2v_dim), np.float32), init])
        self.word2vec = self.add_weight(
            shape=(self.vocab_size + 1, self.w2v_dim), name="word2vec", trainable=True,
            initializer=(lambda shape, dtype=None: tf.constant(table, dtype=dtype)) if table is not None else "zeros")
        self._initial = None
        seq = (genres_shape[0], genres_shape[1], self.w2v_dim)
        for dense in (self.w_q, self.w_k, self.w_v):
            dense.build(seq)
        self.fc.build((genres_shape[0], genres_shape[1], self.num_heads * HEAD_DIM))
        self.ln.build((genres_shape[0], self.w2v_dim))
        self.built = True

    def _heads(self, x):  # (B, T, H·d) → (B, H, T, d)
        return ops.transpose(ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, HEAD_DIM)), (0, 2, 1, 3))

    def call(self, genres, mask, training=None):
        mask = ops.cast(mask, "bool")
        rows = ops.where(mask, ops.cast(genres, "int32") + 1, 0)  # padding → row 0
        x = ops.take(self.word2vec, rows, axis=0)
        q, k, v = self._heads(self.w_q(x)), self._heads(self.w_k(x)), self._heads(self.w_v(x))
        scores = ops.matmul(q / HEAD_DIM ** 0.5, ops.transpose(k, (0, 1, 3, 2)))  # (B, H, T_q, T_k)
        scores = ops.where(mask[:, None, None, :], scores, ops.cast(-1e9, scores.dtype))
        attn = self.attention_dropout(ops.softmax(scores, axis=-1), training=training)
        out = ops.transpose(ops.matmul(attn, v), (0, 2, 1, 3))
        out = ops.reshape(out, (ops.shape(out)[0], -1, self.num_heads * HEAD_DIM))
        out = self.dropout(self.fc(out), training=training)
        return self.ln(ops.sum(out, axis=1))  # every query position, padding included

    def compute_output_shape(self, genres_shape, mask_shape=None):
        return (genres_shape[0], self.embed_dim)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, embed_dim=self.embed_dim, vocab_size=self.vocab_size,
                      w2v_dim=self.w2v_dim)
        return config


@keras.saving.register_keras_serializable(package="cmir_tf")
class PublishedCFEncoder(keras.layers.Layer):
    """The published CF encoder: Dense 128 → ReLU → Dropout 0.3 → Dense ``embed_dim`` → LayerNorm."""

    def __init__(self, embed_dim: int = C.EMBED_DIM, **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = int(embed_dim)
        self.fc1 = keras.layers.Dense(CF_HIDDEN, name="fc1")
        self.drop = keras.layers.Dropout(CF_DROPOUT, name="dropout")
        self.fc2 = keras.layers.Dense(self.embed_dim, name="fc2")
        self.ln = keras.layers.LayerNormalization(epsilon=1e-6, name="ln")

    def build(self, input_shape):
        self.fc1.build(input_shape)
        self.fc2.build((input_shape[0], CF_HIDDEN))
        self.ln.build((input_shape[0], self.embed_dim))
        self.built = True

    def call(self, cf, training=None):
        return self.ln(self.fc2(self.drop(ops.relu(self.fc1(cf)), training=training)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.embed_dim)

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim}


@keras.saving.register_keras_serializable(package="cmir_tf")
class CoupledL2Adam(keras.optimizers.Adam):
    """``torch.optim.Adam(weight_decay=l2)``: the gradient of every trainable variable gets ``l2 · w`` added
    before Adam's moments are updated (coupled L2, decayed through Adam's per-parameter scaling), unlike
    Keras's ``weight_decay`` (decoupled, AdamW). ε defaults to PyTorch's 1e-8 and is placed as PyTorch
    places it. No AMSGrad."""

    def __init__(self, learning_rate=C.LEARNING_RATE, l2: float = L2, epsilon: float = ADAM_EPSILON, **kwargs):
        super().__init__(learning_rate=learning_rate, epsilon=epsilon, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate):
        """PyTorch's step: w ← w − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε), written as Keras's α·m/(√v + ε·√(1−β₂ᵗ))
        (Keras's own Adam adds ε to √v before the bias correction, a smaller effective ε early on)."""
        dtype = variable.dtype
        const = lambda x: ops.convert_to_tensor(x, dtype)  # noqa: E731 — Python floats straight to the dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.add(ops.cast(gradient, dtype), ops.multiply(const(self.l2), variable))
        step = ops.cast(self.iterations + 1, dtype)
        correction2 = ops.sqrt(1 - ops.power(const(self.beta_2), step))
        alpha = lr * correction2 / (1 - ops.power(const(self.beta_1), step))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), const(1 - self.beta_1)))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), const(1 - self.beta_2)))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), const(self.epsilon) * correction2)))

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}
