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

Weighted NT-Xent (the soft-positive form of Meehan & Pauwels, "Evaluating Contrastive Methodologies
for Music Representation Learning Using Playlist Data", ICASSP 2025): with unit rows z = [ψ_a; ψ_b]
(2M rows), s_ij = z_i·z_j / τ and a non-negative weight matrix W (2M × 2M, its diagonal ignored),

    ℓ_i = −Σ_j (W_ij / Σ_k W_ik) s_ij + log Σ_{k≠i} exp(s_ik)
    weighted_nt_xent = mean of ℓ_i over the anchors i whose weight row is not all zero.

Since the normalised row sums to one, ℓ_i is the soft-label cross-entropy of row i's log-softmax, and it
is computed that way (the same masked logits as above: finite at τ = 0.01, where the published code's
``log(exp(s) + 1e-5)`` caps every term and gives NaN in float32). W = the pair permutation (W_{i,i±M} = 1)
gives exactly ``nt_xent``. ``semantic_weights`` builds the study's genre weights
W_ij = |G_i ∩ G_j| / (|G_i| + |G_j|) (i ≠ j) from multi-hot genre sets. A batch where no anchor has a
positive weight is an error (a ``tf.debugging`` assertion naming the cause); where assertions are
compiled away (XLA) its value is defined as 0, never NaN.
"""
from __future__ import annotations

import tensorflow as tf

from cmir_tf.model.distribute import gather_rows

# Replaces the self-similarity logit. |sim/τ| ≤ 1/τ, so any τ > 1e-8 leaves the masked entry at
# exp(-1e9 + …) = 0 exactly in float32 after the log-softmax's max subtraction.
_MASK_LOGIT = -1e9
PUBLISHED_LOG_EPSILON = 1e-5  # the published utils.contrastive_loss: −log(num/den + 1e-5)


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


def _masked_logits(anchors, candidates, self_index, temperature):
    """Similarities / τ of unit anchors (n, D) against unit candidates (N, D), each anchor's own entry masked."""
    logits = tf.matmul(anchors, candidates, transpose_b=True) / temperature
    n_candidates = tf.shape(candidates)[0]
    is_self = tf.one_hot(self_index, n_candidates, on_value=True, off_value=False, dtype=tf.bool)
    return tf.where(is_self, tf.constant(_MASK_LOGIT, logits.dtype), logits)


def _anchor_losses(anchors, candidates, self_index, positive_index, temperature, log_epsilon: float = 0.0):
    """Per-anchor cross-entropy: anchors (n, D) and candidates (N, D) are unit vectors.

    ``log_epsilon`` > 0 gives the published code's term ``−log(p_i + ε)`` instead of ``−log p_i``, where
    p_i = num/den is the positive's softmax probability; computed as ``−log(exp(−ℓ_i) + ε)`` from the
    stable cross-entropy ℓ_i, so it stays finite where ``exp(sim/τ)`` would overflow."""
    logits = _masked_logits(anchors, candidates, self_index, temperature)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=positive_index, logits=logits)
    if log_epsilon:
        losses = -tf.math.log(tf.exp(-losses) + tf.constant(log_epsilon, losses.dtype))
    return losses


def nt_xent(za, zb, temperature: float = 0.1, log_epsilon: float = 0.0):
    """Symmetric NT-Xent of eq. 9–12: mean over the 2M anchors of both batches (see module docstring).

    ``za``, ``zb``: (M, D) embeddings, row i of one paired with row i of the other (float16/bfloat16/
    float32 are computed in float32, float64 in float64). Returns a scalar of that dtype.
    ``log_epsilon``: 0 (the paper); ``PUBLISHED_LOG_EPSILON`` = 1e-5 is the published code's
    ``−log(num/den + 1e-5)`` (``--variant published``), which caps each term at −log 1e-5 ≈ 11.5.
    """
    za, zb = tf.convert_to_tensor(za), tf.convert_to_tensor(zb)
    _check(za, zb, temperature)
    z = _normalise(tf.concat([za, zb], axis=0))  # ζ of eq. 12, (2M, D)
    m = tf.shape(za)[0]
    idx = tf.range(2 * m)
    positive = tf.concat([tf.range(m, 2 * m), tf.range(0, m)], axis=0)
    return tf.reduce_mean(_anchor_losses(z, z, idx, positive, temperature, log_epsilon))


def nt_xent_replica_share(za, zb, temperature: float = 0.1, log_epsilon: float = 0.0):
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
    if _single_replica("nt_xent_replica_share"):
        return nt_xent(za, zb, temperature, log_epsilon)
    za, zb = tf.convert_to_tensor(za), tf.convert_to_tensor(zb)
    _check(za, zb, temperature)
    anchors, candidates, local, big_m = _replica_view(za, zb)
    self_index = tf.concat([local, local + big_m], axis=0)
    positive = tf.concat([local + big_m, local], axis=0)
    losses = _anchor_losses(anchors, candidates, self_index, positive, temperature, log_epsilon)
    return tf.reduce_sum(losses) / tf.cast(2 * big_m, losses.dtype)


