"""The jraph interaction graph and LightGCN propagation against dense linear algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax.graph import (
    build_interaction_graph,
    edge_keep_mask,
    edge_permutation,
    lightgcn_propagate,
    make_block_plan,
    spmm,
)


def _dense_adjacency(n_users, n_items, users, items):
    n = n_users + n_items
    a = np.zeros((n, n))
    a[users, n_users + items] = 1
    a[n_users + items, users] = 1
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    return inv[:, None] * a * inv[None, :]


def test_graph_weights_and_layout():
    users = np.array([0, 0, 1, 2, 0])  # duplicate (0, 1) is merged; user 3 is isolated
    items = np.array([1, 2, 2, 0, 1])
    g = build_interaction_graph(4, 3, users, items)
    assert int(g.n_node[0]) == 7 and int(g.n_edge[0]) == 8  # 2 x 4 unique interactions
    dense = np.zeros((7, 7))
    dense[g.receivers, g.senders] = g.edges
    np.testing.assert_allclose(dense, _dense_adjacency(4, 3, users, items), rtol=1e-6)
    assert np.all(np.diff(g.receivers) >= 0)  # sorted by receiver
    np.testing.assert_array_equal(dense[3], 0)  # isolated user: zero row


def test_spmm_and_propagation_match_dense(toy_data):
    d = toy_data
    g = build_interaction_graph(d.n_users, d.n_items, d.train.users, d.train.items)
    a = _dense_adjacency(d.n_users, d.n_items, d.train.users, d.train.items)
    x = np.random.default_rng(0).normal(size=(a.shape[0], 4)).astype(np.float32)
    np.testing.assert_allclose(spmm(g, jnp.asarray(x)), a @ x, rtol=1e-5, atol=1e-6)
    expect = x + a @ x + a @ a @ x
    np.testing.assert_allclose(
        lightgcn_propagate(g, jnp.asarray(x), 2), expect, rtol=1e-5, atol=1e-6
    )


def test_edge_dropout_rule_and_asymmetry():
    u = jnp.array([0.0, 0.19, 0.2, 0.5, 0.999], jnp.float32)
    np.testing.assert_array_equal(edge_keep_mask(u, 0.8), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(edge_keep_mask(u, 1.0), [1, 1, 1, 1, 1])
    g = build_interaction_graph(2, 2, np.array([0, 1]), np.array([0, 1]))
    uniforms = jnp.array([0.5, 0.0, 0.5, 0.5])  # drop only the second directed edge
    w = g.edges * edge_keep_mask(uniforms, 0.8)
    dense = np.zeros((4, 4))
    dense[g.receivers, g.senders] = w
    assert not np.allclose(dense, dense.T)  # each direction dropped independently
    kept = np.asarray(g.edges)[np.asarray(w) > 0]
    np.testing.assert_array_equal(kept, np.asarray(w)[np.asarray(w) > 0])  # no rescaling


def test_edge_permutation_aligns_foreign_order():
    g = build_interaction_graph(3, 2, np.array([0, 1, 2]), np.array([0, 1, 1]))
    rng = np.random.default_rng(1)
    shuffle = rng.permutation(int(g.n_edge[0]))
    rows, cols = np.asarray(g.receivers)[shuffle], np.asarray(g.senders)[shuffle]
    p = edge_permutation(g, rows, cols)
    np.testing.assert_array_equal(p, shuffle)


def test_spmm_gradient_is_transpose_product(toy_data):
    d = toy_data
    g = build_interaction_graph(d.n_users, d.n_items, d.train.users, d.train.items)
    n = int(g.n_node[0])
    w = g.edges * edge_keep_mask(jax.random.uniform(jax.random.key(0), g.edges.shape), 0.8)
    dense = np.zeros((n, n), np.float32)
    dense[g.receivers, g.senders] = w
    x = jax.random.normal(jax.random.key(1), (n, 3))
    ct = jax.random.normal(jax.random.key(2), (n, 3))
    _, vjp = jax.vjp(lambda y: spmm(g, y, w), x)
    np.testing.assert_allclose(vjp(ct)[0], dense.T @ np.asarray(ct), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("native", [False, True])
def test_planned_spmm_value_and_gradients_match_plain(toy_data, native):
    from darec_jax.kernels import native_spmm_available

    assert native_spmm_available()  # the test machines have a C++ compiler
    d = toy_data
    g = build_interaction_graph(d.n_users, d.n_items, d.train.users, d.train.items)
    plan = make_block_plan(g, block_edges=25, native=native)
    assert len(plan.edge_bounds) > 5 and plan.edge_bounds[-1] == int(g.n_edge[0])
    n = int(g.n_node[0])
    w = g.edges * edge_keep_mask(jax.random.uniform(jax.random.key(0), g.edges.shape), 0.8)
    x = jax.random.normal(jax.random.key(1), (n, 3))
    ct = jax.random.normal(jax.random.key(2), (n, 3))
    np.testing.assert_allclose(spmm(g, x, w, plan), spmm(g, x, w), rtol=1e-6, atol=1e-7)
    # Gradients with respect to the features and the (asymmetric) edge weights.
    f_plain = lambda x, w: jnp.sum(ct * spmm(g, x, w))
    f_block = lambda x, w: jnp.sum(ct * spmm(g, x, w, plan))
    for a, b in zip(jax.grad(f_block, (0, 1))(x, w), jax.grad(f_plain, (0, 1))(x, w), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
