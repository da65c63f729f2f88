"""SimGCL (docs/backbones.md §2.4, Q5, Q6, Q8) as a Flax NNX module.

Perturbed forward over the full Â (:func:`perturbed_propagate`): H^{(0)} = E0 (unperturbed); for
l = 1..L, P = Â H^{(l-1)}, H^{(l)} = P + eps · sign(P) ⊙ rownorm(Ω_l) with Ω_l ∈ U[0,1)^{N×d}
and rownorm(Ω)_n = Ω_n / max(‖Ω_n‖, 1e-12), sign(0) = 0; the perturbed H^{(l)} feeds the next
layer and F = Σ_{l=0}^{L} H^{(l)}.

A training step computes view 1 (perturbed with Ω_1..Ω_L), view 2 (perturbed with the next L)
and view 3 (the clean LightGCN forward over Â, no dropout), all from the same ego matrix
(RLMRec-Gen's masked one when that method runs, §3.2). The recommendation loss and every method
use view 3; the backbone's own term has no negative-item part:

    cl = (cl_weight / B) · [ cal_infonce(F¹_u[anc], F²_u[anc], F²_u, τ)
                           + cal_infonce(F¹_i[pos], F²_i[pos], F²_i, τ) ]

The step's draw is ``noise`` [2L, N, d] (view 1 layers 1..L, then view 2). Eval: view 3. With
cl_weight = 0 the term is an exact 0 and nothing is drawn. SimGCL has no edge dropout (the
reference's top-level keep rate is 1.0).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from darec_jax.graph import Graph
from darec_jax.losses.alignment import normalize_clamped
from darec_jax.models.lightgcn import LightGCN
from darec_jax.models.sgl import view_contrast
from darec_jax.models.spec import BackboneSpec, per_dataset


def perturbed_propagate(graph: Graph, ego: jax.Array, noise: jax.Array, eps: float) -> jax.Array:
    """F = Σ_{l=0}^{L} H^{(l)}, L = noise.shape[0] (see the module docstring).

    ego [N, d] = H^{(0)}; noise [L, N, d] uniform matrices Ω_l, layer 1 first. Returns [N, d].
    """
    layer = ego
    total = jnp.zeros_like(ego) + ego
    for omega in noise:
        prop = graph.spmm(layer)  # P = Â H^{(l-1)}
        layer = prop + eps * jnp.sign(prop) * normalize_clamped(omega)
        total = total + layer
    return total


class SimGCL(LightGCN):
    """LightGCN with SimGCL's two noise-perturbed views and their contrast.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d]. Static: depth, cl weight and
    temperature, noise magnitude eps.
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
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
        eps: float = 0.9,
    ):
        super().__init__(n_users, n_items, dim, num_layers, rngs=rngs, keep_rate=1.0)
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.eps = eps

    def draw(self, key, arrays):
        if self.cl_weight == 0:
            return {}
        shape = (2 * self.num_layers, self.n_users + self.n_items, self.dim)
        return {"noise": jax.random.uniform(key, shape, jnp.float32)}

    def train_forward(self, ego, arrays, draws, batch):
        """View 3 (F_u, F_i) and {"cl"}. Without a batch (``train_embeddings`` alone) only
        view 3 is computed and no term is returned."""
        graph = arrays.graph
        fu, fi = self.propagate(graph, ego)  # view 3, clean
        if batch is None:
            return fu, fi, {}
        if self.cl_weight == 0:
            return fu, fi, {"cl": jnp.zeros((), jnp.float32)}
        noise = draws["noise"]
        n_users, depth = self.n_users, self.num_layers
        view_1 = perturbed_propagate(graph, ego, noise[:depth], self.eps)
        view_2 = perturbed_propagate(graph, ego, noise[depth:], self.eps)
        cl = view_contrast(
            view_1[:n_users],
            view_1[n_users:],
            view_2[:n_users],
            view_2[n_users:],
            batch,
            self.cl_weight,
            self.cl_temperature,
            with_negative_term=False,
        )
        return fu, fi, {"cl": cl}


# ----------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class SimGCLConfig:
    """``model.simgcl``: weight and temperature of the views' contrast, noise magnitude."""

    cl_weight: float = 0.1
    cl_temperature: float = 0.2
    eps: float = 0.9


_SIMGCL_BASE = {
    "model.reg_weight": (1e-5,) * 3,
    "model.simgcl.cl_weight": (0.1,) * 3,
    "model.simgcl.cl_temperature": (0.2, 0.2, 0.5),
}

SPEC = BackboneSpec(
    name="simgcl",
    order=3,
    module=SimGCL,
    config=SimGCLConfig,
    presets={
        "none": per_dataset(
            {**_SIMGCL_BASE, "model.layer_num": (3, 3, 3), "model.simgcl.eps": (0.9, 0.9, 0.2)}
        ),
        "rlmrec-con": per_dataset(
            {
                **_SIMGCL_BASE,
                "rlmrec.kd_weight": (1e-2,) * 3,
                "rlmrec.kd_temperature": (0.2, 0.1, 0.2),
            }
        ),
        "rlmrec-gen": per_dataset(
            {
                **_SIMGCL_BASE,
                "rlmrec.mask_ratio": (0.05, 0.01, 0.05),
                "rlmrec.recon_weight": (0.1, 0.01, 0.01),
                "rlmrec.recon_temperature": (0.2, 0.05, 0.1),
            }
        ),
    },
    draws={"noise": "dense"},
)
