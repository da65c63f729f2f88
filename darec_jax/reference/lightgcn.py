"""LightGCN of the PyTorch reference (docs/backbones.md §2.2, with §1.3, §1.6 and §1.7).

Training forward over an edge-dropped Ã (uniforms injectable), eval forward over the full Â,
F = Σ_{l=0}^{L} E^{(l)} with E^{(l)} = Ã E^{(l-1)}, BPR averaged over the batch plus an
un-averaged L2 term over every parameter. Unlike the reference there is no ``final_embeds``
cache: ``full_predict`` always recomputes a clean forward (the reference's normal flow gives the
same numbers; its cache only adds stale-state traps, Q23).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from darec_jax.reference.darec import DaRecMixin
from darec_jax.reference.losses import bpr_loss_sum, reg_params
from darec_jax.reference.spec import ReferenceSpec
from darec_jax.reference.variants import (
    BackboneOutput,
    EgoTransform,
    RLMRecConMixin,
    RLMRecGenMixin,
    assemble_loss,
    ego_embeddings,
)

__all__ = [
    "LightGCNDaRecRef",
    "LightGCNGeneRef",
    "LightGCNPlusRef",
    "LightGCNRef",
    "bpr_loss_sum",
    "propagate",
    "reg_params",
]


def propagate(adj: torch.Tensor, ego: torch.Tensor, layer_num: int) -> torch.Tensor:
    """LightGCN propagation from E^{(0)}: F = 0 + E^{(0)} + … + E^{(L)}, E^{(l)} = adj·E^{(l-1)}.

    Args:
        adj: (N, N) sparse COO.
        ego: [N, d] E^{(0)}.
        layer_num: L.

    Returns:
        [N, d] F.
    """
    layers = [ego]
    for _ in range(layer_num):
        layers.append(torch.sparse.mm(adj, layers[-1]))
    return sum(layers)


class LightGCNRef(nn.Module):
    """LightGCN with RLMRec's edge-dropout training forward.

    Args:
        n_users: U.
        n_items: I.
        adj: Â, (N, N) float32 sparse COO from :func:`normalized_adjacency`, N = U + I.
        embedding_size: d.
        layer_num: L, the number of propagation layers.
        reg_weight: weight of Σ‖P‖².
        keep_rate: edge-dropout keep probability during training (1.0 disables dropout).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 3,
        reg_weight: float = 1e-6,
        keep_rate: float = 0.8,
    ) -> None:
        super().__init__()
        n_nodes = n_users + n_items
        if tuple(adj.shape) != (n_nodes, n_nodes):
            raise ValueError(f"adj must be ({n_nodes}, {n_nodes}), got {tuple(adj.shape)}")
        self.n_users = n_users
        self.n_items = n_items
        self.adj = adj
        self.embedding_size = embedding_size
        self.layer_num = layer_num
        self.reg_weight = reg_weight
        self.keep_rate = keep_rate
        self.final_dim = embedding_size
        # Xavier-uniform, bound sqrt(6 / (rows + d)) (§1.6).
        self.user_embeds = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_users, embedding_size, dtype=torch.float32))
        )
        self.item_embeds = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_items, embedding_size, dtype=torch.float32))
        )

    def edge_drop(self, adj: torch.Tensor, uniforms: torch.Tensor | None = None) -> torch.Tensor:
        """Drop stored entries of ``adj`` independently (§1.3, Q4).

        Entry e is kept iff floor(fl32(u_e + keep_rate)) == 1; kept entries keep their Â value
        (no rescaling, no re-normalisation), so the result is not symmetric.

        Args:
            adj: (N, N) sparse COO, possibly uncoalesced.
            uniforms: [E] U[0,1) draws, one per stored entry in storage order. ``None`` draws
                ``torch.rand(E)`` from the global torch CPU generator, as the reference does.

        Returns:
            ``adj`` itself when keep_rate == 1.0 (nothing is drawn), else a new sparse COO tensor.
        """
        if self.keep_rate == 1.0:
            return adj
        values = adj._values()  # [E]
        indices = adj._indices()  # [2, E]
        n_entries = values.shape[0]
        if uniforms is None:
            uniforms = torch.rand(n_entries)
        if tuple(uniforms.shape) != (n_entries,):
            raise ValueError(
                f"uniforms must have shape ({n_entries},), got {tuple(uniforms.shape)}"
            )
        # float32 + Python scalar stays float32: fl32(u + keep).
        keep = torch.floor(uniforms.to(torch.float32) + self.keep_rate) == 1.0
        keep = keep.to(values.device)
        return torch.sparse_coo_tensor(
            indices[:, keep], values[keep], adj.shape, dtype=values.dtype, check_invariants=False
        )

    def forward(self, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Propagate over ``adj`` and sum the layers.

        E^{(0)} = [E_u ; E_i] [N, d], E^{(l)} = adj · E^{(l-1)}, F = 0 + E^{(0)} + … + E^{(L)}.

        Returns:
            (F_u [U, d], F_i [I, d]).
        """
        embeds = torch.cat([self.user_embeds, self.item_embeds], dim=0)  # [N, d]
        final = propagate(adj, embeds, self.layer_num)
        return final[: self.n_users], final[self.n_users :]

    def train_forward(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms: torch.Tensor | None = None,
        ego_transform: EgoTransform | None = None,
    ) -> BackboneOutput:
        """The training forward of one step: E0 (through ``ego_transform``, RLMRec-Gen's
        NodeMask) propagated over the edge-dropped Â.

        Args:
            anc, pos, neg: int64 [B] ids (unused; kept for the common backbone signature).
            uniforms: [E] edge-dropout uniforms for this step (see :meth:`edge_drop`).
            ego_transform: applied to E0 before propagation.

        Returns:
            BackboneOutput(F_u [U, d], F_i [I, d], {}).
        """
        ego = ego_embeddings(self, ego_transform)
        final = propagate(self.edge_drop(self.adj, uniforms), ego, self.layer_num)
        return BackboneOutput(final[: self.n_users], final[self.n_users :], {})

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss over one batch: total = bpr + reg.

        bpr = (1/B) Σ_b softplus(s⁻_b − s⁺_b) on the edge-dropped forward (Q12);
        reg = reg_weight · Σ_P ‖P‖² (not divided by B).

        Args:
            anc: int64 [B] user ids.
            pos: int64 [B] positive item ids in [0, I).
            neg: int64 [B] negative item ids in [0, I).
            uniforms: [E] edge-dropout uniforms for this step (see :meth:`edge_drop`).

        Returns:
            (total, {"bpr": bpr, "reg": reg}), all scalar tensors attached to the graph.
        """
        return assemble_loss(self, self.train_forward(anc, pos, neg, uniforms), anc, pos, neg)

    def eval_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean eval forward over the full Â (no drop): (F_u [U, d], F_i [I, d]).

        The reference computes this once per evaluation pass (through its cache); ``evaluate``
        calls it once per pass explicitly instead.
        """
        return self.forward(self.adj)

    def full_predict(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of ``users`` against all items from a clean eval forward over the full Â.

        Args:
            users: int64 [B] user ids.

        Returns:
            [B, I] float32 scores s_ui = f_u · g_i (training items not masked here).
        """
        user_final, item_final = self.eval_embeddings()
        return user_final[users] @ item_final.T


class LightGCNPlusRef(RLMRecConMixin, LightGCNRef):
    """LightGCN_plus (RLMRec-Con): total = bpr + reg + kd on the edge-dropped forward.

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
        self._init_con(usr_emb, itm_emb, kd_weight, kd_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss: (total, {"bpr", "reg", "kd"}), each already weighted."""
        out = self.train_forward(anc, pos, neg, uniforms)
        return assemble_loss(self, out, anc, pos, neg, {"kd": self.kd_term(out, anc, pos, neg)})


class LightGCNGeneRef(RLMRecGenMixin, LightGCNRef):
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
        self._init_gen(usr_emb, itm_emb, mask_ratio, recon_weight, recon_temperature)

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
        seeds = self._check_seeds(seeds)
        out = self.train_forward(anc, pos, neg, uniforms, ego_transform=self.masker(seeds))
        return assemble_loss(self, out, anc, pos, neg, {"recon": self.recon_term(out, seeds)})


class LightGCNDaRecRef(DaRecMixin, LightGCNRef):
    """DaRec on LightGCN: DaRec's mixin on the bare class, with its options as constructor
    keywords (``_init_darec``'s: head_dim, lambda_or, lambda_un, lambda_gl, lambda_lo,
    global_kind, global_temperature, local_temperature, num_clusters, local_assign, score_on).

    Parameters in order: ``user_embeds``, ``item_embeds``, then the heads ``cf_specific``,
    ``cf_shared`` (d → d → d_h) and ``llm_specific``, ``llm_shared`` (Ds → (Ds+d_h)//2 → d_h).
    """

    _generic_darec = True

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
        **darec,
    ) -> None:
        super().__init__(n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate)
        self._init_darec(usr_emb, itm_emb, **darec)

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
        """:meth:`DaRecMixin.darec_loss` with the edge-dropout uniforms as the backbone's draw
        (the assignments and subsets as :meth:`DaRecMixin.darec_terms` takes them)."""
        return self.darec_loss(
            anc,
            pos,
            neg,
            backbone_draws={"uniforms": uniforms},
            user_assign=user_assign,
            item_assign=item_assign,
            user_subset=user_subset,
            item_subset=item_subset,
            user_assign_llm=user_assign_llm,
            item_assign_llm=item_assign_llm,
        )


def _darec(sizes, semantic, options, darec):
    return LightGCNDaRecRef(*sizes, *semantic, **options, **darec)


REFERENCE = ReferenceSpec(
    name="lightgcn",
    classes=lambda: (LightGCNRef, LightGCNPlusRef, LightGCNGeneRef),
    darec=_darec,
)
