"""NT-Xent (eq. 9–12) and the weighted NT-Xent of the ICASSP 2025 study against independent float64
implementations written from the equations."""
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from cmir_tf.model.losses import (nt_xent, nt_xent_replica_share, semantic_weights, weighted_nt_xent,
                                  weighted_nt_xent_replica_share)

REPO = Path(__file__).resolve().parents[1]


def paper_loss(psi_a, psi_b, tau):
    """Eq. 9 literally, in float64: L_{a,b} = Σ_i -log Ξ(ψa_i, ψb_i) / Σ_{k≠i} Ξ(ψa_i, ζ_k)."""
    psi_a = np.asarray(psi_a, np.float64)
    psi_b = np.asarray(psi_b, np.float64)
    m = len(psi_a)

    def sim(x, y):  # eq. 11
        return float(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y))

    def xi(x, y):  # eq. 10
        return math.exp(sim(x, y) / tau)

    zeta = [psi_a[k] if k < m else psi_b[k - m] for k in range(2 * m)]  # eq. 12
    total = 0.0
    for i in range(m):
        denom = sum(xi(psi_a[i], zeta[k]) for k in range(2 * m) if k != i)
        total += -math.log(xi(psi_a[i], psi_b[i]) / denom)
    return total


def symmetric_mean(psi_a, psi_b, tau):
    """(L_{a,b} + L_{b,a}) / 2M: the normalisation nt_xent documents."""
    return (paper_loss(psi_a, psi_b, tau) + paper_loss(psi_b, psi_a, tau)) / (2 * len(psi_a))


def test_hand_checked_tiny_case():
    # a1 = b1 = e1, a2 = b2 = e2, tau = 1: each anchor has its positive at cosine 1 and two
    # negatives at cosine 0 -> loss = -log(e / (e + 2)) = log(1 + 2/e) for all four anchors.
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert float(nt_xent(a, a.copy(), 1.0)) == pytest.approx(math.log(1 + 2 / math.e), rel=1e-6)
    # M = 1: the only candidate is the positive -> loss 0 whatever the vectors
    assert float(nt_xent([[1.0, 2.0]], [[-3.0, 0.5]], 0.1)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("m", [2, 5, 16])
@pytest.mark.parametrize("tau", [1.0, 0.1, 0.01])
def test_matches_independent_float64_implementation(m, tau):
    rng = np.random.default_rng(100 * m + int(1 / tau))
    a = rng.normal(size=(m, 8)).astype(np.float32)
    b = (0.5 * a + rng.normal(size=(m, 8))).astype(np.float32)  # partly aligned, like real pairs
    expected = symmetric_mean(a, b, tau)
    got = float(nt_xent(a, b, tau))
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # swapping the batches gives the same symmetric loss
    assert float(nt_xent(b, a, tau)) == pytest.approx(got, rel=1e-6)


def test_scale_invariant_and_no_nan_at_low_temperature_with_identical_vectors():
    v = np.tile(np.array([[0.3, -1.2, 2.0]], np.float32), (4, 1))
    za = tf.Variable(v)
    zb = tf.Variable(v * 7.0)
    with tf.GradientTape() as tape:
        loss = nt_xent(za, zb, 0.01)
    grads = tape.gradient(loss, [za, zb])
    # all 8 items identical: every candidate ties, loss = log(2M - 1) = log 7
    assert float(loss) == pytest.approx(math.log(7), rel=1e-6)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    # far-apart positives at tau = 0.01: logits of ±100 stay finite
    w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    got = float(nt_xent(w, -w, 0.01))
    assert math.isfinite(got) and got == pytest.approx(symmetric_mean(w, -w, 0.01), rel=1e-6)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 4))
    b = rng.normal(size=(3, 4))
    za = tf.Variable(a.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = nt_xent(za, b.astype(np.float32), 0.5)
    g = tape.gradient(loss, za).numpy()
    num = numeric_gradient(lambda x: symmetric_mean(x, b, 0.5), a, 1e-5)
    np.testing.assert_allclose(g, num, rtol=1e-3, atol=1e-5)


def numeric_gradient(f, a, eps):
    """Central differences of the scalar f at a, element by element."""
    num = np.zeros_like(a)
    for idx in np.ndindex(*a.shape):
        ap, am = a.copy(), a.copy()
        ap[idx] += eps
        am[idx] -= eps
        num[idx] = (f(ap) - f(am)) / (2 * eps)
    return num


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), 0.0)
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        nt_xent(np.ones(3, np.float32), np.ones(3, np.float32), 0.1)


