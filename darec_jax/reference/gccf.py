"""GCCF of the PyTorch reference and its RLMRec variants (docs/backbones.md §2.1, §3, Q1, Q2).

* :class:`GCCFRef`     — ``gccf``: propagation over the self-loop Â_sl (Q1).
* :class:`GCCFPlusRef` — ``gccf_plus`` (RLMRec-Con) over Â **without** self-loops.
* :class:`GCCFGeneRef` — ``gccf_gene`` (RLMRec-Gen) over Â without self-loops.

Forward: E^{(0)} = E0 = [E_u ; E_i], E^{(l)} = Â E^{(l-1)} for l = 1..L (no weight matrix, no
nonlinearity), F = [E^{(0)} ‖ E^{(1)} ‖ … ‖ E^{(L)}] ∈ R^{N×(L+1)d} (a feature concatenation).
The per-layer W_l ∈ R^{d×d} are parameters (Xavier) that propagation never uses; they only enter
reg, so their gradient is 2·reg_weight·W_l (Q2). There is no augmentation and nothing is drawn;
training and eval forwards are the same. No ``final_embeds`` cache (see lightgcn.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from darec_jax.reference.spec import ReferenceSpec
from darec_jax.reference.variants import (
    BackboneOutput,
    EgoTransform,
    RLMRecConMixin,
    RLMRecGenMixin,
    assemble_loss,
    ego_embeddings,
)

__all__ = ["GCCFGeneRef", "GCCFPlusRef", "GCCFRef", "propagate_concat"]


def propagate_concat(adj: torch.Tensor, ego: torch.Tensor, layer_num: int) -> torch.Tensor:
    """GCCF propagation: F = [E^{(0)} ‖ … ‖ E^{(L)}], E^{(l)} = adj·E^{(l-1)}, E^{(0)} = ego.

    Args:
        adj: (N, N) sparse COO.
        ego: [N, d] E^{(0)}.
        layer_num: L.

    Returns:
        [N, (L+1)·d] F; columns l·d..(l+1)·d−1 hold E^{(l)}.
    """
    layers = [ego]
    for _ in range(layer_num):
        layers.append(torch.sparse.mm(adj, layers[-1]))
    return torch.cat(layers, dim=1)


class GCCFRef(nn.Module):
    """GCCF (``gccf``): total = bpr + reg on the concatenated F.

    Parameters in order: ``user_embeds`` [U, d], ``item_embeds`` [I, d] (Xavier), then
    ``layer_weight_1`` … ``layer_weight_L`` [d, d] (W_l: Xavier, unused by propagation, Q2).

    Hyper-parameters (amazon / yelp / steam): L = 2/2/2, reg_weight = 1e-6/1e-6/1e-6.

    Args:
        n_users: U.
        n_items: I.
        adj: (N, N) float32 sparse COO from :func:`normalized_adjacency`, N = U + I; with
            ``self_loops=True`` it must be Â_sl (built with ``self_loops=True``).
        embedding_size: d.
        layer_num: L.
        reg_weight: weight of Σ‖P‖² (covers the unused W_l).
        self_loops: True (the bare ``gccf``) requires ``adj`` to store all N diagonal entries,
            False (the variants, Q1) requires it to store none. Checked, to catch a wrong graph.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 2,
        reg_weight: float = 1e-6,
        self_loops: bool = True,
    ) -> None:
        super().__init__()
        n_nodes = n_users + n_items
        if tuple(adj.shape) != (n_nodes, n_nodes):
            raise ValueError(f"adj must be ({n_nodes}, {n_nodes}), got {tuple(adj.shape)}")
        indices = adj._indices()  # [2, E], stored entries (coalesced or not)
        n_diag = int((indices[0] == indices[1]).sum())
        expected = n_nodes if self_loops else 0
        if n_diag != expected:
            which = "Â_sl (self_loops=True)" if self_loops else "Â without self-loops (Q1)"
            raise ValueError(
                f"adj must be {which}: expected {expected} stored diagonal entries, got {n_diag}"
            )
        self.n_users = n_users
        self.n_items = n_items
        self.adj = adj
        self.embedding_size = embedding_size
        self.layer_num = layer_num
        self.reg_weight = reg_weight
        self.self_loops = self_loops
        self.final_dim = (layer_num + 1) * embedding_size
        # Xavier-uniform, bound sqrt(6 / (rows + cols)) (§1.6).
        self.user_embeds = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_users, embedding_size, dtype=torch.float32))
        )
        self.item_embeds = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_items, embedding_size, dtype=torch.float32))
        )
        # W_1..W_L as direct parameters (not a ParameterList, which is a submodule and would be
        # listed after a variant's direct ``masker_token``), so that model.parameters() runs
        # E_u, E_i, W_1..W_L, then the variant's token and MLP.
        for layer in range(1, layer_num + 1):
            weight = torch.empty(embedding_size, embedding_size, dtype=torch.float32)
            self.register_parameter(
                f"layer_weight_{layer}", nn.Parameter(nn.init.xavier_uniform_(weight))
            )

    @property
    def layer_weights(self) -> list[nn.Parameter]:
        """[W_1, …, W_L], each [d, d] (parameters ``layer_weight_1`` … ``layer_weight_L``)."""
        return [getattr(self, f"layer_weight_{layer}") for layer in range(1, self.layer_num + 1)]

    def forward(
        self, ego_transform: EgoTransform | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Concatenated propagation over ``self.adj``: (F_u [U, (L+1)d], F_i [I, (L+1)d])."""
        final = propagate_concat(self.adj, ego_embeddings(self, ego_transform), self.layer_num)
        return final[: self.n_users], final[self.n_users :]

    def train_forward(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        ego_transform: EgoTransform | None = None,
    ) -> BackboneOutput:
        """The training forward of one step (GCCF has no augmentation and no extra term).

        Args:
            anc, pos, neg: int64 [B] ids (unused; kept for the common backbone signature).
            ego_transform: applied to E0 before propagation (RLMRec-Gen's NodeMask).

        Returns:
            BackboneOutput(F_u [U, (L+1)d], F_i [I, (L+1)d], {}).
        """
        user_final, item_final = self.forward(ego_transform)
        return BackboneOutput(user_final, item_final, {})

    def cal_loss(
        self, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss over one batch: total = bpr + reg (nothing is drawn).

        Args:
            anc: int64 [B] user ids.
            pos: int64 [B] positive item ids in [0, I).
            neg: int64 [B] negative item ids in [0, I).

        Returns:
            (total, {"bpr", "reg"}), each already weighted.
        """
        return assemble_loss(self, self.train_forward(anc, pos, neg), anc, pos, neg)

    def eval_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval forward (the same as training): (F_u [U, (L+1)d], F_i [I, (L+1)d])."""
        return self.forward()

    def full_predict(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [B, I] of ``users`` against all items (training items not masked here)."""
        user_final, item_final = self.eval_embeddings()
        return user_final[users] @ item_final.T


class GCCFPlusRef(RLMRecConMixin, GCCFRef):
    """GCCF_plus (RLMRec-Con): total = bpr + reg + kd on the 96-d (L = 2) concatenated F.

    ``adj`` is Â **without** self-loops (Q1). Parameters in order: ``user_embeds``,
    ``item_embeds``, ``layer_weight_1..L``, ``mlp`` (Ds → (Ds+(L+1)d)//2 → (L+1)d; 1536 → 816 → 96).

    Hyper-parameters (amazon / yelp / steam): L = 2/2/2, reg_weight = 1e-6 (all),
    kd_weight = 1e-3/1e-3/1e-2, kd_temperature = 0.1/0.2/0.5.

    Args:
        n_users, n_items, embedding_size, layer_num, reg_weight: as GCCFRef.
        adj: Â without self-loops (checked).
        usr_emb: [U, Ds] semantic user embeddings (stored as a float32 buffer).
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
        layer_num: int = 2,
        reg_weight: float = 1e-6,
        kd_weight: float = 1e-3,
        kd_temperature: float = 0.1,
    ) -> None:
        super().__init__(
            n_users, n_items, adj, embedding_size, layer_num, reg_weight, self_loops=False
        )
        self._init_con(usr_emb, itm_emb, kd_weight, kd_temperature)

    def cal_loss(
        self, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss (nothing is drawn).

        Returns:
            (total, {"bpr", "reg", "kd"}), each already weighted; total = bpr + reg + kd.
        """
        out = self.train_forward(anc, pos, neg)
        return assemble_loss(self, out, anc, pos, neg, {"kd": self.kd_term(out, anc, pos, neg)})


class GCCFGeneRef(RLMRecGenMixin, GCCFRef):
    """GCCF_gene (RLMRec-Gen): total = bpr + reg + recon on the masked forward over Â.

    ``adj`` is Â **without** self-loops (Q1). Parameters in order: ``user_embeds``,
    ``item_embeds``, ``layer_weight_1..L``, ``masker_token`` [1, d] (zeros), ``mlp``
    ((L+1)d → (Ds+(L+1)d)//2 → Ds; 96 → 816 → 1536).

    Hyper-parameters (amazon / yelp / steam): L = 2/2/2, reg_weight = 1e-7/1e-6/1e-6,
    mask_ratio = 0.1/0.05/0.1, recon_weight = 0.01 (all), recon_temperature = 0.1/1.0/0.1.

    Args:
        n_users, n_items, embedding_size, layer_num, reg_weight: as GCCFRef.
        adj: Â without self-loops (checked).
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
        mask_ratio: float = 0.1,
        recon_weight: float = 0.01,
        recon_temperature: float = 0.1,
    ) -> None:
        super().__init__(
            n_users, n_items, adj, embedding_size, layer_num, reg_weight, self_loops=False
        )
        self._init_gen(usr_emb, itm_emb, mask_ratio, recon_weight, recon_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the masked forward.

        Args:
            anc, pos, neg: int64 [B] ids.
            seeds: int64 [M] distinct global node ids to mask (users 0..U-1, item j = U + j).
                Required.

        Returns:
            (total, {"bpr", "reg", "recon"}), each already weighted; total = bpr + reg + recon.
        """
        seeds = self._check_seeds(seeds)
        out = self.train_forward(anc, pos, neg, ego_transform=self.masker(seeds))
        return assemble_loss(self, out, anc, pos, neg, {"recon": self.recon_term(out, seeds)})


REFERENCE = ReferenceSpec(name="gccf", classes=lambda: (GCCFRef, GCCFPlusRef, GCCFGeneRef))
