"""The interaction graph, its product implementations and LightGCN propagation against dense
linear algebra."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax.graph import (
    SPMM_IMPLS,
    Graph,
    build_graph,
    edge_keep_mask,
    edge_permutation,
    lightgcn_propagate,
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
    g = build_graph(4, 3, users, items)
    assert g.n_nodes == 7 and g.n_edges == 8  # 2 x 4 unique interactions
    assert g.impl == "segment_sum" and g.mirror is None and g.indptr is None
    dense = np.zeros((7, 7))
    dense[g.receivers, g.senders] = g.weights
    np.testing.assert_allclose(dense, _dense_adjacency(4, 3, users, items), rtol=1e-6)
    assert np.all(np.diff(g.receivers) >= 0)  # sorted by receiver
    np.testing.assert_array_equal(dense[3], 0)  # isolated user: zero row


@pytest.mark.parametrize("impl", SPMM_IMPLS)
def test_spmm_and_propagation_match_dense(toy_data, impl):
    d = toy_data
    g = build_graph(d.n_users, d.n_items, d.train.users, d.train.items, impl, block_edges=25)
    a = _dense_adjacency(d.n_users, d.n_items, d.train.users, d.train.items)
    x = np.random.default_rng(0).normal(size=(a.shape[0], 4)).astype(np.float32)
    np.testing.assert_allclose(g.spmm(jnp.asarray(x)), a @ x, rtol=1e-5, atol=1e-6)
    expect = x + a @ x + a @ a @ x
    np.testing.assert_allclose(
        lightgcn_propagate(g, jnp.asarray(x), 2), expect, rtol=1e-5, atol=1e-6
    )


def test_edge_dropout_rule_and_asymmetry():
    u = jnp.array([0.0, 0.19, 0.2, 0.5, 0.999], jnp.float32)
    np.testing.assert_array_equal(edge_keep_mask(u, 0.8), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(edge_keep_mask(u, 1.0), [1, 1, 1, 1, 1])
    g = build_graph(2, 2, np.array([0, 1]), np.array([0, 1]))
    uniforms = jnp.array([0.5, 0.0, 0.5, 0.5])  # drop only the second directed edge
    w = g.weights * edge_keep_mask(uniforms, 0.8)
    dense = np.zeros((4, 4))
    dense[g.receivers, g.senders] = w
    assert not np.allclose(dense, dense.T)  # each direction dropped independently
    kept = np.asarray(g.weights)[np.asarray(w) > 0]
    np.testing.assert_array_equal(kept, np.asarray(w)[np.asarray(w) > 0])  # no rescaling


def test_edge_permutation_aligns_foreign_order():
    g = build_graph(3, 2, np.array([0, 1, 2]), np.array([0, 1, 1]))
    rng = np.random.default_rng(1)
    shuffle = rng.permutation(g.n_edges)
    rows, cols = np.asarray(g.receivers)[shuffle], np.asarray(g.senders)[shuffle]
    p = edge_permutation(g, rows, cols)
    np.testing.assert_array_equal(p, shuffle)


def test_spmm_gradient_is_transpose_product(toy_data):
    d = toy_data
    g = build_graph(d.n_users, d.n_items, d.train.users, d.train.items)
    n = g.n_nodes
    w = g.weights * edge_keep_mask(jax.random.uniform(jax.random.key(0), g.weights.shape), 0.8)
    dense = np.zeros((n, n), np.float32)
    dense[g.receivers, g.senders] = w
    x = jax.random.normal(jax.random.key(1), (n, 3))
    ct = jax.random.normal(jax.random.key(2), (n, 3))
    _, vjp = jax.vjp(lambda y: g.spmm(y, w), x)
    np.testing.assert_allclose(vjp(ct)[0], dense.T @ np.asarray(ct), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", ["transposed", "blocked", "native"])
def test_planned_spmm_value_and_gradients_match_plain(toy_data, impl):
    """The implementations with the transposed-graph backward against segment_sum (autodiff)."""
    from darec_jax.kernels import native_spmm_available

    assert native_spmm_available()  # the test machines have a C++ compiler
    d = toy_data
    pairs = (d.n_users, d.n_items, d.train.users, d.train.items)
    plain = build_graph(*pairs)
    g = build_graph(*pairs, impl=impl, block_edges=25)
    assert g.impl == impl
    if impl == "blocked":
        assert len(g.edge_bounds) > 5 and g.edge_bounds[-1] == g.n_edges
    n = g.n_nodes
    # Same edges and Â whatever the implementation; the mirror reverses every edge.
    for field in ("senders", "receivers", "weights"):
        np.testing.assert_array_equal(getattr(g, field), getattr(plain, field))
    np.testing.assert_array_equal(np.asarray(g.senders)[g.mirror], g.receivers)
    np.testing.assert_array_equal(np.asarray(g.receivers)[g.mirror], g.senders)
    w = g.weights * edge_keep_mask(jax.random.uniform(jax.random.key(0), g.weights.shape), 0.8)
    x = jax.random.normal(jax.random.key(1), (n, 3))
    ct = jax.random.normal(jax.random.key(2), (n, 3))
    np.testing.assert_allclose(g.spmm(x, w), plain.spmm(x, w), rtol=1e-6, atol=1e-7)
    # Gradients with respect to the features and the (asymmetric) edge weights.
    f_plain = lambda x, w: jnp.sum(ct * plain.spmm(x, w))
    f_impl = lambda x, w: jnp.sum(ct * g.spmm(x, w))
    grads = jax.grad(f_impl, (0, 1))(x, w), jax.grad(f_plain, (0, 1))(x, w)
    chex.assert_trees_all_close(*grads, rtol=1e-5, atol=1e-6)


def test_graph_is_a_pytree_with_a_static_implementation(toy_data):
    """The implementation and node counts are static: a jitted function of the graph compiles
    once per implementation, and the edge arrays are its leaves."""
    d = toy_data
    g = build_graph(d.n_users, d.n_items, d.train.users, d.train.items, "blocked", 25)
    leaves = jax.tree.leaves(g)
    assert len(leaves) == 5  # senders, receivers, weights, mirror, indptr
    rebuilt = jax.tree.unflatten(jax.tree.structure(g), leaves)
    assert isinstance(rebuilt, Graph) and rebuilt.impl == "blocked"
    assert rebuilt.edge_bounds == g.edge_bounds and rebuilt.n_users == d.n_users
    x = jnp.ones((g.n_nodes, 2))
    traces = []

    @jax.jit
    def product(graph, x):
        traces.append(graph.impl)
        return graph.spmm(x)

    product(g, x)
    product(g.replace(weights=2 * g.weights), x)  # new leaf values: no retrace
    assert traces == ["blocked"]


def test_build_graph_rejects_an_unknown_implementation():
    with pytest.raises(ValueError, match="unknown graph product"):
        build_graph(2, 2, np.array([0, 1]), np.array([0, 1]), impl="dense")