def test_replica_share_outside_a_strategy_is_the_plain_loss():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(2, 4, 5)).astype(np.float32)
    assert float(nt_xent_replica_share(a, b, 0.1)) == pytest.approx(float(nt_xent(a, b, 0.1)), rel=1e-7)


_REPLICA_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from cmir_tf.model.losses import nt_xent, nt_xent_replica_share

    rng = np.random.default_rng(0)
    M, D, tau = 6, 5, 0.1
    a, b = rng.normal(size=(2, M, D)).astype(np.float32)
    w = rng.normal(size=(D, D)).astype(np.float32)  # a shared "encoder" weight

    def one_device():
        wv = tf.Variable(w)
        with tf.GradientTape() as tape:
            loss = nt_xent(tf.matmul(a, wv), tf.matmul(b, wv), tau)
        return float(loss), tape.gradient(loss, wv).numpy()

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        wv = tf.Variable(w)

    def step(xa, xb):
        with tf.GradientTape() as tape:
            share = nt_xent_replica_share(tf.matmul(xa, wv), tf.matmul(xb, wv), tau)
        grad = tape.gradient(share, wv)
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce("sum", share), ctx.all_reduce("sum", grad)

    # replica 0 gets rows 0..3, replica 1 rows 4..5 (uneven split, like a last partial batch)
    parts = [(a[:4], b[:4]), (a[4:], b[4:])]
    xa = strategy.experimental_distribute_values_from_function(lambda ctx: parts[ctx.replica_id_in_sync_group][0])
    xb = strategy.experimental_distribute_values_from_function(lambda ctx: parts[ctx.replica_id_in_sync_group][1])
    loss, grad = strategy.run(tf.function(step), args=(xa, xb))
    loss = [float(v) for v in strategy.experimental_local_results(loss)]
    grad = [g.numpy() for g in strategy.experimental_local_results(grad)]
    ref_loss, ref_grad = one_device()
    print(json.dumps({"loss": loss, "ref_loss": ref_loss,
                      "grad_err": [float(np.abs(g - ref_grad).max()) for g in grad],
                      "grad_scale": float(np.abs(ref_grad).max())}))
    """
)


@pytest.mark.slow
def test_replica_shares_sum_to_the_one_device_loss_and_gradient():
    """Two logical CPU replicas, uneven rows: shares sum to the global loss; summed grads match."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run(
        [sys.executable, "-c", _REPLICA_SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    res = json.loads(out.stdout.strip().splitlines()[-1])
    for value in res["loss"]:
        assert value == pytest.approx(res["ref_loss"], rel=1e-6)
    for err in res["grad_err"]:
        assert err <= 1e-6 * max(1.0, res["grad_scale"])


# ------------------------------------------------------------------------------------ weighted NT-Xent
def weighted_reference(za, zb, w, tau):
    """The weighted NT-Xent literally, float64 loops: ℓ_i = −Σ_j (W_ij/Σ_k W_ik) s_ij + log Σ_{k≠i} e^{s_ik},
    mean over the anchors whose weight row (diagonal excluded) is not all zero."""
    z = np.concatenate([np.asarray(za, np.float64), np.asarray(zb, np.float64)])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    terms = []
    for i in range(n):
        row = [0.0 if j == i else float(w[i][j]) for j in range(n)]
        if sum(row) == 0:
            continue
        s = [float(z[i] @ z[j]) / tau for j in range(n)]
        top = max(s[k] for k in range(n) if k != i)
        log_denominator = top + math.log(sum(math.exp(s[k] - top) for k in range(n) if k != i))
        terms.append(-sum(row[j] / sum(row) * s[j] for j in range(n)) + log_denominator)
    return sum(terms) / len(terms)


def pair_permutation(m):
    w = np.zeros((2 * m, 2 * m))
    w[np.arange(m), np.arange(m) + m] = 1.0
    w[np.arange(m) + m, np.arange(m)] = 1.0
    return w


@pytest.mark.parametrize("tau", [1.0, 0.1, 0.01])
def test_weighted_matches_independent_float64_implementation(tau):
    rng = np.random.default_rng(int(10 / tau))
    m = 6
    a = rng.normal(size=(m, 8)).astype(np.float32)
    b = (0.5 * a + rng.normal(size=(m, 8))).astype(np.float32)
    w = rng.random((2 * m, 2 * m)) * (rng.random((2 * m, 2 * m)) < 0.4)  # sparse, some rows all zero
    w[3] = 0.0
    w[5] = 0.0
    w[5, 5] = 4.0  # a diagonal weight alone does not make a positive row
    got = float(weighted_nt_xent(a, b, w, tau))
    assert math.isfinite(got)
    assert got == pytest.approx(weighted_reference(a, b, w, tau), rel=1e-5)


def test_weighted_with_the_pair_permutation_is_nt_xent():
    rng = np.random.default_rng(11)
    for m in (1, 4, 9):
        a, b = rng.normal(size=(2, m, 6)).astype(np.float32)
        expected = float(nt_xent(a, b, 0.1))
        assert float(weighted_nt_xent(a, b, pair_permutation(m), 0.1)) == pytest.approx(expected, rel=1e-6)
        # any positive scale of a row's weights is the same loss (rows are normalised)
        assert float(weighted_nt_xent(a, b, 3.5 * pair_permutation(m), 0.1)) == pytest.approx(expected, rel=1e-6)


def test_weighted_gradient_matches_finite_differences():
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(2, 3, 4))
    w = rng.random((6, 6))
    w[2] = 0.0
    za = tf.Variable(a)
    with tf.GradientTape() as tape:
        loss = weighted_nt_xent(za, b, w, 0.5)
    g = tape.gradient(loss, za).numpy()
    num = numeric_gradient(lambda x: weighted_reference(x, b, w, 0.5), a, 1e-6)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


