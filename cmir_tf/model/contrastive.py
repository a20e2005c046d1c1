"""The contrastive model of the paper (sec. 2.2) and its baselines, as one custom Keras model.

``build_model(mode, word2vec, ...)`` returns a compiled :class:`ContrastiveModel` that is called on the
pipeline's batch dict ``{"mel", "genres", "genre_mask", "cf", "song_id"}``; its ``audio_encoder``
attribute (e_a) is what gets exported.

Modes (paper sec. 3): the contrastive presets minimise eq. 13 with ``losses.nt_xent``
(mean over the 2M anchors; the paper's sum is 2M times it, see losses.py):

    contr_cf_g   λ_A2G·NT(φa, φw) + λ_A2P·NT(φa, φcf) + λ_G2P·NT(φw, φcf)    metrics a2g, a2p, g2p
    contr_g      λ_A2G·NT(φa, φw)                                            metric  a2g
    contr_cf     λ_A2P·NT(φa, φcf)                                           metric  a2p

and the baselines put a head on the audio embedding φa (so the exported encoder is the same layer):

    bline_g      λ_A2G·BCE: Dense(V) logits, sigmoid binary cross-entropy against the multi-hot genres
                                                                                  metric  genre
    bline_cf     λ_A2P·(1 − cos): Dense(300) regression of the CF vector          metric  cf
    bline_cf_g   both, summed                                                     metrics genre, cf

(``LOSS_PARTS`` is that table in code: each part's λ and, for a contrastive part, the two outputs
it aligns.)

The strategies of the follow-up study (``cmir_tf.model.presets``: ``cm``, ``aim_playlist``, ``aim_artist``,
``aim_genre``, ``ss``, ``hybrid``, or any mode with ``align`` / ``audio_pairs`` / ``mixup`` overrides)
add the intra-modal audio term ``a2a_<source>``, weighted by ``lambda_audio``. Its batch holds 2m rows
(the first songs of m pairs, then their partners — or a song's two crops for ``self``):

    a2a_playlist / a2a_artist / a2a_self   λ_audio·NT(φa[:m], φa[m:])
    a2a_genre   λ_audio·weighted NT-Xent(φa[:m], φa[m:], W), W_ij = |G_i ∩ G_j| / (|G_i| + |G_j|)
                over the (global) batch's genre sets (the first T_w genres the pipeline gives)

and the cross-modal terms of a hybrid are computed over all 2m rows. With ``mixup`` = α, every
training input patch x becomes g·x + (1 − g)·x_π (g ~ Beta(α, 2) per example, π a random permutation
of the replica's batch), drawn statelessly from the optimizer step and the replica, so a resumed run
mixes exactly as an uninterrupted one; evaluation never mixes.

Why the cosine distance for ``bline_cf``: matrix-factorisation factors are defined only up to the
scale the regularisation happens to give them (their norms mostly encode popularity), and everything
downstream compares them by angle (playlist continuation uses angular / cosine neighbours). MSE would
spend the head's capacity on those norms; the cosine distance asks only for the direction, which is
what the contrastive A2P alignment also uses (cosine similarity, eq. 11). Songs without a CF vector
(zeros) give zero gradient.

Global-batch semantics under a ``tf.distribute`` strategy with R replicas (each holding B/R rows):
every contrastive term uses the embeddings of the whole global batch as negatives
(``losses.nt_xent_replica_share``), batch-norm statistics are synchronised across replicas (the audio
encoder is built with synchronised BatchNorm when the model is created inside a multi-replica strategy
scope), and each replica's loss is its share of the global-batch mean, so that the optimizer's sum of
the replicas' gradients equals the one-device gradient on the same global batch. The reported metrics
are the global-batch values. The cross-replica sums are ``cmir_tf.model.distribute``'s; Keras's own
pre-training build, which would average a batch over the replicas, is replaced by
``compat.BuiltModelMixin`` (every variable exists after the constructor).

Speed (benchmarks/train_step.py): BatchNorm of the CNN uses TF's fused kernel on one device
(``encoders.FusedBatchNorm``), and ``cnn_dtype="mixed_bfloat16"`` / ``"mixed_float16"`` runs the
convolutional blocks in 16 bits (float32 variables, embeddings and losses; ``cmir_tf.model.precision``) —
bfloat16 is about 1.8× faster again on a CPU with AVX512_BF16; float16 is for GPUs, with dynamic loss
scaling in ``train_step`` (the gradient of the scaled loss; the optimizer unscales it and skips
non-finite steps; the reported loss is unscaled). ``compile(jit_compile=...)`` compiles each replica's
forward and backward pass with XLA (docs/GPU.md). The default is float32 without XLA, the paper's
numerics.

Optimiser: Adam, learning rate 1e-4 (paper sec. 3.2). The published code also used weight decay 1e-4
(PyTorch's coupled L2 form); ``weight_decay`` enables Keras's decoupled form (AdamW-style, applied as
w ← w − lr·wd·w). It defaults to 0, the paper's text; at lr 1e-4 either form changes weights by ~1e-8
of their value per step, far below anything a short run can see.

``variant="published"`` (``cmir_tf.model.published``, docs/FIDELITY.md) trains what the published code
trains instead: its genre and CF encoders, the loss with ``+1e-5`` inside the log, MSE for the CF
baseline, and PyTorch's Adam with coupled L2 1e-4 and ε 1e-8. ``published_view=True`` feeds every
training and validation crop through the published ``view`` that mixes time and bands.
"""
from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from cmir_tf import constants as C
from cmir_tf.errors import ConfigError
from cmir_tf.model import compat
from cmir_tf.model.distribute import agree_on_overflow, global_count, global_sum, resolve_jit_compile
from cmir_tf.model.encoders import AudioEncoder, CFEncoder, GenreEncoder
from cmir_tf.model.losses import (PUBLISHED_LOG_EPSILON, global_rows, loss_dtype, nt_xent_replica_share,
                                  semantic_weights, weighted_nt_xent_replica_share)
