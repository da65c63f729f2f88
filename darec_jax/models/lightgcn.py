"""LightGCN (BACKBONES.md §2.2) as a Flax NNX module.

The module owns only parameters; the graph and any edge-dropout weights are call arguments, so
``nnx.split`` / ``nnx.merge`` give a pure function of (params, graph, weights).
"""

from __future__ import annotations

import jax
import jraph
from flax import nnx

from darec_jax.graph.propagation import BlockPlan, lightgcn_propagate

# Xavier-uniform for a [rows, cols] table: U(-b, b), b = sqrt(6 / (rows + cols)) (§1.6).
xavier_uniform = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1)


class LightGCN(nnx.Module):
    """User and item ID embeddings propagated by LightGCN.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d].
    """

    def __init__(self, n_users: int, n_items: int, dim: int, num_layers: int, *, rngs: nnx.Rngs):
        self.n_users = n_users
        self.n_items = n_items
        self.num_layers = num_layers
        self.user_emb = nnx.Param(xavier_uniform(rngs.params(), (n_users, dim)))
        self.item_emb = nnx.Param(xavier_uniform(rngs.params(), (n_items, dim)))

    def ego(self) -> jax.Array:
        """E0 = [E_u ; E_i], [N, d]."""
        return jax.numpy.concatenate([self.user_emb[...], self.item_emb[...]], axis=0)

    def __call__(
        self,
        graph: jraph.GraphsTuple,
        weights: jax.Array | None = None,
        plan: BlockPlan | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Final embeddings (F_u [U, d], F_i [I, d]).

        ``weights`` [E]: edge weights for this forward (Â masked by dropout in training);
        None = the clean graph Â (evaluation). ``plan``: blocked graph products (an execution
        choice; the result is the same).
        """
        return self.propagate(graph, self.ego(), weights, plan)

    def propagate(
        self,
        graph: jraph.GraphsTuple,
        ego: jax.Array,
        weights: jax.Array | None = None,
        plan: BlockPlan | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """(F_u, F_i) from a given ego matrix [N, d] (e.g. RLMRec-Gen's masked one)."""
        final = lightgcn_propagate(graph, ego, self.num_layers, weights, plan)
        return final[: self.n_users], final[self.n_users :]
