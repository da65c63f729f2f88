"""LightGCN + LLM-alignment methods of the PyTorch reference.

* :class:`LightGCNPlusRef`  — RLMRec-Con (BACKBONES.md §3.1, §1.7, Q12, Q13).
* :class:`LightGCNGeneRef`  — RLMRec-Gen (BACKBONES.md §3.2, §1.5, Q11–Q13).
* :class:`LightGCNDaRecRef` — DaRec on LightGCN (DAREC.md §2–§8).

All three subclass :class:`LightGCNRef`, so ``user_embeds`` and ``item_embeds`` are the first
parameters and ``reg`` sums ‖P‖² over every parameter in ``model.parameters()`` order. Every random
draw of a step (edge-dropout uniforms, mask seeds, pair subsets, k-means init) is an argument.
The semantic (LLM) embeddings are float32 buffers, never parameters, never normalised before use.

A loss weight of exactly 0 skips its term: the term is reported as an exact 0 and is not added.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from darec_jax.reference.darec import DaRecMixin
from darec_jax.reference.lightgcn import LightGCNRef, bpr_loss_sum, propagate, reg_params
from darec_jax.reference.losses import (
    AlignMLP,
    node_mask,
    rlmrec_con_kd,
    rlmrec_gen_recon,
)
from darec_jax.reference.variants import BackboneOutput, as_buffer, assemble_loss

__all__ = ["LightGCNDaRecRef", "LightGCNGeneRef", "LightGCNPlusRef", "propagate"]


class _SemanticBase(LightGCNRef):
    """LightGCNRef plus constant semantic embeddings ``usr_emb`` [U, Ds], ``itm_emb`` [I, Ds]."""

    def _init_semantic(
        self, usr_emb: np.ndarray | torch.Tensor, itm_emb: np.ndarray | torch.Tensor
    ) -> int:
        usr = as_buffer(usr_emb, self.n_users, "usr_emb")
        itm = as_buffer(itm_emb, self.n_items, "itm_emb")
        if usr.shape[1] != itm.shape[1]:
            raise ValueError(f"usr_emb and itm_emb widths differ: {usr.shape[1]} vs {itm.shape[1]}")
        self.register_buffer("usr_emb", usr)
        self.register_buffer("itm_emb", itm)
        return int(usr.shape[1])

    def _bpr(
        self,
        user_final: torch.Tensor,
        item_final: torch.Tensor,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> torch.Tensor:
        batch = anc.shape[0]
        return bpr_loss_sum(user_final[anc], item_final[pos], item_final[neg]) / batch


class LightGCNPlusRef(_SemanticBase):
    """LightGCN_plus (RLMRec-Con): total = bpr + reg + kd.

    Parameters in order: ``user_embeds``, ``item_embeds``, ``mlp`` (Ds → (Ds+d)//2 → d).

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate: as LightGCNRef.
        usr_emb: [U, Ds] semantic user embeddings (numpy or tensor; stored as a float32 buffer).
        itm_emb: [I, Ds] semantic item embeddings.
        kd_weight: w of the kd term.
        kd_temperature: τ_kd.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 3,
        reg_weight: float = 1e-7,
        keep_rate: float = 0.8,
        kd_weight: float = 1e-2,
        kd_temperature: float = 0.2,
    ) -> None:
        super().__init__(n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate)
        ds = self._init_semantic(usr_emb, itm_emb)
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        self.mlp = AlignMLP(ds, (ds + embedding_size) // 2, embedding_size)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the edge-dropped forward.

        Args:
            anc, pos, neg: int64 [B] ids.
            uniforms: [E] edge-dropout uniforms (see :meth:`LightGCNRef.edge_drop`).

        Returns:
            (total, {"bpr", "reg", "kd"}), each term already weighted; total = bpr + reg + kd.
        """
        user_final, item_final = self.forward(self.edge_drop(self.adj, uniforms))
        bpr = self._bpr(user_final, item_final, anc, pos, neg)
        reg = self.reg_weight * reg_params(self)
        total = bpr + reg
        if self.kd_weight == 0:
            kd = torch.zeros((), dtype=torch.float32)
        else:
            user_proj = self.mlp(self.usr_emb)  # [U, d]
            item_proj = self.mlp(self.itm_emb)  # [I, d]
            kd = rlmrec_con_kd(
                user_final,
                item_final,
                user_proj,
                item_proj,
                anc,
                pos,
                neg,
                self.kd_weight,
                self.kd_temperature,
            )
            total = total + kd
        return total, {"bpr": bpr, "reg": reg, "kd": kd}


class LightGCNGeneRef(_SemanticBase):
    """LightGCN_gene (RLMRec-Gen): total = bpr + reg + recon, on the masked, edge-dropped forward.

    Parameters in order: ``user_embeds``, ``item_embeds``, ``masker_token`` [1, d] (zeros),
    ``mlp`` (d → (Ds+d)//2 → Ds).

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate: as LightGCNRef.
        usr_emb, itm_emb: semantic embeddings [U, Ds], [I, Ds].
        mask_ratio: M = max(floor(N·mask_ratio), 1) seeds per step (see :meth:`num_seeds`).
        recon_weight: w of the recon term.
        recon_temperature: τ_re.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 2,
        reg_weight: float = 1e-7,
        keep_rate: float = 0.8,
        mask_ratio: float = 0.15,
        recon_weight: float = 0.1,
        recon_temperature: float = 0.5,
    ) -> None:
        super().__init__(n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate)
        ds = self._init_semantic(usr_emb, itm_emb)
        self.mask_ratio = mask_ratio
        self.recon_weight = recon_weight
        self.recon_temperature = recon_temperature
        self.masker_token = nn.Parameter(torch.zeros(1, embedding_size, dtype=torch.float32))
        self.mlp = AlignMLP(embedding_size, (ds + embedding_size) // 2, ds)

    def num_seeds(self) -> int:
        """M = max(floor(N · mask_ratio), 1), N = U + I (§1.5)."""
        return max(int(np.floor((self.n_users + self.n_items) * self.mask_ratio)), 1)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms: torch.Tensor | None = None,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss: mask the ego rows ``seeds``, propagate over the edge-dropped Ã.

        Args:
            anc, pos, neg: int64 [B] ids.
            uniforms: [E] edge-dropout uniforms.
            seeds: int64 [M] distinct global node ids to mask (users 0..U-1, item j = U + j).

        Returns:
            (total, {"bpr", "reg", "recon"}), each already weighted; total = bpr + reg + recon.
        """
        if seeds is None:
            raise ValueError("seeds must be given (inject the NodeMask draw)")
        seeds = torch.as_tensor(seeds, dtype=torch.int64)
        ego = torch.cat([self.user_embeds, self.item_embeds], dim=0)  # [N, d]
        masked = node_mask(ego, seeds, self.masker_token)
        final = propagate(self.edge_drop(self.adj, uniforms), masked, self.layer_num)  # [N, d]
        user_final, item_final = final[: self.n_users], final[self.n_users :]
        bpr = self._bpr(user_final, item_final, anc, pos, neg)
        reg = self.reg_weight * reg_params(self)
        total = bpr + reg
        if self.recon_weight == 0:
            recon = torch.zeros((), dtype=torch.float32)
        else:
            semantic = torch.cat([self.usr_emb, self.itm_emb], dim=0)  # [N, Ds]
            recon = rlmrec_gen_recon(
                final, semantic, seeds, self.mlp, self.recon_weight, self.recon_temperature
            )
            total = total + recon
        return total, {"bpr": bpr, "reg": reg, "recon": recon}


class LightGCNDaRecRef(DaRecMixin, _SemanticBase):
    """DaRec on LightGCN: total = bpr + reg + λ_or·L_or + λ_un·L_un + λ_gl·L_gl + λ_lo·L_lo.

    Parameters in order: ``user_embeds``, ``item_embeds``, then the heads ``cf_specific``,
    ``cf_shared`` (d → d → d_h) and ``llm_specific``, ``llm_shared`` (Ds → (Ds+d_h)//2 → d_h).

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate: as LightGCNRef.
        usr_emb, itm_emb: LLM embeddings [U, Ds], [I, Ds].
        head_dim: d_h (None → d).
        lambda_or, lambda_un, lambda_gl, lambda_lo: term weights (0 skips the term).
        global_kind: "mse" or "kl".
        global_temperature: τ_g (kl only).
        local_temperature: τ_l.
        num_clusters: K.
        local_assign: "joint" (one k-means on both views) or "matched" (k-means per view,
            clusters paired by an exact assignment on centre cosine similarity).
        score_on: "backbone" (F scores pairs) or "disentangled" ([f_C,sp(F) ‖ f_C,sh(F)] does,
            in BPR and in ranking).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 3,
        reg_weight: float = 1e-7,
        keep_rate: float = 0.8,
        head_dim: int | None = None,
        lambda_or: float = 0.1,
        lambda_un: float = 0.1,
        lambda_gl: float = 0.1,
        lambda_lo: float = 0.01,
        global_kind: str = "mse",
        global_temperature: float = 1.0,
        local_temperature: float = 0.2,
        num_clusters: int = 16,
        local_assign: str = "joint",
        score_on: str = "backbone",
    ) -> None:
        super().__init__(n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate)
        self.final_dim = embedding_size
        self._init_darec(
            usr_emb,
            itm_emb,
            head_dim,
            lambda_or,
            lambda_un,
            lambda_gl,
            lambda_lo,
            global_kind,
            global_temperature,
            local_temperature,
            num_clusters,
            local_assign,
            score_on,
        )

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms: torch.Tensor | None = None,
        user_assign: torch.Tensor | None = None,
        item_assign: torch.Tensor | None = None,
        user_subset: torch.Tensor | None = None,
        item_subset: torch.Tensor | None = None,
        user_assign_llm: torch.Tensor | None = None,
        item_assign_llm: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the edge-dropped forward.

        User set: rows F_u[anc] / usr_emb[anc] / user_assign[anc] (B rows). Item set: rows
        F_i[cat(pos, neg)] / itm_emb[…] / item_assign[…] (2B rows). L_or and L_lo use the full
        sets, L_un and L_gl the subset rows; each term is summed over the two sets, then weighted.

        Args:
            anc, pos, neg: int64 [B] ids.
            uniforms: [E] edge-dropout uniforms.
            user_assign: int64 [U] cluster ids in [0, K) (needed when lambda_lo != 0).
            item_assign: int64 [I] cluster ids in [0, K).
            user_subset: int64 indices into the B user-set rows (None = all).
            item_subset: int64 indices into the 2B item-set rows (None = all).
            user_assign_llm, item_assign_llm: the LLM view's own assignments (``matched``).

        Returns:
            (total, {"bpr", "reg", "orth", "unif", "global", "local"}), each already weighted.
        """
        user_final, item_final = self.forward(self.edge_drop(self.adj, uniforms))
        terms = self.darec_terms(
            user_final,
            item_final,
            anc,
            pos,
            neg,
            user_assign,
            item_assign,
            user_subset,
            item_subset,
            user_assign_llm,
            item_assign_llm,
        )
        scored = BackboneOutput(self.score_vectors(user_final), self.score_vectors(item_final), {})
        return assemble_loss(self, scored, anc, pos, neg, terms)
