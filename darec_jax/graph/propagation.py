"""Message passing over the interaction graph (docs/backbones.md §1.3, §2.2).

All functions are pure and jit-friendly; the graph is an ordinary jit argument, and its products
run the implementation it was built with (:class:`~darec_jax.graph.Graph`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from darec_jax.graph.graph import Graph


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
    graph: Graph, ego: jax.Array, num_layers: int, weights: jax.Array | None = None
) -> jax.Array:
    """LightGCN: F = Σ_{l=0}^{L} E^{(l)},  E^{(l)} = Ã E^{(l-1)},  E^{(0)} = ego [N, d].

    The sum includes layer 0 and is accumulated left to right from zero, like the reference.
    ``weights`` ([E]) replaces Â, e.g. Â masked by edge dropout; the same weights serve every layer.
    Returns [N, d].
    """
    layer = ego
    total = jnp.zeros_like(ego) + ego
    for _ in range(num_layers):
        layer = graph.spmm(layer, weights)
        total = total + layer
    return total