from cmir_tf.model.precision import loss_scaled
from cmir_tf.model.presets import AUDIO_PAIRS, MIXUP_BETA, PRESETS, resolve
from cmir_tf.model.published import CoupledL2Adam, PublishedCFEncoder, PublishedGenreEncoder, published_view

MODES = C.MODES  # the paper's six modes → the losses each reports (presets.PRESETS holds every preset)
_MIXUP_SALT = 0x6D1C  # separates the mixup draws' seeds from any other stateless stream


class LossPart(NamedTuple):
    """A loss part: the index of its weight in ``lambdas`` (λ_A2G, λ_A2P, λ_G2P), and for a contrastive
    part the two outputs it aligns."""

    weight: int
    aligns: tuple[str, str] | None = None


# The one table of loss parts (module docstring): the genre target shares λ_A2G, the CF target λ_A2P.
LOSS_PARTS = {
    "a2g": LossPart(0, ("audio", "genre")),
    "a2p": LossPart(1, ("audio", "cf")),
    "g2p": LossPart(2, ("genre", "cf")),
    "genre": LossPart(0),
    "cf": LossPart(1),
    **{f"a2a_{source}": LossPart(3) for source in AUDIO_PAIRS},  # λ_audio
}


def _features(data):
    """The batch dict: ``train_on_batch`` / ``evaluate`` pack it as (x, y, sample_weight)."""
    return data[0] if isinstance(data, (tuple, list)) else data


def multi_hot(genres, mask, vocab_size):
    """(B, T) genre indices + (B, T) mask → (B, V) float32 multi-hot targets (padded slots ignored)."""
    one_hot = tf.one_hot(tf.cast(genres, tf.int32), vocab_size, dtype=tf.float32)
    return tf.reduce_max(one_hot * tf.cast(mask, tf.float32)[..., None], axis=1)


