"""RLMRec's contrastive and generative alignment (BACKBONES.md §3.1–3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp

from darec_jax.losses.alignment import (
    leaky_mlp,
    node_mask,
    rlmrec_con_kd_rows,
    rlmrec_gen_recon,
)
from darec_jax.methods.base import Method, Params
from darec_jax.models.lightgcn import xavier_uniform


def init_mlp(key: jax.Array, in_dim: int, hidden: int, out_dim: int) -> Params:
    """Two torch-style Linear layers: Xavier-uniform weights [out, in], biases U(±1/sqrt(in))."""
    k1, k2, k3, k4 = jax.random.split(key, 4)

    def bias(k, fan_in, size):
        bound = 1.0 / jnp.sqrt(fan_in)
        return jax.random.uniform(k, (size,), jnp.float32, -bound, bound)

    return {
        "w1": xavier_uniform(k1, (hidden, in_dim)),
        "b1": bias(k2, in_dim, hidden),
        "w2": xavier_uniform(k3, (out_dim, hidden)),
        "b2": bias(k4, hidden, out_dim),
    }


@dataclass(frozen=True)
class RlmrecCon(Method):
    """kd = (kd_weight / B)·[infonce(F_u[anc], P_u[anc], P_u) + item terms]; P = MLP(LLM)."""

    kd_weight: float = 1e-2
    kd_temperature: float = 0.2
    with_negative_term: bool = True
    term_names: tuple[str, ...] = field(default=("kd",))

    def init_params(self, key, cf_dim, llm_dim, ego_dim=None):
        # MLP_con: Ds -> (Ds + Dout) // 2 -> Dout (§3.1).
        return {"mlp": init_mlp(key, llm_dim, (llm_dim + cf_dim) // 2, cf_dim)}

    def terms(self, params, user_final, item_final, batch, llm, draws):
        if self.kd_weight == 0:
            return {"kd": jnp.zeros((), jnp.float32)}
        user_llm, item_llm = llm
        # Every user row enters the user term's denominator; the item terms use only the
        # batch's positives and negatives, so only those (at most 2B) item rows are projected,
        # unless the catalogue is smaller than that.
        user_proj = leaky_mlp(params["mlp"], user_llm)  # [U, d]
        batch_size = batch.pos.shape[0]
        ids = jnp.concatenate([batch.pos, batch.neg]) if self.with_negative_term else batch.pos
        if ids.shape[0] < item_llm.shape[0]:
            rows = leaky_mlp(params["mlp"], item_llm[ids])
        else:
            rows = leaky_mlp(params["mlp"], item_llm)[ids]
        pos_proj = rows[:batch_size]
        neg_proj = rows[batch_size:] if self.with_negative_term else None
        kd = rlmrec_con_kd_rows(
            user_final,
            item_final,
            user_proj,
            pos_proj,
            neg_proj,
            batch.users,
            batch.pos,
            batch.neg,
            self.kd_weight,
            self.kd_temperature,
            batch.valid,
        )
        return {"kd": kd}


@dataclass(frozen=True)
class RlmrecGen(Method):
    """Mask M ego rows with a learned token; reconstruct their LLM embeddings from F[S]."""

    mask_ratio: float = 0.05
    recon_weight: float = 0.01
    recon_temperature: float = 0.1
    term_names: tuple[str, ...] = field(default=("recon",))

    @property
    def n_seeds(self) -> int:
        """M = max(floor(N · mask_ratio), 1) (§1.5)."""
        n_nodes = self.n_users + self.n_items
        return max(int(n_nodes * self.mask_ratio), 1)

    def init_params(self, key, cf_dim, llm_dim, ego_dim=None):
        # MLP_gen: Din -> (Ds + Din) // 2 -> Ds (Din: the final width); the mask token, one ego
        # row, starts at zero (§1.5, §3.2).
        return {
            "mlp": init_mlp(key, cf_dim, (llm_dim + cf_dim) // 2, llm_dim),
            "mask_token": jnp.zeros((1, ego_dim or cf_dim), jnp.float32),
        }

    def draw(self, key):
        n_nodes = self.n_users + self.n_items
        return {"seeds": jax.random.choice(key, n_nodes, (self.n_seeds,), replace=False)}

    def transform_ego(self, params, ego, draws):
        return node_mask(ego, draws["seeds"], params["mask_token"])

    def terms(self, params, user_final, item_final, batch, llm, draws):
        if self.recon_weight == 0:
            return {"recon": jnp.zeros((), jnp.float32)}
        final_all = jnp.concatenate([user_final, item_final], axis=0)
        semantic_all = jnp.concatenate(llm, axis=0)
        recon = rlmrec_gen_recon(
            final_all,
            semantic_all,
            draws["seeds"],
            params["mlp"],
            self.recon_weight,
            self.recon_temperature,
        )
        return {"recon": recon}