def _single_replica(name: str) -> bool:
    """Whether a replica share is the plain loss (one replica); outside a replica context an error."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise RuntimeError(f"{name} must be called in a replica context (inside strategy.run / train_step)")
    return ctx.num_replicas_in_sync == 1


def _replica_view(za, zb):
    """This replica's rows in the global batch: unit anchors [za; zb] (2m, D), the unit global candidates
    (2M, D) in :func:`global_rows` order, the global indices of the local ψ_a rows (m,), and M.
    Replicas may hold uneven row counts (a last partial batch) except inside XLA (``gather_rows``)."""
    dtype = loss_dtype(za)
    # one gather of both batches: rows of ψ_a, then of ψ_b, side by side
    gathered, offset, big_m = gather_rows(tf.concat([tf.cast(za, dtype), tf.cast(zb, dtype)], axis=1))
    ga, gb = tf.split(gathered, 2, axis=1)
    candidates = _normalise(tf.concat([ga, gb], axis=0))
    anchors = _normalise(tf.concat([za, zb], axis=0))
    return anchors, candidates, tf.range(tf.shape(za)[0]) + offset, big_m


def global_rows(xa, xb):
    """``[xa of every replica; xb of every replica]`` (the global batch's row order of the replica
    shares) for two (m, V) tensors of one dtype; ``concat([xa, xb])`` on one device. Gradients flow back
    to each replica's rows."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tf.concat([xa, xb], axis=0)
    gathered, _, _ = gather_rows(tf.concat([xa, xb], axis=1))
    return tf.concat(tf.split(gathered, 2, axis=1), axis=0)


# ------------------------------------------------------------------------------------ weighted NT-Xent
def _weighted_anchor_losses(anchors, candidates, self_index, weight_rows, temperature):
    """Per-anchor soft-label cross-entropy (0 for a row without positive weight) and the positive-row mask."""
    logits = _masked_logits(anchors, candidates, self_index, temperature)
    is_self = tf.one_hot(self_index, tf.shape(candidates)[0], on_value=True, off_value=False, dtype=tf.bool)
    weights = tf.cast(weight_rows, logits.dtype)
    weights = tf.where(is_self, tf.zeros_like(weights), weights)
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    has_positive = total[:, 0] > 0
    labels = tf.math.divide_no_nan(weights, total)
    return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits), has_positive


def _check_weights(weights, n):
    if weights.shape.rank != 2:
        raise ValueError(f"weighted_nt_xent: weights must be a (2M, 2M) matrix, got shape {weights.shape}")
    for dim in weights.shape:
        if dim is not None and n is not None and dim != n:
            raise ValueError(f"weighted_nt_xent: weights must be ({n}, {n}) for {n} rows, got {weights.shape}")


def _mean_over_positive_rows(losses, has_positive, count):
    """Σ losses of the rows with a positive weight / ``count`` (their number, ≥ 1 asserted)."""
    check = tf.debugging.assert_greater(
        count, tf.zeros_like(count),
        message="weighted_nt_xent: no anchor of the batch has a positive weight (every weight row is zero)")
    with tf.control_dependencies([check]):
        total = tf.reduce_sum(tf.where(has_positive, losses, tf.zeros_like(losses)))
    return total / tf.maximum(count, tf.ones_like(count))


def weighted_nt_xent(za, zb, weights, temperature: float = 0.1):
    """Weighted NT-Xent over the 2M rows [za; zb] (module docstring): ``weights`` is the (2M, 2M)
    non-negative matrix over those rows (its diagonal is ignored). Mean over the anchors with a positive
    weight; a batch without any raises (``tf.errors.InvalidArgumentError``)."""
    za, zb = tf.convert_to_tensor(za), tf.convert_to_tensor(zb)
    _check(za, zb, temperature)
    weights = tf.convert_to_tensor(weights)
    n = za.shape[0] + zb.shape[0] if za.shape[0] is not None and zb.shape[0] is not None else None
    _check_weights(weights, n)
    z = _normalise(tf.concat([za, zb], axis=0))
    losses, has_positive = _weighted_anchor_losses(z, z, tf.range(tf.shape(z)[0]), weights, temperature)
    return _mean_over_positive_rows(losses, has_positive, tf.reduce_sum(tf.cast(has_positive, losses.dtype)))


def weighted_nt_xent_replica_share(za, zb, weights, temperature: float = 0.1):
    """This replica's share of the global-batch ``weighted_nt_xent`` (as ``nt_xent_replica_share`` is of
    ``nt_xent``). ``za``/``zb`` are this replica's (m, D) rows; ``weights`` is the GLOBAL (2M, 2M) matrix
    over the rows ``[ψ_a of every replica in order; ψ_b of every replica in order]`` — the order of
    :func:`global_rows`, with which each replica builds it from the global batch. The share is
    ``Σ_{local anchors with a positive weight} ℓ_i / (global number of such anchors)``, so the shares sum
    to the one-device loss of the global batch and the summed gradients to its gradient.
    """
    if _single_replica("weighted_nt_xent_replica_share"):
        return weighted_nt_xent(za, zb, weights, temperature)
    za, zb = tf.convert_to_tensor(za), tf.convert_to_tensor(zb)
    _check(za, zb, temperature)
    weights = tf.convert_to_tensor(weights)
    _check_weights(weights, None)
    anchors, candidates, local, big_m = _replica_view(za, zb)
    self_index = tf.concat([local, local + big_m], axis=0)
    losses, has_positive = _weighted_anchor_losses(anchors, candidates, self_index,
                                                   tf.gather(weights, self_index), temperature)
    ctx = tf.distribute.get_replica_context()
    count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(tf.cast(has_positive, losses.dtype)))
    return _mean_over_positive_rows(losses, has_positive, tf.stop_gradient(count))


def semantic_weights(sets):
    """The study's genre weights from (N, V) multi-hot genre sets: W_ij = |G_i ∩ G_j| / (|G_i| + |G_j|)
    for i ≠ j, 0 on the diagonal (and 0 between two empty sets)."""
    sets = tf.convert_to_tensor(sets)
    shared = tf.matmul(sets, sets, transpose_b=True)
    size = tf.reduce_sum(sets, axis=1)
    weights = tf.math.divide_no_nan(shared, size[:, None] + size[None, :])
    return tf.linalg.set_diag(weights, tf.zeros_like(size))
