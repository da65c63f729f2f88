"""LightGCN (docs/backbones.md §2.2) as a Flax NNX module.

The module owns only parameters; the graph and any edge-dropout weights are call arguments, so
``nnx.split`` / ``nnx.merge`` give a pure function of (params, graph, weights).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from darec_jax.graph import Graph, edge_keep_mask, lightgcn_propagate
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.spec import BackboneSpec, per_dataset, rate_problems
from darec_jax.nn import xavier_uniform


class LightGCN(Backbone):
    """User and item ID embeddings propagated by LightGCN, trained with edge dropout.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d]. Static: the number of layers and the
    edge-dropout keep rate (1.0 = no dropout and no random draws).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        num_layers: int,
        *,
        rngs: nnx.Rngs,
        keep_rate: float = 1.0,
    ):
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.num_layers = num_layers
        self.keep_rate = keep_rate
        self.user_emb = nnx.Param(xavier_uniform(rngs.params(), (n_users, dim)))
        self.item_emb = nnx.Param(xavier_uniform(rngs.params(), (n_items, dim)))

    @property
    def final_dim(self) -> int:
        return self.dim

    def ego(self) -> jax.Array:
        """E0 = [E_u ; E_i], [N, d]."""
        return concat_ego(self.user_emb, self.item_emb)

    def __call__(
        self, graph: Graph, weights: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Final embeddings (F_u [U, d], F_i [I, d]).

        ``weights`` [E]: edge weights for this forward (Â masked by dropout in training);
        None = the clean graph Â (evaluation).
        """
        return self.propagate(graph, self.ego(), weights)

    def propagate(
        self, graph: Graph, ego: jax.Array, weights: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """(F_u, F_i) from a given ego matrix [N, d] (e.g. RLMRec-Gen's masked one)."""
        final = lightgcn_propagate(graph, ego, self.num_layers, weights)
        return final[: self.n_users], final[self.n_users :]

    # ------------------------------------------------------------------ Backbone interface

    def edge_weights(self, graph: Graph, uniforms: jax.Array | None) -> jax.Array:
        """Training edge weights: Â times the dropout mask (no rescaling), or Â for keep = 1."""
        if uniforms is None or self.keep_rate >= 1.0:
            return graph.weights
        return graph.weights * edge_keep_mask(uniforms, self.keep_rate)

    def draw(self, key, arrays):
        if self.keep_rate >= 1.0:  # the reference draws nothing when keep = 1
            return {}
        n_edges = arrays.graph.n_edges
        return {"uniforms": jax.random.uniform(key, (n_edges,), jax.numpy.float32)}

    def train_forward(self, ego, arrays, draws, batch):
        weights = self.edge_weights(arrays.graph, draws.get("uniforms"))
        fu, fi = self.propagate(arrays.graph, ego, weights)
        return fu, fi, {}

    def eval_forward(self, arrays):
        return self.propagate(arrays.graph, self.ego())


# ----------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class LightGCNConfig:
    """``model.lightgcn``: edge-dropout keep probability in training (1.0 = no dropout, no
    random draws)."""

    keep_rate: float = 0.8

    def problems(self) -> list[str]:
        return rate_problems("model.lightgcn.keep_rate", self.keep_rate)


SPEC = BackboneSpec(
    name="lightgcn",
    order=0,
    module=LightGCN,
    config=LightGCNConfig,
    presets={
        "none": per_dataset(
            {
                "model.layer_num": (3, 3, 2),
                "model.reg_weight": (1e-6, 1e-6, 1e-6),
                "model.lightgcn.keep_rate": (0.8,) * 3,
            }
        ),
        "rlmrec-con": per_dataset(
            {
                "model.layer_num": (3, 3, 3),
                "model.reg_weight": (1e-7, 1e-7, 1e-8),
                "rlmrec.kd_weight": (1e-2, 1e-2, 1e-3),
                "rlmrec.kd_temperature": (0.2, 0.2, 0.1),
            }
        ),
        "rlmrec-gen": per_dataset(
            {
                "model.layer_num": (2, 2, 2),
                "model.reg_weight": (1e-7, 1e-7, 1e-6),
                "rlmrec.mask_ratio": (0.15, 0.05, 0.15),
                "rlmrec.recon_weight": (0.1, 0.01, 0.1),
                "rlmrec.recon_temperature": (0.5, 0.1, 0.5),
            }
        ),
    },
    draws={"uniforms": "edge"},
)
