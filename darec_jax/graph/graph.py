"""The interaction graph as one pytree: its edges, Â, and how its products run (docs/backbones.md
§1.2).

A :class:`Graph` holds the directed edges of the user–item graph (users ``0..U-1``, items
``U..U+I-1``; every training pair gives u -> U+i and U+i -> u), the symmetric normalised weights
Â, and the execution data of the weighted product ``W X``. The implementation is chosen once, by
:func:`build_graph`, and is a static field: every product over the graph (:meth:`Graph.spmm`)
runs it without being told again.

Convention: edge e carries the matrix entry W[receiver_e, sender_e], so

    (W X)_n = Σ_{e: receiver_e = n} w_e · X[sender_e]          X [N, d] -> [N, d],

and edges are sorted by (receiver, sender), so segment sums run over sorted segment ids and the
rows of W are contiguous edge ranges (CSR with row pointers ``indptr``).

Implementations (``impl``, the config's ``model.spmm_impl`` once "auto" is resolved):

* ``segment_sum``: gather the [E, d] messages w_e · X[sender_e], one sorted segment sum over the
  receivers; JAX's autodiff backward. Under a multi-device mesh each device weighs its slice of
  the edges and XLA all-reduces the partial sums.
* ``transposed``: the same single segment sum, with a hand-written backward (below). Shards like
  ``segment_sum``.
* ``blocked``: blocks of whole receivers of about ``block_edges`` edges, one segment sum per
  block, so each block's messages stay in cache (XLA's CPU backend materialises the whole
  [E, d] message buffer, which falls out of cache). One device.
* ``native``: a C++ CSR kernel called through XLA's FFI on CPU (``darec_jax.kernels``), row by
  row with no message buffer at all. One device.

The last three share one backward. For out = W X, dL/dX = Wᵀ G; the edge set is symmetric (every
edge has its reverse, ``mirror``), so Wᵀ is the same sorted-receiver product with each edge taking
its reverse edge's weight, w[mirror]: no unsorted scatter over the senders. dL/dw_e =
<G[receiver_e], X[sender_e]> (dropped by XLA when the weights are constants).

Why the product is written here rather than with jraph's message passing (``jraph.GraphNetwork``
and friends): the product is exactly the gather-and-aggregate that jraph would run, and the part
we need to control. jraph materialises the [E, d] messages before its aggregation hook
(``aggregate_edges_for_nodes_fn``) sees them, which is the buffer the ``blocked`` and ``native``
executions exist to avoid (the native kernel never forms it); its backward is autodiff's
scatter-add over the unsorted senders, where we want the mirror-permutation product above; and
its ``GraphsTuple`` carries node features as graph state, whereas our node features are the
model's embedding tables and the graph must carry its execution choice as static data. So the
graph is this small dataclass rather than a ``GraphsTuple`` used as a container. Where jraph does
fit, it is used: its segment utilities (``jraph.segment_sum``) aggregate the messages of the
segment-sum executions here and the per-receiver sums of DCCF's and AutoCF's attention.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

from darec_jax.graph.bipartite import interaction_edges
from darec_jax.parallel import DATA, constrain

SPMM_IMPLS = ("segment_sum", "transposed", "blocked", "native")


@struct.dataclass
class Graph:
    """The bipartite interaction graph and the execution of its products (a pytree).

    senders:     int32 [E] column of each edge's matrix entry (global node id).
    receivers:   int32 [E] row of each edge's matrix entry, sorted (ties by sender).
    weights:     float32 [E] Â_e = 1 / sqrt(d_receiver · d_sender) (d = degree, no self-loops).
    n_users, n_items: static node counts U, I (N = U + I).
    impl:        static; one of :data:`SPMM_IMPLS` (see the module docstring).
    mirror:      int32 [E] index of the reversed edge (receiver_e -> sender_e); None for
                 ``segment_sum``, whose backward is autodiff's.
    indptr:      int32 [N+1] CSR row pointers of the receiver-sorted edges; None for
                 ``segment_sum``.
    edge_bounds: static (P+1) block boundaries in the edge list (``blocked``; one block for
                 ``transposed``; empty otherwise).
    node_bounds: static (P+1) receiver-range boundaries matching ``edge_bounds``.
    """

    senders: jax.Array
    receivers: jax.Array
    weights: jax.Array
    n_users: int = struct.field(pytree_node=False)
    n_items: int = struct.field(pytree_node=False)
    impl: str = struct.field(pytree_node=False, default="segment_sum")
    mirror: jax.Array | None = None
    indptr: jax.Array | None = None
    edge_bounds: tuple[int, ...] = struct.field(pytree_node=False, default=())
    node_bounds: tuple[int, ...] = struct.field(pytree_node=False, default=())

    @property
    def n_nodes(self) -> int:
        """N = U + I."""
        return self.n_users + self.n_items

    @property
    def n_edges(self) -> int:
        """E = 2 · (unique training pairs)."""
        return int(self.senders.shape[0])

    def spmm(self, x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
        """out = W X with this graph's implementation:

            out_n = Σ_{e: receiver_e = n} w_e · x[sender_e]

        Args:
          x: [N, d] node features.
          weights: [E] edge weights in the graph's edge order; None = Â (``self.weights``).

        Returns:
          [N, d].
        """
        w = self.weights if weights is None else weights
        if self.impl == "segment_sum":
            # Under a multi-device mesh each device weighs its slice of the edges; XLA
            # all-reduces the partial sums of the segment sum.
            messages = constrain(w[:, None] * x[self.senders], DATA, None)
            return jraph.segment_sum(
                messages, self.receivers, num_segments=x.shape[0], indices_are_sorted=True
            )
        execution = (self.impl, self.edge_bounds, self.node_bounds)
        return _spmm_transposed_vjp(
            execution, self.mirror, self.indptr, self.senders, self.receivers, w, x
        )


def build_graph(
    n_users: int,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    impl: str = "segment_sum",
    block_edges: int = 10_000,
) -> Graph:
    """The symmetric-normalised interaction graph of the training pairs, ready to run ``impl``.

    Args:
      n_users, n_items: U and I.
      users, items: int arrays [nnz] of training interactions (duplicates are merged).
      impl: one of :data:`SPMM_IMPLS`; ``native`` builds and loads the C++ kernel and fails if
        it cannot (resolve "auto" before, e.g. with ``native_spmm_available``).
      block_edges: about how many edges one block holds (``blocked`` only).

    Returns:
      A :class:`Graph` of device arrays.
    """
    if impl not in SPMM_IMPLS:
        raise ValueError(f"unknown graph product implementation {impl!r}; valid: {SPMM_IMPLS}")
    if impl == "native":
        from darec_jax.kernels import native_spmm_available

        if not native_spmm_available():
            raise ValueError("impl='native' needs the C++ graph kernel, which failed to build")
    n_nodes = n_users + n_items
    receivers, senders, weights = interaction_edges(n_users, n_items, users, items)
    fields = {}
    if impl != "segment_sum":
        indptr = np.concatenate([[0], np.cumsum(np.bincount(receivers, minlength=n_nodes))])
        if impl == "blocked":
            node_bounds = receiver_blocks(indptr, block_edges)
        elif impl == "transposed":  # one block: a single sorted segment sum
            node_bounds = (0, n_nodes)
        else:  # native: the kernel walks the CSR rows itself
            node_bounds = ()
        fields = {
            "mirror": jnp.asarray(mirror_edges(receivers, senders, n_nodes), jnp.int32),
            "indptr": jnp.asarray(indptr, jnp.int32),
            "node_bounds": node_bounds,
            "edge_bounds": tuple(int(indptr[n]) for n in node_bounds),
        }
    return Graph(
        senders=jnp.asarray(senders, jnp.int32),
        receivers=jnp.asarray(receivers, jnp.int32),
        weights=jnp.asarray(weights, jnp.float32),
        n_users=int(n_users),
        n_items=int(n_items),
        impl=impl,
        **fields,
    )


def mirror_edges(receivers: np.ndarray, senders: np.ndarray, n_nodes: int) -> np.ndarray:
    """int64 [E]: mirror[e] = the index of the edge (receiver = sender_e, sender = receiver_e).

    Edges must be sorted by (receiver, sender) and the edge set symmetric.
    """
    keys = receivers.astype(np.int64) * n_nodes + senders  # sorted
    reverse = senders.astype(np.int64) * n_nodes + receivers
    # With a symmetric edge set the sorted reverse keys are the keys themselves: the edge at
    # sorted position k of ``reverse`` is the reverse of edge k. One argsort, no binary search
    # per edge (which is cache-bound: ~10x slower at 10^7 edges).
    order = np.argsort(reverse)
    if not np.array_equal(reverse[order], keys):
        raise ValueError("the transposed-graph backward needs every edge to have its reverse")
    mirror = np.empty_like(order)
    mirror[order] = np.arange(order.shape[0])
    return mirror


def receiver_blocks(indptr: np.ndarray, block_edges: int) -> tuple[int, ...]:
    """Node cut points 0 = n_0 < … < n_P = N of P ≈ E / block_edges blocks with about equal
    edge counts; each cut falls between two receivers (``indptr`` [N+1]: CSR row pointers)."""
    n_nodes, n_edges = indptr.shape[0] - 1, int(indptr[-1])
    n_blocks = max(1, -(-n_edges // max(1, block_edges)))
    targets = np.linspace(0, n_edges, n_blocks + 1)[1:-1]
    cuts = np.unique(np.searchsorted(indptr, targets))
    return (0, *[int(c) for c in cuts if 0 < c < n_nodes], n_nodes)


# ---------------------------------------------------------------------- product with custom VJP
# ``execution`` = (impl, edge_bounds, node_bounds): static, hashable.


def _product(execution, indptr, senders, receivers, w, x):
    """out = W x by the native kernel or by receiver blocks (one block for ``transposed``)."""
    impl, edge_bounds, node_bounds = execution
    if impl == "native":
        from darec_jax.kernels import csr_spmm

        return csr_spmm(indptr, senders, w, x)
    outs = []
    bounds = zip(edge_bounds[:-1], edge_bounds[1:], node_bounds[:-1], node_bounds[1:], strict=True)
    for e0, e1, n0, n1 in bounds:
        messages = constrain(w[e0:e1, None] * x[senders[e0:e1]], DATA, None)  # [e1-e0, d]
        outs.append(
            jraph.segment_sum(
                messages, receivers[e0:e1] - n0, num_segments=n1 - n0, indices_are_sorted=True
            )
        )
    return jnp.concatenate(outs, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _spmm_transposed_vjp(execution, mirror, indptr, senders, receivers, w, x):
    return _product(execution, indptr, senders, receivers, w, x)


def _spmm_fwd(execution, mirror, indptr, senders, receivers, w, x):
    out = _product(execution, indptr, senders, receivers, w, x)
    return out, (mirror, indptr, senders, receivers, w, x)


def _spmm_bwd(execution, residuals, ct):
    mirror, indptr, senders, receivers, w, x = residuals
    # d/dx: Wᵀ ct = the same product with each edge taking its reverse edge's weight.
    dx = _product(execution, indptr, senders, receivers, w[mirror], ct)
    # d/dw_e = <ct[receiver_e], x[sender_e]> (dropped by XLA when the weights are constants).
    dw = jnp.sum(ct[receivers] * x[senders], axis=-1)
    return None, None, None, None, dw, dx


_spmm_transposed_vjp.defvjp(_spmm_fwd, _spmm_bwd)
