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
from scipy.optimize import linear_sum_assignment
from torch import nn

from darec_jax.reference.lightgcn import LightGCNRef, bpr_loss_sum, propagate, reg_params
from darec_jax.reference.losses import (
    AlignMLP,
    global_alignment,
    local_alignment,
    node_mask,
    normalize_eps,
    orthogonality,
    rlmrec_con_kd,
    rlmrec_gen_recon,
    spherical_kmeans,
    uniformity,
)

__all__ = ["LightGCNDaRecRef", "LightGCNGeneRef", "LightGCNPlusRef", "propagate"]


def _as_buffer(x: np.ndarray | torch.Tensor, rows: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(torch.float32).clone()
    if t.ndim != 2 or t.shape[0] != rows:
        raise ValueError(f"{name} must be [{rows}, Ds], got {tuple(t.shape)}")
    return t


class _SemanticBase(LightGCNRef):
    """LightGCNRef plus constant semantic embeddings ``usr_emb`` [U, Ds], ``itm_emb`` [I, Ds]."""

    def _init_semantic(
        self, usr_emb: np.ndarray | torch.Tensor, itm_emb: np.ndarray | torch.Tensor
    ) -> int:
        usr = _as_buffer(usr_emb, self.n_users, "usr_emb")
        itm = _as_buffer(itm_emb, self.n_items, "itm_emb")
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


class LightGCNDaRecRef(_SemanticBase):
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
        ds = self._init_semantic(usr_emb, itm_emb)
        if global_kind not in ("mse", "kl"):
            raise ValueError(f"global_kind must be 'mse' or 'kl', got {global_kind!r}")
        if local_assign not in ("joint", "matched"):
            raise ValueError(f"local_assign must be 'joint' or 'matched', got {local_assign!r}")
        if score_on not in ("backbone", "disentangled"):
            raise ValueError(f"score_on must be 'backbone' or 'disentangled', got {score_on!r}")
        self.local_assign = local_assign
        self.score_on = score_on
        head_dim = embedding_size if head_dim is None else head_dim
        self.head_dim = head_dim
        self.lambda_or = lambda_or
        self.lambda_un = lambda_un
        self.lambda_gl = lambda_gl
        self.lambda_lo = lambda_lo
        self.global_kind = global_kind
        self.global_temperature = global_temperature
        self.local_temperature = local_temperature
        self.num_clusters = num_clusters
        self.cf_specific = AlignMLP(embedding_size, embedding_size, head_dim)
        self.cf_shared = AlignMLP(embedding_size, embedding_size, head_dim)
        self.llm_specific = AlignMLP(ds, (ds + head_dim) // 2, head_dim)
        self.llm_shared = AlignMLP(ds, (ds + head_dim) // 2, head_dim)

    def _set_terms(
        self,
        e_c: torch.Tensor,
        e_l: torch.Tensor,
        assign: torch.Tensor | None,
        subset: torch.Tensor | None,
        assign_llm: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Unweighted DaRec terms of one set (None where the λ is 0)."""
        need_sp = self.lambda_or != 0 or self.lambda_un != 0
        need_sh = self.lambda_or != 0 or self.lambda_gl != 0 or self.lambda_lo != 0
        # Only the heads some non-zero term uses are evaluated.
        sp_c = self.cf_specific(e_c) if need_sp else None
        sp_l = self.llm_specific(e_l) if need_sp else None
        sh_c = self.cf_shared(e_c) if need_sh else None
        sh_l = self.llm_shared(e_l) if need_sh else None
        sub = slice(None) if subset is None else torch.as_tensor(subset, dtype=torch.int64)
        out: dict[str, torch.Tensor | None] = dict.fromkeys(("orth", "unif", "global", "local"))
        if self.lambda_or != 0:
            out["orth"] = orthogonality(sp_l, sh_l) + orthogonality(sp_c, sh_c)
        if self.lambda_un != 0:
            out["unif"] = uniformity(sp_c[sub]) + uniformity(sp_l[sub])
        if self.lambda_gl != 0:
            out["global"] = global_alignment(
                sh_c[sub], sh_l[sub], self.global_kind, self.global_temperature
            )
        if self.lambda_lo != 0:
            out["local"] = local_alignment(
                sh_c, sh_l, assign, self.num_clusters, self.local_temperature, assign_llm
            )
        return out

    def score_vectors(self, rows: torch.Tensor) -> torch.Tensor:
        """The vectors whose inner product scores a pair: F itself, or [f_C,sp(F) ‖ f_C,sh(F)]."""
        if self.score_on == "backbone":
            return rows
        return torch.cat([self.cf_specific(rows), self.cf_shared(rows)], dim=1)

    def _bpr(self, user_final, item_final, anc, pos, neg):
        s = self.score_vectors
        return bpr_loss_sum(s(user_final[anc]), s(item_final[pos]), s(item_final[neg])) / len(anc)

    def eval_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_final, item_final = self.forward(self.adj)
        return self.score_vectors(user_final), self.score_vectors(item_final)

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
        if self.lambda_lo != 0 and (user_assign is None or item_assign is None):
            raise ValueError("user_assign and item_assign are required when lambda_lo != 0")
        user_final, item_final = self.forward(self.edge_drop(self.adj, uniforms))
        bpr = self._bpr(user_final, item_final, anc, pos, neg)
        reg = self.reg_weight * reg_params(self)

        items = torch.cat([pos, neg])
        u_assign = None if user_assign is None else torch.as_tensor(user_assign)[anc]
        i_assign = None if item_assign is None else torch.as_tensor(item_assign)[items]
        u_llm = None if user_assign_llm is None else torch.as_tensor(user_assign_llm)[anc]
        i_llm = None if item_assign_llm is None else torch.as_tensor(item_assign_llm)[items]
        user_terms = self._set_terms(
            user_final[anc], self.usr_emb[anc], u_assign, user_subset, u_llm
        )
        item_terms = self._set_terms(
            item_final[items], self.itm_emb[items], i_assign, item_subset, i_llm
        )

        terms: dict[str, torch.Tensor] = {"bpr": bpr, "reg": reg}
        total = bpr + reg
        weights = {
            "orth": self.lambda_or,
            "unif": self.lambda_un,
            "global": self.lambda_gl,
            "local": self.lambda_lo,
        }
        for name, weight in weights.items():
            if weight == 0:
                terms[name] = torch.zeros((), dtype=torch.float32)
                continue
            term = weight * (user_terms[name] + item_terms[name])
            terms[name] = term
            total = total + term
        return total, terms

    @torch.no_grad()
    def recluster(
        self, iters: int, user_init: torch.Tensor, item_init: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Spherical k-means of users and of items (DAREC.md §6), clean forward, no gradient.

        ``joint``: on the rows [Ê^C_sh ‖ Ê^L_sh]; returns (user_assign, item_assign).
        ``matched``: on Ê^C_sh and on Ê^L_sh separately; the LLM clusters are relabelled to the
        CF cluster they are paired with by ``scipy.optimize.linear_sum_assignment`` (maximum
        total cosine similarity of the final centres); returns (user_assign, item_assign,
        user_assign_llm, item_assign_llm).

        Args:
            iters: k-means iterations.
            user_init: int64 [K] user row ids of the initial centres (``matched``: [2, K], the
                CF view's then the LLM view's).
            item_init: int64 [K] (``matched``: [2, K]) item row ids of the initial centres.
        """
        was_training = self.training
        self.eval()
        try:
            user_final, item_final = self.forward(self.adj)
            out = [
                self._cluster(
                    normalize_eps(self.cf_shared(final)),
                    normalize_eps(self.llm_shared(llm)),
                    iters,
                    torch.as_tensor(init, dtype=torch.int64),
                )
                for final, llm, init in (
                    (user_final, self.usr_emb, user_init),
                    (item_final, self.itm_emb, item_init),
                )
            ]
        finally:
            self.train(was_training)
        if self.local_assign == "joint":
            return out[0][0], out[1][0]
        return out[0][0], out[1][0], out[0][1], out[1][1]

    def _cluster(self, cf_rows, llm_rows, iters, init):
        k = self.num_clusters
        if self.local_assign == "joint":
            assign, _ = spherical_kmeans(torch.cat([cf_rows, llm_rows], dim=1), k, iters, init)
            return assign, None
        a_cf, c_cf = spherical_kmeans(cf_rows, k, iters, init[0])
        a_llm, c_llm = spherical_kmeans(llm_rows, k, iters, init[1])
        sim = (normalize_eps(c_cf) @ normalize_eps(c_llm).T).double().numpy()
        cf_ids, llm_ids = linear_sum_assignment(sim, maximize=True)
        partner = torch.empty(k, dtype=torch.int64)
        partner[torch.as_tensor(llm_ids)] = torch.as_tensor(cf_ids, dtype=torch.int64)
        return a_cf, partner[a_llm]