def test_weighted_is_finite_at_low_temperature_and_a_batch_without_positives_is_an_error():
    # identical vectors and far-apart positives at τ = 0.01 (logits ±100): finite loss and gradient in float32
    v = np.tile(np.array([[0.3, -1.2, 2.0]], np.float32), (3, 1))
    w = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    weights = np.random.default_rng(13).random((6, 6)).astype(np.float32)
    for za, zb in ((v, 7.0 * v), (w, -w)):
        var = tf.Variable(za)
        with tf.GradientTape() as tape:
            loss = weighted_nt_xent(var, zb, weights, 0.01)
        assert math.isfinite(float(loss)) and np.all(np.isfinite(tape.gradient(loss, var).numpy()))
        assert float(loss) == pytest.approx(weighted_reference(za, zb, weights, 0.01), rel=1e-5)
    only_diagonal = np.eye(6, dtype=np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no anchor of the batch has a positive weight"):
        weighted_nt_xent(w, -w, only_diagonal, 0.1)
    with pytest.raises(ValueError, match=r"\(6, 6\)"):
        weighted_nt_xent(w, -w, np.ones((4, 4), np.float32), 0.1)
    # outside a strategy the replica share is the plain weighted loss
    assert float(weighted_nt_xent_replica_share(w, -w, weights, 0.1)) == pytest.approx(
        float(weighted_nt_xent(w, -w, weights, 0.1)), rel=1e-7)


def test_semantic_weights_on_a_hand_worked_batch():
    # genres of four songs: {0, 1}, {1, 2, 3}, {4}, {0, 1}
    sets = np.zeros((4, 5), np.float32)
    for row, genres in enumerate(([0, 1], [1, 2, 3], [4], [0, 1])):
        sets[row, genres] = 1.0
    expected = np.array([
        [0, 1 / 5, 0, 2 / 4],   # |{1}| / (2 + 3), nothing shared with {4}, |{0,1}| / (2 + 2)
        [1 / 5, 0, 0, 1 / 5],
        [0, 0, 0, 0],
        [2 / 4, 1 / 5, 0, 0],
    ])
    np.testing.assert_allclose(semantic_weights(sets).numpy(), expected, rtol=1e-6)