def mixup(x, alpha: float, beta: float, seed):
    """Mix each example with a partner of its batch: ``g·x + (1 − g)·x[π]`` with g ~ Beta(α, β) per
    example and π a random permutation; stateless (``seed``: two integers). Returns (mixed, g, π)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    n = tf.shape(x)[0:1]
    ga = tf.random.stateless_gamma(n, seeds[0], alpha=alpha)
    gb = tf.random.stateless_gamma(n, seeds[1], alpha=beta)
    gains = ga / (ga + gb)
    perm = tf.argsort(tf.random.stateless_uniform(n, seeds[2]))
    g = tf.reshape(tf.cast(gains, x.dtype), tf.concat([n, tf.ones([tf.rank(x) - 1], tf.int32)], axis=0))
    return g * x + (1 - g) * tf.gather(x, perm), gains, perm


@keras.saving.register_keras_serializable(package="cmir_tf")
class ContrastiveModel(compat.BuiltModelMixin, keras.Model):
    """Audio encoder plus the genre / CF encoders (contrastive modes) or heads (baselines).

    Called on the pipeline's dict, it returns a dict: ``audio`` (φa, (B,128)), ``features`` (B,1024),
    and ``genre`` / ``cf`` (φw / φcf) in contrastive modes, ``genre_logits`` (B,V) / ``cf_pred`` (B,300)
    in baselines. ``train_step`` / ``test_step`` return ``loss`` and the mode's parts (see ``MODES``).
    """

    def __init__(
        self,
        mode: str = "contr_cf_g",
        word2vec=None,
        *,
        vocab_size: int | None = None,
        w2v_dim: int = C.W2V_DIM,
        dropout: float = C.DROPOUT,
        temperature: float = C.TEMPERATURE,
        lambdas=(1.0, 1.0, 1.0),
        embed_dim: int = C.EMBED_DIM,
        num_heads: int = C.NUM_HEADS,
        cf_dim: int = C.CF_DIM,
        synchronized_bn=None,
        cnn_dtype=None,
        align=None,
        audio_pairs: str | None = None,
        mixup: float | None = None,
        lambda_audio: float = 1.0,
        variant: str = "paper",
        published_view: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if variant not in C.VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(C.VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.published_view = bool(published_view)
        if tf.distribute.has_strategy():  # Keras would build it with a batch average (compat: symbolic_build)
            compat.require("symbolic_build")
        self.preset = resolve(mode, align=align, audio_pairs=audio_pairs, mixup=mixup)
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        lambdas = tuple(float(x) for x in lambdas)
        if len(lambdas) != 3:
            raise ConfigError(f"lambdas must be three weights (A2G, A2P, G2P), got {lambdas}")
        if word2vec is not None:
            word2vec = np.asarray(word2vec, np.float32)
            if word2vec.ndim != 2:
                raise ConfigError(f"word2vec must be a (n_genres, dim) matrix, got shape {word2vec.shape}")
            vocab_size, w2v_dim = word2vec.shape
        self.mode = mode
        self.parts = self.preset.parts
        self.lambda_audio = float(lambda_audio)
        if self.preset.uses_genres and not vocab_size:
            raise ConfigError(f"mode {mode!r} needs the genre vocabulary: pass the word2vec matrix (or its vocab_size)")
        self.vocab_size = int(vocab_size) if vocab_size else None
        self.w2v_dim = int(w2v_dim)
        self.dropout_rate = float(dropout)
        self.temperature = float(temperature)
        self.lambdas = lambdas
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.cf_dim = int(cf_dim)
        self.cnn_dtype = cnn_dtype
        self._make_layers(word2vec, synchronized_bn)
        names = ("loss",) + self.parts
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._build_layers()

    # -- structure -----------------------------------------------------------------------------------
    def _make_layers(self, word2vec, synchronized_bn):
        """The audio encoder, and the encoders (contrastive modes) or heads (baselines) the mode uses."""
        dropout, embed_dim = self.dropout_rate, self.embed_dim
        self.audio_encoder = AudioEncoder(
            dropout, embed_dim, synchronized=synchronized_bn, cnn_dtype=self.cnn_dtype, name="audio_encoder"
        )
        self.genre_encoder = self.cf_encoder = self.genre_head = self.cf_head = None
        published = self.variant == "published"
        if published and self.preset.has_genre_encoder:
            self.genre_encoder = PublishedGenreEncoder(
                word2vec, self.num_heads, embed_dim, vocab_size=self.vocab_size, w2v_dim=self.w2v_dim,
                name="genre_encoder")
        elif self.preset.has_genre_encoder:
            self.genre_encoder = GenreEncoder(
                word2vec, self.num_heads, dropout, embed_dim, vocab_size=self.vocab_size, w2v_dim=self.w2v_dim,
                name="genre_encoder",
            )
        if "a2p" in self.parts or "g2p" in self.parts:
            self.cf_encoder = (PublishedCFEncoder(embed_dim, name="cf_encoder") if published
                               else CFEncoder(dropout, embed_dim, name="cf_encoder"))
        if "genre" in self.parts:
            self.genre_head = keras.layers.Dense(self.vocab_size, name="genre_head")
        if "cf" in self.parts:
            self.cf_head = keras.layers.Dense(self.cf_dim, name="cf_head")

    def _build_layers(self):
        self.audio_encoder.build((None, C.PATCH_FRAMES, C.N_BANDS))
        if self.genre_encoder is not None:
            self.genre_encoder.build((None, C.MAX_GENRES), (None, C.MAX_GENRES))
        if self.cf_encoder is not None:
            self.cf_encoder.build((None, self.cf_dim))
        if self.genre_head is not None:
            self.genre_head.build((None, self.embed_dim))
        if self.cf_head is not None:
            self.cf_head.build((None, self.embed_dim))
        self.built = True

    def call(self, inputs, training=None):
        audio, features = self.audio_encoder(inputs["mel"], training=training)
        out = {"audio": audio, "features": features}
        if self.genre_encoder is not None:
            out["genre"] = self.genre_encoder(inputs["genres"], inputs["genre_mask"], training=training)
        if self.cf_encoder is not None:
            out["cf"] = self.cf_encoder(inputs["cf"], training=training)
        if self.genre_head is not None:
            out["genre_logits"] = self.genre_head(audio)
        if self.cf_head is not None:
            out["cf_pred"] = self.cf_head(audio)
        return out

    # -- losses --------------------------------------------------------------------------------------
    def _loss_shares(self, data, training):
        """This replica's share of the total loss and of each part (sums over replicas = global means)."""
        if self.published_view:
            data = dict(data, mel=published_view(data["mel"]))
        out = self(data, training=training)
        shares = {}
        for part in self.parts:
            if part == self.preset.intra_term:
                shares[part] = self._intra_share(out["audio"], data)
            elif LOSS_PARTS[part].aligns:
                left, right = LOSS_PARTS[part].aligns
                shares[part] = nt_xent_replica_share(out[left], out[right], self.temperature, self._log_epsilon)
            elif part == "genre":
                dtype = loss_dtype(out["genre_logits"])
                targets = tf.cast(multi_hot(data["genres"], data["genre_mask"], self.vocab_size), dtype)
                logits = tf.cast(out["genre_logits"], dtype)
                bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
                per_example = tf.reduce_mean(bce, axis=1)
                shares[part] = tf.reduce_sum(per_example) / global_count(tf.shape(logits)[0], dtype)
            elif part == "cf" and self.variant == "published":
                shares[part] = self._mse_share(out["cf_pred"], data["cf"])
            elif part == "cf":
                dtype = loss_dtype(out["cf_pred"])
                pred = tf.math.l2_normalize(tf.cast(out["cf_pred"], dtype), axis=1)
                target = tf.math.l2_normalize(tf.cast(data["cf"], dtype), axis=1)
                per_example = 1.0 - tf.reduce_sum(pred * target, axis=1)
                shares[part] = tf.reduce_sum(per_example) / global_count(tf.shape(pred)[0], dtype)
        weights = self.lambdas + (self.lambda_audio,)
        total = tf.add_n([weights[LOSS_PARTS[p].weight] * shares[p] for p in self.parts])
        return total, shares

    @property
    def _log_epsilon(self) -> float:
        return PUBLISHED_LOG_EPSILON if self.variant == "published" else 0.0

    @staticmethod
    def _mse_share(pred, target):
        """The published CF baseline's ``MSELoss``: mean over the batch and the CF values (this replica's share)."""
        dtype = loss_dtype(pred)
        per_example = tf.reduce_mean(tf.square(tf.cast(pred, dtype) - tf.cast(target, dtype)), axis=1)
        return tf.reduce_sum(per_example) / global_count(tf.shape(per_example)[0], dtype)

    def _intra_share(self, audio, data):
        """The a2a term: rows [:m] against their partners [m:], weighted by shared genres for ``genre``."""
        rows = tf.shape(audio)[0]
        check = tf.debugging.assert_equal(
            rows % 2, 0, message="audio pairs: a batch must hold 2m rows (m first songs, then their partners)")
        with tf.control_dependencies([check]):
            m = rows // 2
        if self.preset.audio_pairs != "genre":
            return nt_xent_replica_share(audio[:m], audio[m:], self.temperature)
        sets = multi_hot(data["genres"], data["genre_mask"], self.vocab_size)
        weights = semantic_weights(global_rows(sets[:m], sets[m:]))
        return weighted_nt_xent_replica_share(audio[:m], audio[m:], weights, self.temperature)

    def _mixup_seed(self):
        """(optimizer step, replica): a resumed run draws what the uninterrupted one would have."""
        step = self.optimizer.iterations if self.optimizer is not None else tf.constant(0, tf.int64)
        ctx = tf.distribute.get_replica_context()
        replica = ctx.replica_id_in_sync_group if ctx is not None else 0
        return tf.stack([tf.cast(step, tf.int64), tf.cast(replica, tf.int64) + _MIXUP_SALT])

    def _record(self, total, shares):
        names = ("loss",) + self.parts
        values = global_sum([total] + [shares[p] for p in self.parts])
        for name, value in zip(names, values):
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in names}

    # -- steps ---------------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", *, jit_compile=False, **kwargs):
        """Keras's ``compile``, except that (i) the optimizer of a float16 CNN is wrapped in Keras's
        ``LossScaleOptimizer`` (``precision.loss_scaled``), and (ii) ``jit_compile`` (True / False /
        ``"auto"`` / ``"on"`` / ``"off"``, see ``distribute.resolve_jit_compile``) compiles each
        replica's forward and backward pass with XLA. Keras's own flag stays off: it would compile the
        whole multi-replica step as one XLA program, which cannot reach the other devices' variables,
        and the optimizer's update cannot run inside an XLA replica step under ``MirroredStrategy``."""
        self.jit_replica_step = resolve_jit_compile(jit_compile, cnn_dtype=self.cnn_dtype)
        object.__setattr__(self, "_compiled_steps", {})  # untracked: not part of the saved object graph
        super().compile(optimizer=loss_scaled(optimizer, self.cnn_dtype), jit_compile=False, **kwargs)

    def _replica_step(self, name, fn):
        """``fn``, or its XLA-compiled form when the model was compiled with ``jit_compile``."""
        if not getattr(self, "jit_replica_step", False):
            return fn
        if name not in self._compiled_steps:
            self._compiled_steps[name] = tf.function(fn, jit_compile=True)
        return self._compiled_steps[name]

    def _gradients(self, data):
        """One replica's forward and backward pass: (gradients of the scaled loss, total, parts)."""
        with tf.GradientTape() as tape:
            total, shares = self._loss_shares(data, training=True)
            scaled = self.optimizer.scale_loss(total)  # × the loss scale under float16, else unchanged
        return tape.gradient(scaled, self.trainable_variables), total, shares

    def _mixed(self, data):
        """The training batch with its spectrograms mixed when the preset asks (``mixup``). Drawn outside
        the XLA-compiled replica step: TensorFlow's stateless Gamma sampler has no XLA kernel."""
        if not self.preset.mixup:
            return data
        return dict(data, mel=mixup(data["mel"], self.preset.mixup, MIXUP_BETA, self._mixup_seed())[0])

    def train_step(self, data):
        data = self._mixed(_features(data))
        grads, total, shares = self._replica_step("train", self._gradients)(data)
        grads = agree_on_overflow(grads, self.optimizer)  # a float16 overflow skips the step on every replica
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))  # unscales, skips non-finite
        return self._record(total, shares)

    def _evaluation(self, data):
        return self._loss_shares(data, training=False)

    def test_step(self, data):
        total, shares = self._replica_step("test", self._evaluation)(_features(data))
        return self._record(total, shares)

    @property
    def metrics(self):
        return list(self._trackers.values())

    # -- serialisation -------------------------------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "mode": self.mode,
            "vocab_size": self.vocab_size,
            "w2v_dim": self.w2v_dim,
            "dropout": self.dropout_rate,
            "temperature": self.temperature,
            "lambdas": list(self.lambdas),
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "cf_dim": self.cf_dim,
            "cnn_dtype": self.cnn_dtype,
            **self._strategy_config(),
            **({"variant": self.variant} if self.variant != "paper" else {}),
            **({"published_view": True} if self.published_view else {}),
        }

    def _strategy_config(self) -> dict:
        """The resolved strategy; left out for one of the paper's six modes used as is (their
        model.json is unchanged)."""
        if self.mode in MODES and self.preset == PRESETS[self.mode] and self.lambda_audio == 1.0:
            return {}
        p = self.preset
        return {"align": list(p.align), "audio_pairs": p.audio_pairs, "mixup": p.mixup,
                "lambda_audio": self.lambda_audio}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(
    mode: str,
    word2vec=None,
    *,
    learning_rate: float = C.LEARNING_RATE,
    weight_decay: float = 0.0,
    compile: bool = True,
    jit_compile=False,
    **config,
) -> ContrastiveModel:
    """Build (and by default compile with Adam) the model of ``mode``; see the module docstring.

    ``config``: any keyword of :class:`ContrastiveModel` (``dropout``, ``temperature``, ``lambdas``,
    ``embed_dim``, ``num_heads``, ``cf_dim``, ``vocab_size``, ``w2v_dim``, ``synchronized_bn``,
    ``cnn_dtype``, ``name`` — the model is named after its mode unless given).
    Call it inside ``strategy.scope()`` for distributed training: the audio encoder then uses
    synchronised BatchNorm (``synchronized_bn=None`` decides from the strategy; True/False forces it).
    ``word2vec`` (n_genres, 200) is required by the modes that use genres, ignored otherwise.
    ``jit_compile``: XLA for each replica's forward and backward pass (``ContrastiveModel.compile``);
    off by default, as XLA made the CPU step 2–7× slower here (``"auto"`` turns it on for GPUs).
    ``cnn_dtype``: ``None`` (float32), ``"mixed_float16"`` (with loss scaling) or ``"mixed_bfloat16"``
    for the audio CNN blocks only (``cmir_tf.model.precision``); a checkpoint loads into any of them.
    """
    config.setdefault("name", mode)
    model = ContrastiveModel(mode, word2vec, **config)
    if compile:
        optimizer = make_optimizer(learning_rate, weight_decay, variant=model.variant)
        model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model


