"""NT-Xent contrastive loss of the paper (eq. 9–12) and its cross-replica (global-batch) form.

Normalisation, exactly: for paired batches ψ_a, ψ_b of M rows, let ℓ_i be the per-anchor term
``-log softmax_k≠i(sim(z_i, z_k)/τ)[pos(i)]`` over the 2M items z = [ψ_a; ψ_b] (positive pos(i) = i ± M,
self-similarity excluded). The paper's eq. 9 sums ℓ_i over the M anchors of ψ_a:
``L_{a,b} = Σ_{i≤M} ℓ_i``; ``L_{b,a}`` is the same sum over the M anchors of ψ_b (the candidate set is
the same 2M items, with the roles of a and b swapped in eq. 12). Hence

    nt_xent(ψ_a, ψ_b, τ) = (L_{a,b} + L_{b,a}) / (2M)      (mean over the 2M anchors),

so the paper's L_A2G = L_{φa,φw} + L_{φw,φa} = 2M · nt_xent(φ_a, φ_w, τ), and its L_tot (eq. 13) is
2M times our λ-weighted sum of nt_xent terms. The constant 2M only rescales the learning rate;
we keep the mean (the SimCLR / published-code convention) so the loss does not grow with the batch.

It is computed as a log-softmax cross-entropy over logits with the diagonal replaced by a large
negative number (not ``-inf``: ``-inf * 0`` in the gradient would be NaN), which is stable at τ = 0.01
and needs no ``+1e-5`` inside a log.
"""
from __future__ import annotations

import tensorflow as tf

from .distribute import gather_rows

# Replaces the self-similarity logit. |sim/τ| ≤ 1/τ, so any τ > 1e-8 leaves the masked entry at
# exp(-1e9 + …) = 0 exactly in float32 after the log-softmax's max subtraction.
_MASK_LOGIT = -1e9


def loss_dtype(x):
    """float64 stays float64 (used by the exact equivalence tests); anything else computes in float32."""
    return tf.float64 if x.dtype == tf.float64 else tf.float32


def _normalise(z):
    return tf.math.l2_normalize(tf.cast(z, loss_dtype(z)), axis=1, epsilon=1e-12)


def _check(za, zb, temperature):
    if not temperature > 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
    if za.shape.rank != 2 or zb.shape.rank != 2:
        raise ValueError(f"nt_xent: expected two (M, D) batches, got shapes {za.shape} and {zb.shape}")


def _anchor_losses(anchors, candidates, self_index, positive_index, temperature):
    """Per-anchor cross-entropy: anchors (n, D) and candidates (N, D) are unit vectors."""
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    n_candidates = tf.shape(candidates)[0]
    is_self = tf.one_hot(self_index, n_candidates, on_value=True, off_value=False, dtype=tf.bool)
    logits = tf.where(is_self, tf.constant(_MASK_LOGIT, logits.dtype), logits)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_index, logits=logits)


def nt_xent(za, zb, temperature: float = 0.1):
    """Symmetric NT-Xent of eq. 9–12: mean over the 2M anchors of both batches (see module docstring).

    ``za``, ``zb``: (M, D) embeddings, row i of one paired with row i of the other (float16/bfloat16/
    float32 are computed in float32, float64 in float64). Returns a scalar of that dtype.
    """
    za, zb = tf.convert_to_tensor(za), tf.convert_to_tensor(zb)
    _check(za, zb, temperature)
    z = _normalise(tf.concat([za, zb], axis=0))  # ζ of eq. 12, (2M, D)
    m = tf.shape(za)[0]
    idx = tf.range(2 * m)
    positive = tf.concat([tf.range(m, 2 * m), tf.range(0, m)], axis=0)
    return tf.reduce_mean(_anchor_losses(z, z, idx, positive, temperature))


def nt_xent_replica_share(za, zb, temperature: float = 0.1):
    """This replica's share of the global-batch NT-Xent, for a custom ``train_step`` under a strategy.

    Inside a replica context with R > 1 replicas, ``za``/``zb`` are this replica's (m, D) rows. The
    global batches (M = Σ m rows, in replica order) are gathered (``distribute.gather_rows``, also
    inside an XLA-compiled step), so this replica's 2m anchors are contrasted against all 2M global
    items (the negatives of the whole global batch), and the share is ``Σ_{local anchors} ℓ_i / (2M)``.
    Hence Σ over replicas of the shares = ``nt_xent`` of the global batch, and — since the gather's
    gradient all-reduces (sums) the upstream gradients and the
    optimizer sums the replicas' parameter gradients — the update equals the one-device update on the
    same global batch. Outside a strategy (or with one replica) this is just ``nt_xent``.

    Sum the shares over replicas (``all_reduce(SUM)``) to report the global loss value.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError("nt_xent_replica_share must be called in a replica context (inside strategy.run / train_step)")
    if ctx.num_replicas_in_sync == 1:
        return nt_xent(za, zb, temperature)
    za, zb = tf.convert_to_tensor(za), tf.convert_to_tensor(zb)
    _check(za, zb, temperature)
    m = tf.shape(za)[0]
    dtype = loss_dtype(za)
    # one gather of both batches: rows of ψ_a, then of ψ_b, side by side (supports uneven replicas)
    gathered, offset, big_m = gather_rows(tf.concat([tf.cast(za, dtype), tf.cast(zb, dtype)], axis=1))
    ga, gb = tf.split(gathered, 2, axis=1)
    candidates = _normalise(tf.concat([ga, gb], axis=0))  # (2M, D)
    anchors = _normalise(tf.concat([za, zb], axis=0))  # (2m, D): local rows of ψ_a, then of ψ_b
    local = tf.range(m) + offset
    self_index = tf.concat([local, local + big_m], axis=0)
    positive = tf.concat([local + big_m, local], axis=0)
    losses = _anchor_losses(anchors, candidates, self_index, positive, temperature)
    return tf.reduce_sum(losses) / tf.cast(2 * big_m, dtype)
