"""The interaction graph (jraph) and message passing over it."""

from darec_jax.graph.bipartite import build_interaction_graph, edge_permutation, unique_pairs
from darec_jax.graph.propagation import (
    BlockPlan,
    edge_keep_mask,
    lightgcn_propagate,
    make_block_plan,
    spmm,
)

__all__ = [
    "BlockPlan",
    "make_block_plan",
    "build_interaction_graph",
    "edge_keep_mask",
    "edge_permutation",
    "lightgcn_propagate",
    "spmm",
    "unique_pairs",
]
