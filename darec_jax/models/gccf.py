"""GCCF (docs/backbones.md §2.1, Q1, Q2) as a Flax NNX module.

    E^{(0)} = E0,   E^{(l)} = Â' E^{(l-1)}  (l = 1..L),   F = [E^{(0)} ‖ E^{(1)} ‖ … ‖ E^{(L)}]

a feature concatenation ([N, (L+1)·d]); no weight matrix, no nonlinearity, no augmentation, so
nothing is drawn and the training and eval forwards are the same. Â' is the self-loop graph
Â_sl = D_sl^{-1/2} (A + I) D_sl^{-1/2} (d_sl = d + 1) for the bare model only; RLMRec's variants
(and DaRec) propagate over Â without self-loops (Q1).

Â_sl is kept on the interaction graph's edges: the same senders and receivers (so the graph's
product, whichever implementation it runs, serves it too) with the weights
1/sqrt((d_n + 1)(d_m + 1)), plus the diagonal 1/(d_n + 1) applied as an elementwise term. These
two arrays are the backbone's static arrays (:func:`self_loop_arrays`, in ``TrainArrays.extra``).

The per-layer W_l [d, d] are parameters (Xavier) that propagation never uses: they only enter
reg, so Adam updates them with the gradient 2·reg_weight·W_l (Q2).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from darec_jax.graph import Graph
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.spec import BackboneSpec, embedding_names, per_dataset
from darec_jax.nn import xavier_uniform

SELF_LOOP_WEIGHTS = "self_loop_weights"
SELF_LOOP_DIAG = "self_loop_diag"


def self_loop_arrays(graph: Graph) -> dict[str, jax.Array]:
    """Â_sl on the edges of ``graph`` (the no-self-loop interaction graph) plus its diagonal.

    With d_n the degree without self-loops and c_n = (d_n + 1)^{-1/2} in float64 (as scipy):

        self_loop_weights [E] = c_{receiver_e} · c_{sender_e}   (float32)
        self_loop_diag    [N] = c_n · c_n                        (float32)

    so that (Â_sl X)_n = Σ_{e: receiver_e = n} w_e X_{sender_e} + diag_n X_n.
    """
    receivers = np.asarray(graph.receivers, np.int64)
    senders = np.asarray(graph.senders, np.int64)
    degree = np.bincount(receivers, minlength=graph.n_nodes).astype(np.float64) + 1.0
    inv_sqrt = np.power(degree, -0.5)  # never inf: every node has its self-loop
    weights = (inv_sqrt[receivers] * inv_sqrt[senders]).astype(np.float32)
    diag = (inv_sqrt * inv_sqrt).astype(np.float32)
    return {SELF_LOOP_WEIGHTS: jnp.asarray(weights), SELF_LOOP_DIAG: jnp.asarray(diag)}


class GCCF(Backbone):
    """User and item ID embeddings propagated by GCCF's linear layers, concatenated.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d], ``layer_weight_1`` … ``layer_weight_L``
    [d, d] (unused by propagation, Q2). Static: the number of layers and whether propagation uses
    the self-loop graph (True only for the bare model, Q1; it then needs :func:`self_loop_arrays`
    in ``arrays.extra``).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        num_layers: int,
        *,
        rngs: nnx.Rngs,
        self_loops: bool = True,
    ):
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.num_layers = num_layers
        self.self_loops = self_loops
        self.user_emb = nnx.Param(xavier_uniform(rngs.params(), (n_users, dim)))
        self.item_emb = nnx.Param(xavier_uniform(rngs.params(), (n_items, dim)))
        for layer in range(1, num_layers + 1):
            weight = xavier_uniform(rngs.params(), (dim, dim))
            setattr(self, f"layer_weight_{layer}", nnx.Param(weight))

    @property
    def final_dim(self) -> int:
        return (self.num_layers + 1) * self.dim

    def ego(self) -> jax.Array:
        """E0 = [E_u ; E_i], [N, d]."""
        return concat_ego(self.user_emb, self.item_emb)

    def propagate(self, ego: jax.Array, arrays) -> tuple[jax.Array, jax.Array]:
        """(F_u [U, (L+1)d], F_i [I, (L+1)d]) from the ego matrix [N, d]; columns l·d..(l+1)·d−1
        hold E^{(l)}."""
        weights = diag = None
        if self.self_loops:
            extra = arrays.extra or {}
            if SELF_LOOP_WEIGHTS not in extra:
                raise ValueError(
                    "GCCF with self-loops needs its static arrays: build TrainArrays with cfg "
                    "(models.static_arrays)"
                )
            weights, diag = extra[SELF_LOOP_WEIGHTS], extra[SELF_LOOP_DIAG]
        layers = [ego]
        for _ in range(self.num_layers):
            nxt = arrays.graph.spmm(layers[-1], weights)
            if diag is not None:
                nxt = nxt + diag[:, None] * layers[-1]
            layers.append(nxt)
        final = jnp.concatenate(layers, axis=1)
        return final[: self.n_users], final[self.n_users :]

    # ------------------------------------------------------------------ Backbone interface

    def train_forward(self, ego, arrays, draws, batch):
        fu, fi = self.propagate(ego, arrays)
        return fu, fi, {}

    def eval_forward(self, arrays):
        return self.propagate(self.ego(), arrays)


# ----------------------------------------------------------------------------- declarations


def self_loops(method: str) -> bool:
    """Â_sl (with self-loops) for the bare model only; RLMRec's variants and DaRec use Â (Q1).
    The one place this rule is written: the model, its static arrays and the reference's
    adjacency all read it."""
    return method == "none"


def _state_dict_names(params) -> list[tuple[str, str, int | None]]:
    """The ID tables and the per-layer W_l (``gcnLayers.{l-1}.W``)."""
    layers = sorted(int(k.rsplit("_", 1)[1]) for k in params if k.startswith("layer_weight_"))
    return embedding_names(params) + [
        (f"layer_weight_{k}", f"gcnLayers.{k - 1}.W", None) for k in layers
    ]


def _static_arrays(cfg, graph: Graph) -> dict[str, jax.Array]:
    return self_loop_arrays(graph) if self_loops(cfg.method) else {}


SPEC = BackboneSpec(
    name="gccf",
    order=1,
    module=GCCF,
    presets={
        "none": per_dataset({"model.layer_num": (2, 2, 2), "model.reg_weight": (1e-6, 1e-6, 1e-6)}),
        "rlmrec-con": per_dataset(
            {"rlmrec.kd_weight": (1e-3, 1e-3, 1e-2), "rlmrec.kd_temperature": (0.1, 0.2, 0.5)}
        ),
        "rlmrec-gen": per_dataset(
            {
                "model.reg_weight": (1e-7, 1e-6, 1e-6),
                "rlmrec.mask_ratio": (0.1, 0.05, 0.1),
                "rlmrec.recon_weight": (0.01,) * 3,
                "rlmrec.recon_temperature": (0.1, 1.0, 0.1),
            }
        ),
    },
    state_dict=_state_dict_names,
    static_arrays=_static_arrays,
    build_options=lambda method: {"self_loops": self_loops(method)},
    self_loops=self_loops,
)
