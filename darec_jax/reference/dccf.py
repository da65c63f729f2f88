"""DCCF of the PyTorch reference and its RLMRec variants (docs/backbones.md §2.5, §3, Q8–Q10).

* :class:`DCCFRef`     — bare DCCF: total = bpr + reg + cl.
* :class:`DCCFPlusRef` — DCCF_plus (RLMRec-Con): total = bpr + reg + cl + kd.
* :class:`DCCFGeneRef` — DCCF_gene (RLMRec-Gen): total = bpr + reg + cl + recon, every term on the
  forward from the NodeMask-ed E^{(0)}.

Graph: the directed edge list ℰ = every training interaction in both directions, sorted by
(head, tail) (row-major CSR order); static weights G_e = deg(h_e)^{-1/2}·deg(t_e)^{-1/2} computed
in float32. Sparse propagation with edge weights w is out_n = Σ_{e: h_e = n} w_e · X_{t_e}
(:func:`edge_propagate`, an ``index_add`` so that gradients reach w).

Layer l (X = E^{(l)}): Z = G ⊗ X; R = [softmax_rows(X_u W_U) W_Uᵀ ; softmax_rows(X_i W_I) W_Iᵀ];
Aga = W(α from Z) ⊗ X; Aia = W(α from R) ⊗ X (:func:`adaptive_weights`, differentiable, Q10);
E^{(l+1)} = Z + R + Aga + Aia + X in that order. F = Σ_{l=0}^{L} E^{(l)} (stack, sum).

DCCF draws no random numbers, so ``cal_loss`` is deterministic given the batch (the Gen variant
takes its NodeMask seeds as an argument). Like :class:`LightGCNRef` there is no ``final_embeds``
cache: :meth:`DCCFRef.eval_embeddings` always recomputes the clean forward (Q23).

Generic interface (``reference/variants.py``, shared with GCCF / SGL / SimGCL, so that other
losses, e.g. DaRec, can be attached to any backbone): ``final_dim`` = d and
:meth:`DCCFRef.train_forward` returns a :class:`BackboneOutput` — the final embeddings that feed
BPR plus the backbone's own weighted extra terms ({"cl": …}); ``cal_loss`` is
:func:`assemble_loss`: bpr + reg + cl (+ the variant's kd / recon), left to right (Q13).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from darec_jax.reference.losses import cal_infonce
from darec_jax.reference.spec import ReferenceSpec
from darec_jax.reference.variants import (
    BackboneOutput,
    EgoTransform,
    RLMRecConMixin,
    RLMRecGenMixin,
    assemble_loss,
    zero_term,
)

__all__ = [
    "DCCFGeneRef",
    "DCCFPlusRef",
    "DCCFRef",
    "adaptive_weights",
    "dccf_edges",
    "edge_propagate",
]


def dccf_edges(adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DCCF's directed edge list and static weights from the bipartite adjacency's index set.

    Args:
        adj: (N, N) sparse COO whose stored entries are the directed edges (u, U+i), (U+i, u) of
            every training interaction (e.g. :func:`normalized_adjacency`; its values are unused).

    Returns:
        (heads int64 [E], tails int64 [E], G float32 [E]): edges sorted by (head, tail);
        G_e = fl32(deg(h_e)^{-1/2} · deg(t_e)^{-1/2}) with deg(n) = #edges with head n and
        deg^{-1/2} computed in float32 (the reference's (D^{-1/2}·A)·D^{-1/2} on GPU).
    """
    coalesced = adj.coalesce()  # sorted by (row, col)
    heads, tails = coalesced.indices()[0].clone(), coalesced.indices()[1].clone()
    n_nodes = adj.shape[0]
    degree = torch.bincount(heads, minlength=n_nodes).to(torch.float32)  # [N]
    d_inv_sqrt = degree.pow(-0.5)  # inf on isolated nodes, never gathered
    weights = (d_inv_sqrt[heads] * 1.0) * d_inv_sqrt[tails]
    return heads, tails, weights


