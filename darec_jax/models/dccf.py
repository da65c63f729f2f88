"""DCCF (docs/backbones.md §2.5, Q8–Q10) as a Flax NNX module.

Graph: the directed edges of the interaction graph, both directions of every training pair, in
(head, tail) order; in the :class:`~darec_jax.graph.Graph` the head is the receiver and the tail
the sender, so the sparse product with edge weights w is :meth:`~darec_jax.graph.Graph.spmm`:

    out_n = Σ_{e: h_e = n} w_e · X_{t_e}.

Static weights G_e = deg(h_e)^{-1/2} · deg(t_e)^{-1/2} computed in float32
(:func:`dccf_graph_weights`, stored in ``TrainArrays.extra["dccf_weights"]``).

Layer l, from X = E^{(l)}:

    Z   = G ⊗ X
    R   = [softmax_K(X_u W_U) W_Uᵀ ; softmax_K(X_i W_I) W_Iᵀ]
    Aga = W(Z) ⊗ X,   Aia = W(R) ⊗ X          (adaptive, row-stochastic, differentiable)
    E^{(l+1)} = Z + R + Aga + Aia + X         (added in that order)

F = Σ_{l=0}^{L} E^{(l)}. The backbone's own term is the per-layer contrast ``cl`` between Z and
each of R, Aga, Aia over the batch's sorted unique users and unique positive items, every term
divided by the number of unique users (Q9). DCCF draws no random numbers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import nnx

from darec_jax.graph import Graph
from darec_jax.losses.alignment import cal_infonce
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.spec import BackboneSpec, embedding_names, per_dataset
from darec_jax.nn import xavier_uniform

# One layer's views (Z, R, Aga, Aia), each [N, d].
Views = tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def dccf_graph_weights(graph: Graph) -> np.ndarray:
    """G_e = fl32(fl32(deg(h_e)^{-1/2}) · fl32(deg(t_e)^{-1/2})), float32 [E] in the graph's edge
    order; deg(n) = number of edges with head (receiver) n. Isolated nodes have no edges, so their
    infinite deg^{-1/2} is never gathered."""
    heads = np.asarray(graph.receivers, np.int64)
    tails = np.asarray(graph.senders, np.int64)
    degree = np.bincount(heads, minlength=graph.n_nodes).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.float32(1.0) / np.sqrt(degree)
    return (inv_sqrt[heads] * inv_sqrt[tails]).astype(np.float32)


def _row_normalize(y: jax.Array) -> jax.Array:
    """F.normalize: rows divided by max(‖y‖, 1e-12), with a zero gradient through ‖y‖ for a zero
    row (torch's norm backward) instead of 0·∞."""
    sq = jnp.sum(jnp.square(y), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return y / jnp.maximum(norm, 1e-12)


def adaptive_weights(y: jax.Array, heads: jax.Array, tails: jax.Array) -> jax.Array:
    """DCCF's adaptive edge weights from a source matrix Y [N, d] (§2.5 step 3, Q10):

        Ŷ = F.normalize(Y),  α_e = (Ŷ_{h_e}·Ŷ_{t_e} + 1) / 2,
        S_n = Σ_{e: h_e = n} α_e,  w_e = α_e · (1/S_{h_e})   (1/S := 0 where inf or NaN).

    Nothing is detached. heads, tails: int [E], heads sorted. Returns w [E], row-stochastic over
    each node's outgoing edges.
    """
    yn = _row_normalize(y)
    alpha = (jnp.sum(yn[heads] * yn[tails], axis=-1) + 1.0) / 2.0
    row_sum = jraph.segment_sum(alpha, heads, num_segments=y.shape[0], indices_are_sorted=True)
    nonzero = row_sum != 0
    inv = 1.0 / jnp.where(nonzero, row_sum, 1.0)  # no 1/0 in the graph, hence no 0·∞ gradient
    inv = jnp.where(nonzero & jnp.isfinite(inv), inv, 0.0)
    return alpha * inv[heads]


def unique_rows(ids: jax.Array, valid: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """The sorted unique ids of a padded batch's real rows, at the fixed size B.

    ids: int [B] in [0, n); valid: [B] 0/1. Returns (rows int32 [B]: the unique ids, then padding
    clipped to a real row, mask float32 [B]: 1 on the unique ids).
    """
    masked = jnp.where(valid > 0, ids, n)
    unique = jnp.unique(masked, size=ids.shape[0], fill_value=n)
    mask = (unique < n).astype(jnp.float32)
    return jnp.minimum(unique, n - 1).astype(jnp.int32), mask


class DCCF(Backbone):
    """DCCF: ID embeddings, intent prototypes and adaptive graph / intent views.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d], ``user_intent`` W_U [d, K],
    ``item_intent`` W_I [d, K] (all Xavier-uniform). Static: L, K, the contrast's weight and τ.
    """

    term_names = ("cl",)

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        num_layers: int,
        *,
        rngs: nnx.Rngs,
        intent_num: int = 128,
        cl_weight: float = 1e-3,
        cl_temperature: float = 0.1,
    ):
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.num_layers = num_layers
        self.intent_num = intent_num
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.user_emb = nnx.Param(xavier_uniform(rngs.params(), (n_users, dim)))
        self.item_emb = nnx.Param(xavier_uniform(rngs.params(), (n_items, dim)))
        self.user_intent = nnx.Param(xavier_uniform(rngs.params(), (dim, intent_num)))
        self.item_intent = nnx.Param(xavier_uniform(rngs.params(), (dim, intent_num)))

    @property
    def final_dim(self) -> int:
        return self.dim

    def ego(self) -> jax.Array:
        """E0 = [E_u ; E_i], [N, d]."""
        return concat_ego(self.user_emb, self.item_emb)

    # ------------------------------------------------------------------ forward

    def intent(self, x: jax.Array) -> jax.Array:
        """R = [softmax_K(X_u W_U) W_Uᵀ ; softmax_K(X_i W_I) W_Iᵀ], [N, d]."""
        wu, wi = self.user_intent[...], self.item_intent[...]
        xu, xi = x[: self.n_users], x[self.n_users :]
        ru = jax.nn.softmax(xu @ wu, axis=1) @ wu.T  # [U, K]·[K, d]
        ri = jax.nn.softmax(xi @ wi, axis=1) @ wi.T  # [I, K]·[K, d]
        return jnp.concatenate([ru, ri], axis=0)

    def layer(self, x: jax.Array, arrays) -> tuple[jax.Array, Views]:
        """One layer from X = E^{(l)}: (E^{(l+1)} = Z + R + Aga + Aia + X, (Z, R, Aga, Aia))."""
        graph = arrays.graph
        heads, tails = graph.receivers, graph.senders
        z = graph.spmm(x, static_weights(arrays))
        r = self.intent(x)
        aga = graph.spmm(x, adaptive_weights(z, heads, tails))
        aia = graph.spmm(x, adaptive_weights(r, heads, tails))
        return z + r + aga + aia + x, (z, r, aga, aia)

    def propagate(self, ego: jax.Array, arrays) -> tuple[jax.Array, list[Views]]:
        """L layers from E^{(0)} = ``ego`` [N, d]: (F = Σ_{l=0}^{L} E^{(l)} [N, d], the views of
        layers 0..L−1)."""
        layer, total, views = ego, ego, []
        for _ in range(self.num_layers):
            layer, parts = self.layer(layer, arrays)
            total = total + layer
            views.append(parts)
        return total, views

    def cl_loss(self, views: list[Views], batch) -> jax.Array:
        """cl = cl_weight · Σ_l cl_l (§2.5, Q8, Q9), over Ub = the sorted unique real anchors and
        Ib = the sorted unique real positives, with Inf(X, Y) = cal_infonce(X, Y, Y, τ):

            cl_l = Σ_{rows ∈ ([Ub], [U + Ib])} Σ_{V ∈ (R, Aga, Aia)} Inf(Z[rows], V[rows]) / |Ub|.
        """
        users, user_mask = unique_rows(batch.users, batch.valid, self.n_users)
        items, item_mask = unique_rows(batch.pos, batch.valid, self.n_items)
        n_unique = jnp.sum(user_mask)
        row_sets = ((users, user_mask), (items + self.n_users, item_mask))
        total = jnp.zeros((), jnp.float32)
        for z, r, aga, aia in views:
            cl_l = jnp.zeros((), jnp.float32)
            for rows, mask in row_sets:
                anchors = z[rows]
                for other in (r, aga, aia):
                    positives = other[rows]
                    infonce = cal_infonce(
                        anchors, positives, positives, self.cl_temperature, mask, mask
                    )
                    cl_l = cl_l + infonce / n_unique
            total = total + cl_l
        return self.cl_weight * total

    # ------------------------------------------------------------------ Backbone interface

    def train_forward(self, ego, arrays, draws, batch):
        """(F_u, F_i) from ``ego`` (RLMRec-Gen's masked one, if any) and {"cl": weighted cl} on
        that forward's views; cl is an exact 0 when cl_weight = 0 or no batch is given."""
        final, views = self.propagate(ego, arrays)
        if self.cl_weight == 0 or batch is None:
            cl = jnp.zeros((), jnp.float32)
        else:
            cl = self.cl_loss(views, batch)
        return final[: self.n_users], final[self.n_users :], {"cl": cl}

    def eval_forward(self, arrays):
        final, _ = self.propagate(self.ego(), arrays)
        return final[: self.n_users], final[self.n_users :]


def static_weights(arrays) -> jax.Array:
    """G [E] from ``arrays.extra`` (see :func:`dccf_graph_weights`); without it, the graph's Â
    (the same matrix computed in float64, equal up to float32 rounding)."""
    extra = arrays.extra or {}
    return extra.get("dccf_weights", arrays.graph.weights)


# ----------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class DCCFConfig:
    """``model.dccf``: the number of intent prototypes K, weight and temperature of the
    per-layer contrast."""

    intent_num: int = 128
    cl_weight: float = 1e-3
    cl_temperature: float = 0.1

    def problems(self) -> list[str]:
        return [] if self.intent_num >= 1 else ["model.dccf.intent_num must be >= 1"]


def _state_dict_names(params) -> list[tuple[str, str, int | None]]:
    """``nn.Embedding`` tables (``.weight``) and the intent prototypes."""
    return embedding_names(params, ".weight") + [
        ("user_intent", "user_intent", None),
        ("item_intent", "item_intent", None),
    ]


def _static_arrays(cfg, graph: Graph) -> dict[str, jax.Array]:
    del cfg
    return {"dccf_weights": jnp.asarray(dccf_graph_weights(graph))}


SPEC = BackboneSpec(
    name="dccf",
    order=4,
    module=DCCF,
    config=DCCFConfig,
    presets={
        "none": per_dataset(
            {
                "model.layer_num": (2, 2, 3),
                "model.reg_weight": (1e-4, 1e-4, 1e-3),
                "model.dccf.cl_weight": (1e-3,) * 3,
                "model.dccf.cl_temperature": (0.1,) * 3,
                "model.dccf.intent_num": (128,) * 3,
            }
        ),
        "rlmrec-con": per_dataset(
            {"rlmrec.kd_weight": (1e-2,) * 3, "rlmrec.kd_temperature": (0.5, 0.2, 0.5)}
        ),
        "rlmrec-gen": per_dataset(
            {
                "rlmrec.mask_ratio": (0.05, 0.05, 0.1),
                "rlmrec.recon_weight": (0.1, 0.01, 0.01),
                "rlmrec.recon_temperature": (0.2, 0.1, 0.2),
            }
        ),
    },
    state_dict=_state_dict_names,
    static_arrays=_static_arrays,
)
