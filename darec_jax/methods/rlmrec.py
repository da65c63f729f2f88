"""RLMRec's contrastive and generative alignment (docs/backbones.md §3.1–3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import nnx

from darec_jax.losses.alignment import node_mask, rlmrec_con_kd_rows, rlmrec_gen_recon
from darec_jax.methods.base import Method
from darec_jax.nn import LeakyMLP


class RlmrecConParams(nnx.Module):
    """RLMRec-Con's parameters: ``mlp`` (MLP_con), LLM rows [n, Ds] -> P [n, Dout], widths
    Ds -> (Ds + Dout) // 2 -> Dout (§3.1)."""

    def __init__(self, cf_dim: int, llm_dim: int, *, rngs: nnx.Rngs):
        self.mlp = LeakyMLP(llm_dim, (llm_dim + cf_dim) // 2, cf_dim, rngs=rngs)


class RlmrecGenParams(nnx.Module):
    """RLMRec-Gen's parameters: ``mlp`` (MLP_gen), final rows [n, Din] -> [n, Ds], widths
    Din -> (Ds + Din) // 2 -> Ds (Din: the final width); ``mask_token`` [1, d_ego], one ego row,
    zeros at the start (§1.5, §3.2)."""

    def __init__(self, cf_dim: int, llm_dim: int, ego_dim: int, *, rngs: nnx.Rngs):
        self.mlp = LeakyMLP(cf_dim, (llm_dim + cf_dim) // 2, llm_dim, rngs=rngs)
        self.mask_token = nnx.Param(jnp.zeros((1, ego_dim), jnp.float32))


@dataclass(frozen=True)
class RlmrecCon(Method):
    """kd = (kd_weight / B)·[infonce(F_u[anc], P_u[anc], P_u) + item terms]; P = MLP(LLM)."""

    kd_weight: float = 1e-2
    kd_temperature: float = 0.2
    with_negative_term: bool = True
    term_names: tuple[str, ...] = field(default=("kd",))

    def make_module(self, cf_dim, llm_dim, ego_dim, *, rngs):
        return RlmrecConParams(cf_dim, llm_dim, rngs=rngs)

    def terms(self, params, user_final, item_final, batch, llm, draws):
        if self.kd_weight == 0:
            return {"kd": jnp.zeros((), jnp.float32)}
        user_llm, item_llm = llm
        # Every user row enters the user term's denominator; the item terms use only the
        # batch's positives and negatives, so only those (at most 2B) item rows are projected,
        # unless the catalogue is smaller than that.
        mlp = self.module(params).mlp
        user_proj = mlp(user_llm)  # [U, d]
        batch_size = batch.pos.shape[0]
        ids = jnp.concatenate([batch.pos, batch.neg]) if self.with_negative_term else batch.pos
        if ids.shape[0] < item_llm.shape[0]:
            rows = mlp(item_llm[ids])
        else:
            rows = mlp(item_llm)[ids]
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

    def make_module(self, cf_dim, llm_dim, ego_dim, *, rngs):
        return RlmrecGenParams(cf_dim, llm_dim, ego_dim, rngs=rngs)

    def draw(self, key):
        n_nodes = self.n_users + self.n_items
        return {"seeds": jax.random.choice(key, n_nodes, (self.n_seeds,), replace=False)}

    def transform_ego(self, params, ego, draws):
        return node_mask(ego, draws["seeds"], self.module(params).mask_token[...])

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
