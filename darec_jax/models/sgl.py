"""SGL (docs/backbones.md §2.3, Q3, Q4, Q7, Q8) as a Flax NNX module.

Every training step runs three LightGCN forwards (F = Σ_{l=0}^{L} E^{(l)}) from the same ego
matrix (RLMRec-Gen's masked one when that method runs, §3.2):

* view 1 over EdgeDrop(Â, keep) with the step's first uniform vector (draw ``uniforms_1``),
* view 2 over EdgeDrop(Â, keep) with a second, independent vector (``uniforms_2``),
* view 3 over the full Â.

The recommendation loss (and every method) uses view 3; the backbone's own term is

    cl = (cl_weight / B) · [ cal_infonce(F¹_u[anc], F²_u[anc], F²_u, τ)
                           + cal_infonce(F¹_i[pos], F²_i[pos], F²_i, τ)
                           + cal_infonce(F¹_i[neg], F²_i[neg], F²_i, τ) ]

(:func:`view_contrast`): denominators over **all** users / items of view 2, batch ids not
deduplicated, B the real batch size. Eval: view 3. The depth is ``model.layer_num`` (the YAML's
top-level value, 3 everywhere, Q3). With keep_rate = 1 nothing is drawn and views 1 and 2 are
view 3; with cl_weight = 0 the term is an exact 0 and neither dropped view is computed or drawn.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from darec_jax.losses.alignment import cal_infonce
from darec_jax.models.lightgcn import LightGCN
from darec_jax.models.spec import BackboneSpec, per_dataset, rate_problems


def view_contrast(
    user_1: jax.Array,
    item_1: jax.Array,
    user_2: jax.Array,
    item_2: jax.Array,
    batch,
    weight: float,
    temperature: float,
    with_negative_term: bool = True,
) -> jax.Array:
    """SGL / SimGCL contrast between two views (§2.3, §2.4, Q7, Q8):

        cl = (w / B) · [ cal_infonce(F¹_u[anc], F²_u[anc], F²_u, τ)
                       + cal_infonce(F¹_i[pos], F²_i[pos], F²_i, τ)
                       + cal_infonce(F¹_i[neg], F²_i[neg], F²_i, τ) ]   (not for SimGCL)

    user_1 [U, d], item_1 [I, d]: view 1 (the anchor); user_2, item_2: view 2 (positives and the
    denominators, all rows). ``batch``: a padded :class:`~darec_jax.train.step.Batch`; padding
    rows count neither as anchors nor in B = Σ valid.
    """
    valid = batch.valid
    total = cal_infonce(user_1[batch.users], user_2[batch.users], user_2, temperature, valid)
    total = total + cal_infonce(item_1[batch.pos], item_2[batch.pos], item_2, temperature, valid)
    if with_negative_term:
        total = total + cal_infonce(
            item_1[batch.neg], item_2[batch.neg], item_2, temperature, valid
        )
    return total / jnp.sum(valid) * weight


class SGL(LightGCN):
    """LightGCN with SGL's two edge-dropped views and their contrast.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d]. Static: depth, keep rate of views 1 and
    2, cl weight and temperature.
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
        keep_rate: float = 0.8,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
    ):
        super().__init__(n_users, n_items, dim, num_layers, rngs=rngs, keep_rate=keep_rate)
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature

    def draw(self, key, arrays):
        if self.keep_rate >= 1.0 or self.cl_weight == 0:
            return {}
        n_edges = arrays.graph.n_edges
        k1, k2 = jax.random.split(key)
        return {
            "uniforms_1": jax.random.uniform(k1, (n_edges,), jnp.float32),
            "uniforms_2": jax.random.uniform(k2, (n_edges,), jnp.float32),
        }

    def train_forward(self, ego, arrays, draws, batch):
        """View 3 (F_u, F_i) and {"cl"}. Without a batch (``train_embeddings`` alone) only
        view 3 is computed and no term is returned."""
        graph = arrays.graph
        fu, fi = self.propagate(graph, ego)  # view 3, full Â
        if batch is None:
            return fu, fi, {}
        if self.cl_weight == 0:
            return fu, fi, {"cl": jnp.zeros((), jnp.float32)}
        w1 = self.edge_weights(graph, draws.get("uniforms_1"))
        w2 = self.edge_weights(graph, draws.get("uniforms_2"))
        u1, i1 = self.propagate(graph, ego, w1)
        u2, i2 = self.propagate(graph, ego, w2)
        cl = view_contrast(u1, i1, u2, i2, batch, self.cl_weight, self.cl_temperature)
        return fu, fi, {"cl": cl}


# ----------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class SGLConfig:
    """``model.sgl``: keep probability of the two edge-dropped views, weight and temperature of
    their contrast."""

    keep_rate: float = 0.8
    cl_weight: float = 1e-3
    cl_temperature: float = 0.1

    def problems(self) -> list[str]:
        return rate_problems("model.sgl.keep_rate", self.keep_rate)


_SGL_BASE = {
    "model.reg_weight": (1e-5,) * 3,
    "model.sgl.cl_weight": (0.1,) * 3,
    "model.sgl.cl_temperature": (0.2, 0.2, 0.5),
}

SPEC = BackboneSpec(
    name="sgl",
    order=2,
    module=SGL,
    config=SGLConfig,
    presets={
        "none": per_dataset(  # depth from the top-level layer_num, 3 everywhere (Q3)
            {
                "model.layer_num": (3, 3, 3),
                "model.reg_weight": (1e-5, 1e-6, 1e-5),
                "model.sgl.cl_weight": (0.1, 1e-3, 0.1),
                "model.sgl.cl_temperature": (0.2, 0.1, 0.5),
                "model.sgl.keep_rate": (0.8,) * 3,
            }
        ),
        "rlmrec-con": per_dataset(
            {
                **_SGL_BASE,
                "rlmrec.kd_weight": (1e-2,) * 3,
                "rlmrec.kd_temperature": (0.5, 1.0, 1.0),
            }
        ),
        "rlmrec-gen": per_dataset(
            {
                **_SGL_BASE,
                "rlmrec.mask_ratio": (0.2, 0.15, 0.1),
                "rlmrec.recon_weight": (0.1,) * 3,
                "rlmrec.recon_temperature": (0.2,) * 3,
            }
        ),
    },
    draws={"uniforms_1": "edge", "uniforms_2": "edge"},
)
