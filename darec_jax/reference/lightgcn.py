"""LightGCN of the PyTorch reference (BACKBONES.md §2.2, with §1.3, §1.6 and §1.7).

Training forward over an edge-dropped Ã (uniforms injectable), eval forward over the full Â,
F = Σ_{l=0}^{L} E^{(l)} with E^{(l)} = Ã E^{(l-1)}, BPR averaged over the batch plus an
un-averaged L2 term over every parameter. Unlike the reference there is no ``final_embeds``
cache: ``full_predict`` always recomputes a clean forward (the reference's normal flow gives the
same numbers; its cache only adds stale-state traps, Q23).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from darec_jax.reference.spec import ReferenceSpec


def bpr_loss_sum(anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Σ_b softplus(s⁻_b − s⁺_b) with s⁺_b = a_b·p_b, s⁻_b = a_b·n_b (sum, not mean; §1.7).

    Args:
        anc: [B, d] anchor (user) embeddings.
        pos: [B, d] positive item embeddings.
        neg: [B, d] negative item embeddings.

    Returns:
        Scalar. torch's default softplus: log(1 + eˣ), and exactly x where x > 20.
    """
    pos_scores = (anc * pos).sum(dim=-1)  # [B]
    neg_scores = (anc * neg).sum(dim=-1)  # [B]
    return F.softplus(neg_scores - pos_scores).sum()


def reg_params(model: nn.Module) -> torch.Tensor:
    """Σ_P ‖P‖² over every parameter of ``model`` (squared Frobenius norm; §1.7)."""
    reg = torch.zeros((), dtype=torch.float32)
    for param in model.parameters():
        reg = reg + param.norm(2).square()
    return reg


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
        dropped = self.edge_drop(self.adj, uniforms)
        user_final, item_final = self.forward(dropped)
        batch = anc.shape[0]
        bpr = bpr_loss_sum(user_final[anc], item_final[pos], item_final[neg]) / batch
        reg = self.reg_weight * reg_params(self)
        total = bpr + reg
        return total, {"bpr": bpr, "reg": reg}

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


def _variants():
    from darec_jax.reference.methods import LightGCNGeneRef, LightGCNPlusRef

    return LightGCNRef, LightGCNPlusRef, LightGCNGeneRef


def _darec(sizes, semantic, options, darec):
    from darec_jax.reference.methods import LightGCNDaRecRef

    return LightGCNDaRecRef(*sizes, *semantic, **options, **darec)


# The variants live in reference/methods.py (which builds on this file).
REFERENCE = ReferenceSpec(name="lightgcn", classes=_variants, darec=_darec)
