"""Message passing over the interaction graph (BACKBONES.md §1.3, §2.2).

All functions are pure and jit-friendly; the graph's arrays are ordinary jit arguments.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import struct

from darec_jax.parallel import DATA, constrain


@struct.dataclass
class BlockPlan:
    """How to run :func:`spmm` faster on CPUs, with a transposed-graph backward pass.

    XLA's CPU backend runs a whole-graph segment sum by materialising [E, d] messages that fall
    out of cache. Two faster executions of the same product:

    * ``native``: a C++ CSR kernel called through XLA's FFI (``darec_jax.kernels``), no message
      buffer at all;
    * otherwise, blocks of whole receivers (``edge_bounds`` / ``node_bounds``), one segment sum
      per block, so each block's messages stay in cache.

    Either way the backward pass of ``W X`` is ``Wᵀ G``; the edge set is symmetric (every edge has
    its reverse), so that is the same product with weights ``w[mirror]``: no scatter over senders.

    mirror:      int32 [E], mirror[e] = index of the reversed edge (receiver_e -> sender_e).
    indptr:      int32 [N+1] CSR row pointers of the receiver-sorted edges.
    edge_bounds: static (P+1) block boundaries in the edge list.
    node_bounds: static (P+1) receiver-range boundaries matching ``edge_bounds``.
    native:      static; use the native kernel.
    """

    mirror: jax.Array
    indptr: jax.Array
    edge_bounds: tuple[int, ...] = struct.field(pytree_node=False)
    node_bounds: tuple[int, ...] = struct.field(pytree_node=False)
    native: bool = struct.field(pytree_node=False, default=False)


def make_block_plan(graph: jraph.GraphsTuple, block_edges: int, native: bool = False) -> BlockPlan:
    """Blocks of about ``block_edges`` edges, cut between receivers; requires symmetric edges.

    ``native=True`` selects the C++ kernel, which must have been loaded
    (``darec_jax.kernels.native_spmm_available()``).
    """
    senders = np.asarray(graph.senders, np.int64)
    receivers = np.asarray(graph.receivers, np.int64)
    n_nodes = int(graph.n_node[0])
    keys = receivers * n_nodes + senders  # sorted: edges are ordered by (receiver, sender)
    reverse = senders * n_nodes + receivers
    mirror = np.searchsorted(keys, reverse)
    if mirror.size and (mirror.max() >= keys.size or np.any(keys[mirror] != reverse)):
        raise ValueError("make_block_plan needs a graph whose every edge has its reverse")
    n_edges = receivers.shape[0]
    n_blocks = max(1, -(-n_edges // max(1, block_edges)))
    # Node cut points with about equal edge counts; each cut falls between two receivers.
    indptr = np.concatenate([[0], np.cumsum(np.bincount(receivers, minlength=n_nodes))])
    targets = np.linspace(0, n_edges, n_blocks + 1)[1:-1]
    cuts = np.unique(np.searchsorted(indptr, targets))
    node_bounds = [0, *[int(c) for c in cuts if 0 < c < n_nodes], n_nodes]
    edge_bounds = [int(indptr[n]) for n in node_bounds]
    return BlockPlan(
        mirror=jnp.asarray(mirror, jnp.int32),
        indptr=jnp.asarray(indptr, jnp.int32),
        edge_bounds=tuple(edge_bounds),
        node_bounds=tuple(node_bounds),
        native=native,
    )


def _planned_product(static, indptr, senders, receivers, w, x):
    """out = W x with the plan's execution (native kernel or receiver blocks).

    ``static`` = (edge_bounds, node_bounds, native) of a :class:`BlockPlan`.
    """
    edge_bounds, node_bounds, native = static
    if native:
        from darec_jax.kernels import csr_spmm

        return csr_spmm(indptr, senders, w, x)
    outs = []
    bounds = zip(edge_bounds[:-1], edge_bounds[1:], node_bounds[:-1], node_bounds[1:], strict=True)
    for e0, e1, n0, n1 in bounds:
        messages = constrain(w[e0:e1, None] * x[senders[e0:e1]], DATA, None)
        outs.append(
            jax.ops.segment_sum(
                messages, receivers[e0:e1] - n0, num_segments=n1 - n0, indices_are_sorted=True
            )
        )
    return jnp.concatenate(outs, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _planned_spmm(static, mirror, indptr, senders, receivers, w, x):
    return _planned_product(static, indptr, senders, receivers, w, x)


def _planned_spmm_fwd(static, mirror, indptr, senders, receivers, w, x):
    out = _planned_product(static, indptr, senders, receivers, w, x)
    return out, (mirror, indptr, senders, receivers, w, x)


def _planned_spmm_bwd(static, residuals, ct):
    mirror, indptr, senders, receivers, w, x = residuals
    # d/dx: Wᵀ ct = the same product with each edge taking its reverse edge's weight.
    dx = _planned_product(static, indptr, senders, receivers, w[mirror], ct)
    # d/dw_e = <ct[receiver_e], x[sender_e]> (dropped by XLA when the weights are constants).
    dw = jnp.sum(ct[receivers] * x[senders], axis=-1)
    return None, None, None, None, dw, dx


_planned_spmm.defvjp(_planned_spmm_fwd, _planned_spmm_bwd)


def spmm(
    graph: jraph.GraphsTuple,
    x: jax.Array,
    weights: jax.Array | None = None,
    plan: BlockPlan | None = None,
) -> jax.Array:
    """Sparse product (W X) over the graph's edges.

    out_n = Σ_{e: receiver_e = n} w_e · x[sender_e]

    Args:
      graph: edges sorted by receiver (see ``build_interaction_graph``).
      x: [N, d] node features.
      weights: [E] edge weights; defaults to ``graph.edges`` (Â).
      plan: the native kernel or receiver blocks, with the transposed-graph backward (see
        :class:`BlockPlan`); None = one segment sum over all edges (autodiff backward).

    Returns:
      [N, d].
    """
    w = graph.edges if weights is None else weights
    if plan is not None:
        static = (plan.edge_bounds, plan.node_bounds, plan.native)
        return _planned_spmm(static, plan.mirror, plan.indptr, graph.senders, graph.receivers, w, x)
    # Under a multi-device mesh each device weighs its slice of the edges; XLA all-reduces the
    # partial sums of the segment sum.
    messages = constrain(w[:, None] * x[graph.senders], DATA, None)
    return jax.ops.segment_sum(
        messages, graph.receivers, num_segments=x.shape[0], indices_are_sorted=True
    )


def edge_keep_mask(uniforms: jax.Array, keep_rate: float) -> jax.Array:
    """The reference's edge-dropout rule (§1.3): keep e iff floor(fl32(u_e + keep_rate)) == 1.

    Args:
      uniforms: [E] float32 draws from U[0, 1), one per directed edge.
    Returns:
      [E] float32 0/1 mask. Kept edges keep their Â weight (no rescaling).
    """
    return (jnp.floor(uniforms.astype(jnp.float32) + jnp.float32(keep_rate)) == 1.0).astype(
        jnp.float32
    )


def lightgcn_propagate(
    graph: jraph.GraphsTuple,
    ego: jax.Array,
    num_layers: int,
    weights: jax.Array | None = None,
    plan: BlockPlan | None = None,
) -> jax.Array:
    """LightGCN: F = Σ_{l=0}^{L} E^{(l)},  E^{(l)} = Ã E^{(l-1)},  E^{(0)} = ego.

    The sum includes layer 0 and is accumulated left to right from zero, like the reference.
    ``weights`` ([E]) replaces Â, e.g. Â masked by edge dropout; the same weights serve every layer.
    """
    layer = ego
    total = jnp.zeros_like(ego) + ego
    for _ in range(num_layers):
        layer = spmm(graph, layer, weights, plan)
        total = total + layer
    return total
