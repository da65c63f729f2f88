"""Properties of the alignment loss primitives and DaRec's terms (JAX side)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax.losses.alignment import cal_infonce, node_mask, rlmrec_con_kd, ssl_con_loss
from darec_jax.losses.darec import (
    global_alignment,
    local_alignment,
    orthogonality,
    spherical_kmeans,
    uniformity,
)


def _rows(seed, m, d):
    return jax.random.normal(jax.random.key(seed), (m, d))


def test_orthogonality_zero_for_orthogonal_one_for_parallel():
    a = jnp.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    b = jnp.array([[0.0, 3.0, 0.0], [0.0, 0.0, -1.0]])
    assert float(orthogonality(a, b)) == pytest.approx(0.0, abs=1e-7)
    assert float(orthogonality(a, -5.0 * a)) == pytest.approx(1.0, rel=1e-6)


def test_uniformity_matches_double_loop():
    x = np.asarray(_rows(0, 7, 4), np.float64)
    xn = x / np.sqrt(1e-8 + (x**2).sum(1, keepdims=True))
    vals = [np.exp(-2 * ((xn[j] - xn[k]) ** 2).sum()) for j in range(7) for k in range(j + 1, 7)]
    assert float(uniformity(jnp.asarray(x, jnp.float32))) == pytest.approx(
        np.log(np.mean(vals)), rel=1e-5
    )


def test_global_alignment_zero_for_same_structure():
    x = _rows(1, 9, 5)
    q, _ = jnp.linalg.qr(_rows(2, 5, 5))  # a rotation keeps every cosine
    for kind in ("mse", "kl"):
        assert float(global_alignment(x, 3.0 * x @ q, kind)) == pytest.approx(0.0, abs=1e-6)
        assert float(global_alignment(x, _rows(3, 9, 5), kind)) > 1e-3


def test_local_alignment_masks_absent_clusters_and_is_symmetric():
    a, b = _rows(4, 12, 6), _rows(5, 12, 6)
    assign = jnp.array([0, 0, 2, 2, 2, 5, 5, 0, 2, 5, 5, 0])
    value = local_alignment(a, b, assign, 8, 0.2)
    assert np.isfinite(float(value))
    assert float(local_alignment(b, a, assign, 8, 0.2)) == pytest.approx(float(value), rel=1e-6)
    # Renumbering the clusters (and adding empty ones) changes nothing.
    assert float(local_alignment(a, b, assign + 1, 16, 0.2)) == pytest.approx(
        float(value), rel=1e-6
    )
    # Identical views with well-separated clusters: near the minimum log(#clusters) floor.
    aligned = local_alignment(a, a, assign, 8, 0.01)
    assert float(aligned) < float(value)


def test_local_alignment_is_zero_with_no_cluster_present():
    """A padded last batch with one real row whose CF and LLM clusters differ (``matched``), or
    no real row at all (``joint``): no cluster is present in both views, so the term is 0 with a
    zero, finite gradient (it was 0/0 = NaN, which stopped training)."""
    a, b = _rows(7, 6, 4), _rows(8, 6, 4)
    mask = jnp.array([1.0, 0, 0, 0, 0, 0])  # one real row, five padded ones
    assign_cf = jnp.array([2, 0, 0, 0, 0, 0])
    assign_llm = jnp.array([5, 0, 0, 0, 0, 0])  # the real row's LLM cluster differs

    def matched(a, b):
        return local_alignment(a, b, assign_cf, 8, 0.2, mask, assign_llm)

    def joint_empty(a, b):
        return local_alignment(a, b, assign_cf, 8, 0.2, jnp.zeros(6))

    for fn in (matched, joint_empty):
        value, grads = jax.value_and_grad(fn, argnums=(0, 1))(a, b)
        assert float(value) == 0.0
        for g in grads:
            assert np.all(np.asarray(g) == 0.0)
    # The same real row with both views in one cluster: one present cluster, whose softmax over
    # a single centre is 1, so the loss is 0 there too, now by value rather than by the guard.
    same = local_alignment(a, b, assign_cf, 8, 0.2, mask, assign_cf)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    # Two real rows in two shared clusters: strictly positive again.
    mask2 = jnp.array([1.0, 1.0, 0, 0, 0, 0])
    two = local_alignment(a, b, jnp.array([2, 3, 0, 0, 0, 0]), 8, 0.2, mask2)
    assert float(two) > 0.0


def test_spherical_kmeans_recovers_blobs():
    centres = jnp.eye(4)[:3] * 10.0
    noise = 0.3 * _rows(6, 90, 4)
    labels = jnp.repeat(jnp.arange(3), 30)
    x = centres[labels] + noise
    assign, _ = jax.jit(spherical_kmeans, static_argnums=(2, 3))(jax.random.key(0), x, 3, 10)
    table = np.zeros((3, 3), int)
    np.add.at(table, (np.asarray(labels), np.asarray(assign)), 1)
    assert sorted(table.max(axis=1).tolist()) == [30, 30, 30]  # a bijection between labels


def test_infonce_forms():
    x, y = _rows(7, 5, 3), _rows(8, 5, 3)
    naive = cal_infonce(x, y, y, 0.5)
    xn = x / jnp.sqrt(1e-8 + jnp.sum(x * x, 1, keepdims=True))
    yn = y / jnp.sqrt(1e-8 + jnp.sum(y * y, 1, keepdims=True))
    stable = jnp.sum(-jnp.sum(xn * yn, 1) / 0.5 + jax.nn.logsumexp(xn @ yn.T / 0.5, axis=1))
    assert float(naive) == pytest.approx(float(stable), rel=1e-5)
    # Perfectly aligned, well-separated pairs give a smaller mean-reduced loss.
    assert float(ssl_con_loss(x, x, 0.1)) < float(ssl_con_loss(x, y, 0.1))


def test_kd_zero_weight_and_node_mask():
    fu, fi, pu, pi = _rows(9, 6, 4), _rows(10, 5, 4), _rows(11, 6, 4), _rows(12, 5, 4)
    ids = jnp.array([0, 3, 5]), jnp.array([1, 1, 4]), jnp.array([2, 0, 3])
    assert float(rlmrec_con_kd(fu, fi, pu, pi, *ids, 0.0, 0.2)) == 0.0
    assert float(rlmrec_con_kd(fu, fi, pu, pi, *ids, 1.0, 0.2)) > float(
        rlmrec_con_kd(fu, fi, pu, pi, *ids, 1.0, 0.2, with_negative_term=False)
    )
    ego, token = _rows(13, 6, 3), jnp.full((1, 3), 7.0)
    out = node_mask(ego, jnp.array([1, 4]), token)
    np.testing.assert_array_equal(out[jnp.array([1, 4])], 7.0)
    np.testing.assert_array_equal(out[jnp.array([0, 2, 3, 5])], ego[jnp.array([0, 2, 3, 5])])
    grad = jax.grad(lambda e: jnp.sum(node_mask(e, jnp.array([1, 4]), token) ** 2))(ego)
    np.testing.assert_array_equal(grad[jnp.array([1, 4])], 0.0)


@pytest.mark.parametrize("kind", ["mse", "kl"])
def test_global_alignment_gradient_is_finite_with_padding_rows(kind):
    """A padded last batch masks rows out: the masked pairs leave the value and the gradient of
    the real rows as they are, and send no NaN back (kl once did, through the −inf logits of the
    padding columns; the run then stopped as non-finite at its first padded batch)."""
    a, b = _rows(0, 6, 4), _rows(1, 6, 4)
    mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)

    def loss(x, y):
        return global_alignment(x, y, kind, 0.5, mask)

    value, (ga, gb) = jax.value_and_grad(loss, argnums=(0, 1))(a, b)
    ga_real, gb_real = jax.grad(lambda x, y: global_alignment(x, y, kind, 0.5), argnums=(0, 1))(
        a[:4], b[:4]
    )
    assert np.isfinite(np.asarray(ga)).all() and np.isfinite(np.asarray(gb)).all()
    np.testing.assert_allclose(value, global_alignment(a[:4], b[:4], kind, 0.5), rtol=1e-6)
    np.testing.assert_allclose(ga[:4], ga_real, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gb[:4], gb_real, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(ga[4:], 0.0)