def dummy_batch(cf_dim: int = C.CF_DIM, batch: int = 2) -> dict:
    """A zero batch with the pipeline's structure: one call on it creates a model's variables."""
    return {
        "mel": tf.zeros([batch, C.PATCH_FRAMES, C.N_BANDS], tf.float32),
        "genres": tf.zeros([batch, C.MAX_GENRES], tf.int32),
        "genre_mask": tf.concat([tf.ones([batch, 1], tf.bool), tf.zeros([batch, C.MAX_GENRES - 1], tf.bool)], axis=1),
        "cf": tf.zeros([batch, cf_dim], tf.float32),
        "song_id": tf.zeros([batch], tf.int64),
    }


def make_optimizer(learning_rate: float = C.LEARNING_RATE, weight_decay: float = 0.0, *,
                   variant: str = "paper") -> keras.optimizers.Optimizer:
    """Adam (paper); with ``weight_decay`` > 0, Keras's decoupled weight decay (AdamW form).
    ``variant="published"``: PyTorch's Adam with coupled L2 1e-4 and ε 1e-8 (``published.CoupledL2Adam``);
    a decoupled ``weight_decay`` is refused there (the published code has only the coupled one)."""
    if not learning_rate > 0:
        raise ConfigError(f"learning_rate must be > 0, got {learning_rate}")
    if variant == "published":
        if weight_decay:
            raise ConfigError("--weight-decay: --variant published uses the published coupled L2 1e-4; "
                              "a decoupled weight decay on top is not the published optimiser")
        return CoupledL2Adam(learning_rate=learning_rate)
    if weight_decay:
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate=learning_rate)
