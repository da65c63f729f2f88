"""The interaction graph (a :class:`Graph` pytree that carries its product's implementation) and
message passing over it."""

from darec_jax.graph.bipartite import edge_permutation, interaction_edges, unique_pairs
from darec_jax.graph.graph import SPMM_IMPLS, Graph, build_graph
from darec_jax.graph.propagation import edge_keep_mask, lightgcn_propagate

__all__ = [
    "SPMM_IMPLS",
    "Graph",
    "build_graph",
    "edge_keep_mask",
    "edge_permutation",
    "interaction_edges",
    "lightgcn_propagate",
    "unique_pairs",
]
