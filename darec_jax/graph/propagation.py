"""Message passing over the interaction graph (BACKBONES.md §1.3, §2.2).

All functions are pure and jit-friendly; the graph's arrays are ordinary jit arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph


def spmm(graph: jraph.GraphsTuple, x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Sparse product (W X) over the graph's edges.

    out_n = Σ_{e: receiver_e = n} w_e · x[sender_e]

    Args:
      graph: edges sorted by receiver (see ``build_interaction_graph``).
      x: [N, d] node features.
      weights: [E] edge weights; defaults to ``graph.edges`` (Â).

    Returns:
      [N, d].
    """
    w = graph.edges if weights is None else weights
    messages = w[:, None] * x[graph.senders]
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
    graph: jraph.GraphsTuple, ego: jax.Array, num_layers: int, weights: jax.Array | None = None
) -> jax.Array:
    """LightGCN: F = Σ_{l=0}^{L} E^{(l)},  E^{(l)} = Ã E^{(l-1)},  E^{(0)} = ego.

    The sum includes layer 0 and is accumulated left to right from zero, like the reference.
    ``weights`` ([E]) replaces Â, e.g. Â masked by edge dropout; the same weights serve every layer.
    """
    layer = ego
    total = jnp.zeros_like(ego) + ego
    for _ in range(num_layers):
        layer = spmm(graph, layer, weights)
        total = total + layer
    return total