def edge_propagate(
    weights: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """Weighted sparse propagation out_n = Σ_{e: h_e = n} w_e · X_{t_e}, differentiable in w and X.

    Args:
        weights: [E] edge weights w.
        heads: int64 [E] h_e.
        tails: int64 [E] t_e.
        x: [N, d] X.

    Returns:
        [N, d]; rows with no outgoing edge are 0.
    """
    out = torch.zeros(x.shape[0], x.shape[1], dtype=x.dtype)
    return out.index_add(0, heads, weights[:, None] * x[tails])


def adaptive_weights(y: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
    """DCCF's adaptive edge weights from a source matrix Y (§2.5 step 3, Q10). Nothing detached.

        Ŷ = F.normalize(Y) (eps 1e-12), α_e = (Ŷ_{h_e}·Ŷ_{t_e} + 1) / 2,
        S_n = Σ_{e: h_e = n} α_e, w_e = α_e · (1/S_{h_e}) with 1/S := 0 where inf or NaN.

    Args:
        y: [N, d] Y (Z for the graph-adaptive view, R for the intent-adaptive view).
        heads: int64 [E] h_e.
        tails: int64 [E] t_e.

    Returns:
        [E] w, row-stochastic over each node's outgoing edges.
    """
    yn = F.normalize(y, p=2.0, dim=1, eps=1e-12)
    alpha = ((yn[heads] * yn[tails]).sum(dim=-1) + 1.0) / 2.0  # [E]
    row_sum = torch.zeros(y.shape[0], dtype=y.dtype).index_add(0, heads, alpha)  # [N]
    inv = 1.0 / row_sum
    inv = torch.where(torch.isinf(inv) | torch.isnan(inv), torch.zeros_like(inv), inv)
    return alpha * inv[heads]


class DCCFRef(nn.Module):
    """Bare DCCF (§2.5).

    Parameters: ``user_embeds.weight`` [U, d], ``item_embeds.weight`` [I, d] (nn.Embedding,
    re-initialised Xavier-uniform), ``user_intent`` W_U [d, K], ``item_intent`` W_I [d, K]
    (Xavier-uniform, bound sqrt(6/(d+K))), assigned in that order; ``model.parameters()`` (hence
    reg's summation order) lists the module's own ``user_intent``, ``item_intent`` first and the
    two nn.Embedding tables after them, as torch does for the reference's module too.

    Args:
        n_users: U.
        n_items: I.
        adj: (N, N) sparse COO of the bipartite graph (its index set defines ℰ; see
            :func:`dccf_edges`).
        embedding_size: d.
        layer_num: L (amazon / yelp / steam: 2 / 2 / 3).
        intent_num: K.
        reg_weight: weight of Σ‖P‖² (amazon / yelp / steam: 1e-4 / 1e-4 / 1e-3).
        cl_weight: weight of the per-layer contrast (0 skips it).
        cl_temperature: τ of the contrast (key ``temperature`` in dccf, ``cl_temperature`` in
            the variants).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 2,
        intent_num: int = 128,
        reg_weight: float = 1e-4,
        cl_weight: float = 1e-3,
        cl_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        n_nodes = n_users + n_items
        if tuple(adj.shape) != (n_nodes, n_nodes):
            raise ValueError(f"adj must be ({n_nodes}, {n_nodes}), got {tuple(adj.shape)}")
        self.n_users = n_users
        self.n_items = n_items
        self.embedding_size = embedding_size
        self.layer_num = layer_num
        self.intent_num = intent_num
        self.reg_weight = reg_weight
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.final_dim = embedding_size
        self.heads, self.tails, self.graph_weights = dccf_edges(adj)
        self.user_embeds = nn.Embedding(n_users, embedding_size)
        self.item_embeds = nn.Embedding(n_items, embedding_size)
        nn.init.xavier_uniform_(self.user_embeds.weight)
        nn.init.xavier_uniform_(self.item_embeds.weight)
        self.user_intent = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(embedding_size, intent_num, dtype=torch.float32))
        )
        self.item_intent = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(embedding_size, intent_num, dtype=torch.float32))
        )

    def ego(self) -> torch.Tensor:
        """E0 = [E_u ; E_i], [N, d]."""
        return torch.cat([self.user_embeds.weight, self.item_embeds.weight], dim=0)

    def intent(self, x: torch.Tensor) -> torch.Tensor:
        """R = [softmax_rows(X_u W_U) W_Uᵀ ; softmax_rows(X_i W_I) W_Iᵀ] [N, d], softmax over K."""
        xu, xi = x[: self.n_users], x[self.n_users :]
        ru = torch.softmax(xu @ self.user_intent, dim=1) @ self.user_intent.T  # [U, d]
        ri = torch.softmax(xi @ self.item_intent, dim=1) @ self.item_intent.T  # [I, d]
        return torch.cat([ru, ri], dim=0)

    def layer(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One DCCF layer from its input X = E^{(l)}.

        Returns:
            (E^{(l+1)} = Z + R + Aga + Aia + X, (Z, R, Aga, Aia)), each [N, d].
        """
        h, t = self.heads, self.tails
        z = edge_propagate(self.graph_weights, h, t, x)
        r = self.intent(x)
        aga = edge_propagate(adaptive_weights(z, h, t), h, t, x)
        aia = edge_propagate(adaptive_weights(r, h, t), h, t, x)
        return z + r + aga + aia + x, (z, r, aga, aia)

    def propagate(
        self, ego: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """L DCCF layers from E^{(0)} = ``ego``.

        Returns:
            (F [N, d] = Σ_{l=0}^{L} E^{(l)} (stacked, summed over the layer axis),
             [(Z, R, Aga, Aia) of layer l for l = 0..L−1]).
        """
        layers = [ego]
        views = []
        for _ in range(self.layer_num):
            nxt, parts = self.layer(layers[-1])
            layers.append(nxt)
            views.append(parts)
        return torch.stack(layers, dim=0).sum(dim=0), views

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean forward from the unmasked E0: (F_u [U, d], F_i [I, d])."""
        final, _ = self.propagate(self.ego())
        return final[: self.n_users], final[self.n_users :]

    def cl_loss(self, views: list, anc: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Weighted per-layer contrast cl = cl_weight · Σ_l cl_l (§2.5, Q8, Q9).

        Ub = sorted unique ``anc``, Ib = sorted unique ``pos`` (negatives excluded); with
        Inf(X, Y) = cal_infonce(X, Y, Y, τ) on the rows [Ub] (users) / [U + Ib] (items):

            cl_l = Inf(Z_u,R_u)/|Ub| + Inf(Z_u,Aga_u)/|Ub| + Inf(Z_u,Aia_u)/|Ub|
                 + Inf(Z_i,R_i)/|Ub| + Inf(Z_i,Aga_i)/|Ub| + Inf(Z_i,Aia_i)/|Ub|

        (every term, item terms too, divided by the number of unique *users*).

        Returns:
            Scalar cl_weight · Σ_l cl_l (layers accumulated from 0, then weighted).
        """
        users = torch.unique(anc)  # sorted
        items = torch.unique(pos) + self.n_users
        n_unique = users.shape[0]
        tau = self.cl_temperature
        total = torch.zeros((), dtype=torch.float32)
        for z, r, aga, aia in views:
            cl_l = torch.zeros((), dtype=torch.float32)
            for rows in (users, items):
                zr = z[rows]
                for other in (r, aga, aia):
                    cl_l = cl_l + cal_infonce(zr, other[rows], other[rows], tau) / n_unique
            total = total + cl_l
        return self.cl_weight * total

    def train_forward(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        ego_transform: EgoTransform | None = None,
    ) -> BackboneOutput:
        """The training forward and the backbone's own extra terms (generic backbone interface).

        DCCF draws nothing, so there are no draw arguments.

        Args:
            anc: int64 [B] user ids (the contrast uses their sorted unique set).
            pos: int64 [B] positive item ids (likewise).
            neg: int64 [B] negative item ids (unused here: BPR only; kept for the interface).
            ego_transform: maps E0 [N, d] to the E^{(0)} actually propagated (the Gen variant's
                NodeMask); None propagates E0 itself.

        Returns:
            BackboneOutput(F_u [U, d], F_i [I, d], {"cl": weighted cl}); cl is an exact 0 (and
            nothing is computed) when cl_weight == 0.
        """
        del neg
        ego = self.ego()
        if ego_transform is not None:
            ego = ego_transform(ego)
        final, views = self.propagate(ego)
        cl = zero_term() if self.cl_weight == 0 else self.cl_loss(views, anc, pos)
        return BackboneOutput(final[: self.n_users], final[self.n_users :], {"cl": cl})

    def cal_loss(
        self, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss: total = bpr + reg + cl (deterministic; DCCF draws nothing).

        Args:
            anc, pos, neg: int64 [B] ids.

        Returns:
            (total, {"bpr", "reg", "cl"}), each term already weighted.
        """
        return assemble_loss(self, self.train_forward(anc, pos, neg), anc, pos, neg)

    def eval_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean eval forward (unmasked E0): (F_u [U, d], F_i [I, d])."""
        return self.forward()

    def full_predict(self, users: torch.Tensor) -> torch.Tensor:
        """[B, I] scores f_u · g_i of ``users`` against all items (clean forward)."""
        user_final, item_final = self.eval_embeddings()
        return user_final[users] @ item_final.T


class DCCFPlusRef(RLMRecConMixin, DCCFRef):
    """DCCF_plus (RLMRec-Con, §3.1): total = bpr + reg + cl + kd, kd on the final F.

    Parameters in ``model.parameters()`` order: ``user_intent``, ``item_intent``,
    ``user_embeds.weight``, ``item_embeds.weight`` (torch lists a module's own parameters before
    its submodules'), then ``mlp`` (Ds → (Ds+d)//2 → d).

    Args:
        n_users, n_items, adj, embedding_size, layer_num, intent_num, reg_weight, cl_weight,
            cl_temperature: as :class:`DCCFRef` (amazon defaults; steam: L 3, reg 1e-3).
        usr_emb: [U, Ds] semantic user embeddings (float32 buffer).
        itm_emb: [I, Ds] semantic item embeddings.
        kd_weight: w of the kd term (0 skips it).
        kd_temperature: τ_kd (amazon / yelp / steam: 0.5 / 0.2 / 0.5).
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
        intent_num: int = 128,
        reg_weight: float = 1e-4,
        cl_weight: float = 1e-3,
        cl_temperature: float = 0.1,
        kd_weight: float = 1e-2,
        kd_temperature: float = 0.5,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            adj,
            embedding_size,
            layer_num,
            intent_num,
            reg_weight,
            cl_weight,
            cl_temperature,
        )
        self._init_con(usr_emb, itm_emb, kd_weight, kd_temperature)

    def cal_loss(
        self, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss.

        Args:
            anc, pos, neg: int64 [B] ids.

        Returns:
            (total, {"bpr", "reg", "cl", "kd"}), each already weighted;
            total = bpr + reg + cl + kd.
        """
        out = self.train_forward(anc, pos, neg)
        return assemble_loss(self, out, anc, pos, neg, {"kd": self.kd_term(out, anc, pos, neg)})


class DCCFGeneRef(RLMRecGenMixin, DCCFRef):
    """DCCF_gene (RLMRec-Gen, §3.2): total = bpr + reg + cl + recon on the masked forward.

    The NodeMask-ed E^{(0)} feeds DCCF's forward; bpr, the per-layer contrast (its Z/R/Aga/Aia)
    and recon all use that forward. Parameters in ``model.parameters()`` order: ``user_intent``,
    ``item_intent``, ``masker_token`` [1, d] (zeros; named as in :class:`LightGCNGeneRef`),
    ``user_embeds.weight``, ``item_embeds.weight``, ``mlp`` (d → (Ds+d)//2 → Ds).

    Args:
        n_users, n_items, adj, embedding_size, layer_num, intent_num, reg_weight, cl_weight,
            cl_temperature: as :class:`DCCFRef` (amazon defaults).
        usr_emb, itm_emb: semantic embeddings [U, Ds], [I, Ds].
        mask_ratio: M = max(floor(N·mask_ratio), 1) seeds per step (amazon / yelp / steam:
            0.05 / 0.05 / 0.1).
        recon_weight: w of recon (0.1 / 0.01 / 0.01; 0 skips it).
        recon_temperature: τ_re (0.2 / 0.1 / 0.2).
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
        intent_num: int = 128,
        reg_weight: float = 1e-4,
        cl_weight: float = 1e-3,
        cl_temperature: float = 0.1,
        mask_ratio: float = 0.05,
        recon_weight: float = 0.1,
        recon_temperature: float = 0.2,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            adj,
            embedding_size,
            layer_num,
            intent_num,
            reg_weight,
            cl_weight,
            cl_temperature,
        )
        self._init_gen(usr_emb, itm_emb, mask_ratio, recon_weight, recon_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the forward from the masked E^{(0)}.

        Args:
            anc, pos, neg: int64 [B] ids.
            seeds: int64 [M] distinct global node ids to mask (users 0..U-1, item j = U + j).

        Returns:
            (total, {"bpr", "reg", "cl", "recon"}), each already weighted;
            total = bpr + reg + cl + recon.
        """
        seeds = self._check_seeds(seeds)
        out = self.train_forward(anc, pos, neg, ego_transform=self.masker(seeds))
        return assemble_loss(self, out, anc, pos, neg, {"recon": self.recon_term(out, seeds)})


REFERENCE = ReferenceSpec(name="dccf", classes=lambda: (DCCFRef, DCCFPlusRef, DCCFGeneRef))
