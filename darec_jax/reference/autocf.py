"""AutoCF of the PyTorch reference, its RLMRec variants and its trainer (docs/backbones.md §2.6, §3,
Q14–Q20).

* :class:`AutoCFRef`     — bare AutoCF: cal_loss total = rec + reg + cl.
* :class:`AutoCFPlusRef` — AutoCF_plus (RLMRec-Con): rec + reg + cl + kd (no negative-item term).
* :class:`AutoCFGeneRef` — AutoCF_gene (RLMRec-Gen): rec + reg + cl + recon on the forward from the
  NodeMask-ed E0 (mask token ``gene_masker.mask_token``).
* :class:`AutoCFDaRecRef` — DaRec on AutoCF: rec + reg + cl + the four DaRec terms.
* :class:`AutoCFTrainer` — the trainer behaviour: at step i of an epoch (i resets every epoch) with
  i % fix_steps == 0 it first resamples the masked subgraph (:meth:`AutoCFRef.resample`), then
  computes ``cal_loss`` on the current graphs and, on resample steps only, adds the infomax term
  last: total = rec + reg + cl (+ kd / recon) + infomax (Q13, Q16).

A resample (every ``fix_steps`` steps, with the current parameters, before the loss):

(a) :meth:`AutoCFRef.local_graph` — seed scores from the *unmasked* E0 and the 0/1 adjacency A1,
    Gumbel noise from the injected uniforms u [N], seeds S0 = top ``seed_num`` of the noisy scores,
    infomax = −mean_n noisy_n (differentiable through log σ).
(b) :meth:`AutoCFRef.build_graph` — ``mask_depth``-hop removal of the edges around S0 on Â's
    index list (encoder edges ℰ_enc, original order), the extra random nodes Q [sampNum], the mask
    set M = sorted unique(S0 ∪ S1 ∪ Q), the encoder values re-normalised on ℰ_enc in float32, and
    the decoder edges: sorted unique hashes of the random pairs (M[j], M[j']) both ways, all
    self-loops and ℰ_enc.

Every draw is injectable: :meth:`AutoCFRef.resample` takes ``gumbel_u`` float32 [N], ``q`` int64
[sampNum] in [0, N), ``j`` and ``j2`` int64 [E] in [0, |M|) (E = Â's stored-entry count); any
left None is drawn from the global torch CPU generator in the reference's order (rand(N),
randint(N), randint(|M|), randint(|M|)). |M| depends on the first two draws: get it from
:meth:`AutoCFRef.mask_nodes`. The edge sets are variable-size here (the JAX side pads); all of
them are exposed by :class:`AutoCFGraph`.

Training forward: X^{(0)} = E0 (masked in gene), X^{(l)} = Ã_enc X^{(l−1)} for l = 1..gcn_layer,
then X^{(L+g)} = GT_g(decoder edges, X^{(L+g−1)}); F = Σ of all X, left to right. Eval: encoder
= the full Â and the GT layers on Â's own index list (Q17). There is no cache.

Generic interface (``reference/variants.py``, shared with the other backbones): ``final_dim`` =
d; :meth:`AutoCFRef.train_forward` returns a :class:`BackboneOutput` — the final embeddings the
recommendation loss scores plus the backbone's own weighted extra terms ({"cl": …}). Unlike the
BPR backbones, the recommendation term is AutoCF's rec (:meth:`AutoCFRef.rec_loss`, negatives
ignored, Q14), so totals are assembled by :meth:`AutoCFRef.assemble_loss` (same contract as
:func:`darec_jax.reference.variants.assemble_loss`, with "rec" in place of "bpr").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from darec_jax.reference.darec import DaRecMixin
from darec_jax.reference.losses import AlignMLP, node_mask, reg_params, rlmrec_con_kd
from darec_jax.reference.spec import ReferenceSpec, StepRunner
from darec_jax.reference.train import _batches_vectorised, make_optimizer, sample_negatives
from darec_jax.reference.variants import (
    BackboneOutput,
    EgoTransform,
    RLMRecConMixin,
    RLMRecGenMixin,
    register_semantic,
    zero_term,
)

__all__ = [
    "AutoCFDaRecRef",
    "AutoCFDraws",
    "AutoCFGeneRef",
    "AutoCFGraph",
    "AutoCFPlusRef",
    "AutoCFRef",
    "AutoCFTrainer",
    "GTLayer",
    "NodeMasker",
    "decode_edge_hashes",
    "is_resample_step",
]


class AutoCFGraph(NamedTuple):
    """The graphs of one resample, for the given draws (all int64 unless stated).

    Attributes:
        local_seeds: [seed_num] S0 (global ids, in top-k order).
        hop_nodes: (S1, …, S_{mask_depth−1}); S_{k+1} = sorted unique endpoints of the edges
            removed at depth k (just (S1,) for mask_depth = 2).
        mask_nodes: M = sorted unique(S0 ∪ S1 ∪ … ∪ Q).
        enc_rows, enc_cols: [E_enc] surviving edges ℰ_enc, in Â's storage order.
        enc_values: float32 [E_enc] c_{h}·c_{t}, c_n = (deg'_n + 1e-12)^{-1/2} on ℰ_enc.
        dec_rows, dec_cols: [E_dec] decoder edges in ascending hash order (row·N + col).
    """

    local_seeds: torch.Tensor
    hop_nodes: tuple[torch.Tensor, ...]
    mask_nodes: torch.Tensor
    enc_rows: torch.Tensor
    enc_cols: torch.Tensor
    enc_values: torch.Tensor
    dec_rows: torch.Tensor
    dec_cols: torch.Tensor


class AutoCFDraws(NamedTuple):
    """The random draws of one resample (None = draw from the global torch CPU generator).

    Attributes:
        gumbel_u: float32 [N] U[0,1) (exact zeros become 1e-8).
        q: int64 [sampNum] extra mask nodes in [0, N), with replacement.
        j: int64 [E] indices into M of the first pair ends.
        j2: int64 [E] indices into M of the second pair ends.
    """

    gumbel_u: torch.Tensor | None = None
    q: torch.Tensor | None = None
    j: torch.Tensor | None = None
    j2: torch.Tensor | None = None


def decode_edge_hashes(
    hashes: torch.Tensor, n_nodes: int, fp32_row_decode: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode edge hashes h = row·N + col (int64) into (rows, cols) (§2.6 (b), Q19).

    col = h mod N; row = (h − col) / N exactly, or with ``fp32_row_decode`` the reference's CUDA
    rounding trunc(fl32(fl32(h − col) · fl32(1/N))) (wrong by one for some rows when N = 20332).

    Returns:
        (rows, cols) int64, aligned with ``hashes``.
    """
    cols = hashes % n_nodes
    if fp32_row_decode:
        inv_n = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(
            float(n_nodes), dtype=torch.float32
        )
        rows = ((hashes - cols).to(torch.float32) * inv_n).to(torch.int64)  # truncation
    else:
        rows = (hashes - cols) // n_nodes
    return rows, cols


def is_resample_step(step_in_epoch: int, fix_steps: int) -> bool:
    """Whether step i of an epoch (i = 0, 1, …, reset every epoch) resamples: i % fix_steps == 0."""
    return step_in_epoch % fix_steps == 0


class GTLayer(nn.Module):
    """AutoCF's graph-transformer layer (§2.6 (c), Q20) on an edge list (r_e, c_e).

    q_e = X_{r_e} Wq, k_e = X_{c_e} Wk, v_e = X_{c_e} Wv, split into H contiguous heads of d/H;
    s_{e,h} = clamp(q_{e,h}·k_{e,h}, −10, 10) (no 1/sqrt(dh)); a_{e,h} = exp(s_{e,h}) /
    (Σ_{e': r_{e'} = r_e} exp(s_{e',h}) + 1e-8); out_n = concat_h Σ_{e: r_e = n} a_{e,h} v_{e,h}.
    No residual, projection, activation or normalisation; nodes with no edge get 0.

    Parameters in order: ``qTrans``, ``kTrans``, ``vTrans`` [d, d], Xavier-uniform, used as X·W.

    Args:
        embedding_size: d.
        head_num: H (d must be divisible by H).
    """

    def __init__(self, embedding_size: int, head_num: int) -> None:
        super().__init__()
        if embedding_size % head_num:
            raise ValueError(f"embedding_size {embedding_size} not divisible by {head_num} heads")
        self.head_num = head_num

        def xavier() -> nn.Parameter:
            shape = (embedding_size, embedding_size)
            return nn.Parameter(nn.init.xavier_uniform_(torch.empty(shape, dtype=torch.float32)))

        self.qTrans = xavier()
        self.kTrans = xavier()
        self.vTrans = xavier()

    def forward(self, rows: torch.Tensor, cols: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[N, d] → [N, d] over the edges (rows[e], cols[e]) (row = target, col = source)."""
        n_nodes, d = x.shape
        heads = self.head_num
        q = (x[rows] @ self.qTrans).view(-1, heads, d // heads)  # [E, H, dh]
        k = (x[cols] @ self.kTrans).view(-1, heads, d // heads)
        v = (x[cols] @ self.vTrans).view(-1, heads, d // heads)
        score = torch.clamp((q * k).sum(dim=-1), -10.0, 10.0)  # [E, H]
        expo = torch.exp(score)
        denom = torch.zeros(n_nodes, heads, dtype=x.dtype).index_add(0, rows, expo)  # [N, H]
        att = expo / (denom[rows] + 1e-8)  # [E, H]
        out = torch.zeros(n_nodes, heads, d // heads, dtype=x.dtype)
        out = out.index_add(0, rows, att[:, :, None] * v)
        return out.reshape(n_nodes, d)


class NodeMasker(nn.Module):
    """NodeMask (§1.5) as a module: parameter ``mask_token`` [1, d], zeros (AutoCF_gene's
    ``gene_masker``). ``forward(ego, seeds)`` = :func:`node_mask`."""

    def __init__(self, embedding_size: int) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, embedding_size, dtype=torch.float32))

    def forward(self, ego: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """[N, d] → [N, d] with the ``seeds`` rows replaced by the token."""
        return node_mask(ego, seeds, self.mask_token)


def _log_sum_exp_dot(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """[n]: log Σ_m exp(x_n · z_m), naive (no max-subtraction; Q15)."""
    return torch.log(torch.exp(x @ z.T).sum(dim=-1))


class AutoCFRef(nn.Module):
    """Bare AutoCF (§2.6).

    Parameters in order: ``user_embeds`` [U, d], ``item_embeds`` [I, d] (Xavier-uniform), then
    ``gtLayers.{g}.qTrans`` / ``kTrans`` / ``vTrans`` [d, d] for g < gt_layer.

    Args:
        n_users: U.
        n_items: I.
        adj: Â, (N, N) float32 sparse COO from :func:`normalized_adjacency` (no self-loops). Its
            storage order is ℰ0's order; its values are the eval encoder.
        embedding_size: d.
        gcn_layer: GCN layers (amazon / yelp / steam: 2 / 3 / 2).
        gt_layer: GT layers.
        head_num: H.
        seed_num: |S0|.
        mask_depth: hops of edge removal around the seeds.
        keep_rate: sampNum = floor(N · keep_rate) extra random mask nodes.
        fix_steps: resample every fix_steps steps (used by :class:`AutoCFTrainer`).
        reg_weight: weight of Σ‖P‖² (1e-6 / 1e-7 / 1e-6).
        ssl_reg: weight of the unique-user and unique-item contrast terms (5 / 2 / 0.5).
        fp32_row_decode: emulate the reference's CUDA float32 row decode of the decoder hashes
            (Q19: row = trunc(fl32(fl32(h − col) · fl32(1/N)))); False decodes exactly.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        embedding_size: int = 32,
        gcn_layer: int = 2,
        gt_layer: int = 1,
        head_num: int = 4,
        seed_num: int = 100,
        mask_depth: int = 2,
        keep_rate: float = 0.2,
        fix_steps: int = 10,
        reg_weight: float = 1e-6,
        ssl_reg: float = 5.0,
        fp32_row_decode: bool = False,
    ) -> None:
        super().__init__()
        n_nodes = n_users + n_items
        if tuple(adj.shape) != (n_nodes, n_nodes):
            raise ValueError(f"adj must be ({n_nodes}, {n_nodes}), got {tuple(adj.shape)}")
        if mask_depth < 1:
            raise ValueError(f"mask_depth must be ≥ 1, got {mask_depth}")
        if seed_num > n_nodes:
            raise ValueError(f"seed_num {seed_num} exceeds the {n_nodes} nodes")
        self.n_users = n_users
        self.n_items = n_items
        self.adj = adj
        self.embedding_size = embedding_size
        self.gcn_layer = gcn_layer
        self.gt_layer = gt_layer
        self.head_num = head_num
        self.seed_num = seed_num
        self.mask_depth = mask_depth
        self.keep_rate = keep_rate
        self.fix_steps = fix_steps
        self.reg_weight = reg_weight
        self.ssl_reg = ssl_reg
        self.fp32_row_decode = fp32_row_decode
        self.final_dim = embedding_size
        indices = adj._indices()
        self.edge_rows = indices[0].clone()  # ℰ0 in Â's storage order
        self.edge_cols = indices[1].clone()
        # A1: Â's index set with all values 1.
        self.adj_ones = torch.sparse_coo_tensor(
            indices,
            torch.ones(indices.shape[1], dtype=torch.float32),
            adj.shape,
            check_invariants=True,
        )
        self.user_embeds = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_users, embedding_size, dtype=torch.float32))
        )
        self.item_embeds = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(n_items, embedding_size, dtype=torch.float32))
        )
        self.gtLayers = nn.ModuleList(GTLayer(embedding_size, head_num) for _ in range(gt_layer))
        # The current training graphs (set by resample; plain attributes, not state).
        self.graph: AutoCFGraph | None = None
        self.enc_adj: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------
    # sizes and the forward
    # ----------------------------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        """N = U + I."""
        return self.n_users + self.n_items

    @property
    def n_edges(self) -> int:
        """E = |ℰ0|, Â's stored (directed) entries = 2·nnz(R)."""
        return int(self.edge_rows.shape[0])

    def samp_num(self) -> int:
        """sampNum = floor(N · keep_rate), the number of extra random mask nodes Q."""
        return int(np.floor(self.n_nodes * self.keep_rate))

    def ego(self) -> torch.Tensor:
        """E0 = [E_u ; E_i], [N, d]."""
        return torch.cat([self.user_embeds, self.item_embeds], dim=0)

    def propagate(
        self,
        ego: torch.Tensor,
        enc_adj: torch.Tensor,
        gt_rows: torch.Tensor,
        gt_cols: torch.Tensor,
    ) -> torch.Tensor:
        """F = X^{(0)} + Σ_l enc_adj^l X^{(0)} + the GT outputs, summed left to right.

        Args:
            ego: [N, d] X^{(0)}.
            enc_adj: (N, N) sparse COO encoder adjacency.
            gt_rows, gt_cols: int64 [E'] the GT layers' edge list.

        Returns:
            [N, d] F.
        """
        layers = [ego]
        for _ in range(self.gcn_layer):
            layers.append(torch.sparse.mm(enc_adj, layers[-1]))
        for gt in self.gtLayers:
            layers.append(gt(gt_rows, gt_cols, layers[-1]))
        return sum(layers)

    def eval_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval forward: encoder Â, GT layers on Â's own index list (no self-loops, Q17).

        Returns:
            (F_u [U, d], F_i [I, d]).
        """
        final = self.propagate(self.ego(), self.adj, self.edge_rows, self.edge_cols)
        return final[: self.n_users], final[self.n_users :]

    def full_predict(self, users: torch.Tensor) -> torch.Tensor:
        """[B, I] scores f_u · g_i of ``users`` against all items (eval forward)."""
        user_final, item_final = self.eval_embeddings()
        return user_final[users] @ item_final.T

    # ----------------------------------------------------------------------------------------
    # (a) seed sampling and (b) subgraph masking
    # ----------------------------------------------------------------------------------------

    def local_graph(
        self, gumbel_u: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """LocalGraph (§2.6 (a)) on the unmasked E0 with the current parameters.

            deg = A1·1 [N, 1], fst = A1 E0 − E0, scd = (A1 fst − fst) − deg ⊙ E0,
            fstNum = deg, scdNum = (A1 deg − deg) − deg,
            sub = (fst + scd) / (fstNum + scdNum + 1e-8),
            score_n = σ(ŝub_n · Ê0_n) (F.normalize, eps 1e-12),
            noisy_n = log score_n − log(−log u_n) (u_n = 0 → 1e-8).

        Args:
            gumbel_u: float32 [N] U[0,1) draws.

        Returns:
            (S0 int64 [seed_num] = topk(noisy) indices, noisy [N], infomax = −mean(noisy)); noisy
            and infomax carry gradients to E_u, E_i through log σ.
        """
        n_nodes = self.n_nodes
        gumbel_u = torch.as_tensor(gumbel_u, dtype=torch.float32)
        if tuple(gumbel_u.shape) != (n_nodes,):
            raise ValueError(f"gumbel_u must be ({n_nodes},), got {tuple(gumbel_u.shape)}")
        ego = self.ego()
        a1 = self.adj_ones
        deg = torch.sparse.mm(a1, torch.ones(n_nodes, 1, dtype=torch.float32))  # [N, 1]
        fst = torch.sparse.mm(a1, ego) - ego
        scd = (torch.sparse.mm(a1, fst) - fst) - deg * ego
        fst_num = deg
        scd_num = (torch.sparse.mm(a1, deg) - deg) - deg
        sub = (fst + scd) / (fst_num + scd_num + 1e-8)
        cos = (F.normalize(sub, p=2.0, dim=1, eps=1e-12) * F.normalize(ego, dim=1, eps=1e-12)).sum(
            dim=-1
        )
        score = torch.sigmoid(cos)  # [N]
        u = torch.where(gumbel_u == 0, torch.full_like(gumbel_u, 1e-8), gumbel_u)
        gumbel = -torch.log(-torch.log(u))
        noisy = torch.log(score) + gumbel
        seeds = torch.topk(noisy.detach(), self.seed_num).indices.to(torch.int64)
        return seeds, noisy, -noisy.mean()

    def mask_nodes(
        self, local_seeds: torch.Tensor, q: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor]:
        """Subgraph masking (§2.6 (b)) on Â's index list: the removed hops and the mask set.

        Depth k = 0..mask_depth−1 removes every remaining edge with head or tail in S_k; for
        k < mask_depth − 1, S_{k+1} = sorted unique endpoints of the edges removed at depth k.
        Equivalently (depth 2) ℰ_enc = {e : h_e, t_e ∉ S0 ∪ S1}.

        Args:
            local_seeds: int64 [seed_num] S0.
            q: int64 [sampNum] extra random nodes in [0, N) (with replacement).

        Returns:
            ((S1, …), keep bool [E] marking ℰ_enc in ℰ0, M = sorted unique(S0 ∪ S1 ∪ … ∪ Q)).
        """
        n_nodes = self.n_nodes
        q = torch.as_tensor(q, dtype=torch.int64)
        if q.ndim != 1 or (q.numel() and (q.min() < 0 or q.max() >= n_nodes)):
            raise ValueError(f"q must be a 1-D int tensor of node ids in [0, {n_nodes})")
        rows, cols = self.edge_rows, self.edge_cols
        keep = torch.ones(rows.shape[0], dtype=torch.bool)
        current = torch.as_tensor(local_seeds, dtype=torch.int64)
        hops: list[torch.Tensor] = []
        for depth in range(self.mask_depth):
            in_set = torch.zeros(n_nodes, dtype=torch.bool)
            in_set[current] = True
            removed = keep & (in_set[rows] | in_set[cols])
            keep = keep & ~removed
            if depth < self.mask_depth - 1:
                current = torch.unique(torch.cat([rows[removed], cols[removed]]))
                hops.append(current)
        mask = torch.unique(torch.cat([torch.as_tensor(local_seeds, dtype=torch.int64), *hops, q]))
        return tuple(hops), keep, mask

    def encoder_values(self, enc_rows: torch.Tensor, enc_cols: torch.Tensor) -> torch.Tensor:
        """float32 [E_enc] (1·c_h)·c_t, c_n = (deg'_n + 1e-12)^{-1/2}, deg'_n = #ℰ_enc heads n."""
        degree = torch.bincount(enc_rows, minlength=self.n_nodes).to(torch.float32)
        c = (degree + 1e-12).pow(-0.5)
        return (1.0 * c[enc_rows]) * c[enc_cols]

    def decoder_edges(
        self,
        mask: torch.Tensor,
        enc_rows: torch.Tensor,
        enc_cols: torch.Tensor,
        j: torch.Tensor,
        j2: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder edges (§2.6 (b), Q18, Q19).

        a = M[j], b = M[j2]; candidates (a, b), (b, a), (n, n) for n < N, ℰ_enc; hashes
        h = row·N + col deduplicated and sorted; col = h mod N, row = (h − col) / N (exactly, or
        trunc(fl32(fl32(h − col)·fl32(1/N))) with ``fp32_row_decode``).

        Args:
            mask: int64 [|M|] M.
            enc_rows, enc_cols: int64 [E_enc] ℰ_enc.
            j, j2: int64 [E] indices into M.

        Returns:
            (rows, cols) int64 [E_dec], ascending hash order.
        """
        n_nodes = self.n_nodes
        j = torch.as_tensor(j, dtype=torch.int64)
        j2 = torch.as_tensor(j2, dtype=torch.int64)
        for name, idx in (("j", j), ("j2", j2)):
            if tuple(idx.shape) != (self.n_edges,):
                raise ValueError(f"{name} must be ({self.n_edges},), got {tuple(idx.shape)}")
            if idx.numel() and (idx.min() < 0 or idx.max() >= mask.shape[0]):
                raise ValueError(f"{name} must index M, i.e. lie in [0, {mask.shape[0]})")
        a, b = mask[j], mask[j2]
        loops = torch.arange(n_nodes, dtype=torch.int64)
        enc_hashes = enc_rows * n_nodes + enc_cols
        hashes = torch.cat([a * n_nodes + b, b * n_nodes + a, loops * n_nodes + loops, enc_hashes])
        return decode_edge_hashes(torch.unique(hashes), n_nodes, self.fp32_row_decode)

    def build_graph(
        self, local_seeds: torch.Tensor, q: torch.Tensor, j: torch.Tensor, j2: torch.Tensor
    ) -> AutoCFGraph:
        """Every edge set of one resample for the given seeds and draws (no parameters used)."""
        hops, keep, mask = self.mask_nodes(local_seeds, q)
        enc_rows, enc_cols = self.edge_rows[keep], self.edge_cols[keep]
        enc_values = self.encoder_values(enc_rows, enc_cols)
        dec_rows, dec_cols = self.decoder_edges(mask, enc_rows, enc_cols, j, j2)
        return AutoCFGraph(
            torch.as_tensor(local_seeds, dtype=torch.int64),
            hops,
            mask,
            enc_rows,
            enc_cols,
            enc_values,
            dec_rows,
            dec_cols,
        )

    def resample(
        self,
        gumbel_u: torch.Tensor | None = None,
        q: torch.Tensor | None = None,
        j: torch.Tensor | None = None,
        j2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, AutoCFGraph]:
        """(a) + (b) with the current parameters; the new graphs replace the current ones.

        A None draw comes from the global torch CPU generator, in the reference's order:
        rand(N), randint(0, N, [sampNum]), randint(0, |M|, [E]), randint(0, |M|, [E]).

        Returns:
            (infomax = −mean(noisy), differentiable; the :class:`AutoCFGraph`).
        """
        if gumbel_u is None:
            gumbel_u = torch.rand(self.n_nodes)
        seeds, _, infomax = self.local_graph(gumbel_u)
        if q is None:
            q = torch.randint(0, self.n_nodes, (self.samp_num(),))
        q = torch.as_tensor(q, dtype=torch.int64)
        if tuple(q.shape) != (self.samp_num(),):
            raise ValueError(f"q must be ({self.samp_num()},), got {tuple(q.shape)}")
        if j is None or j2 is None:
            _, _, mask = self.mask_nodes(seeds, q)
            if j is None:
                j = torch.randint(0, mask.shape[0], (self.n_edges,))
            if j2 is None:
                j2 = torch.randint(0, mask.shape[0], (self.n_edges,))
        graph = self.build_graph(seeds, q, j, j2)
        self.graph = graph
        self.enc_adj = torch.sparse_coo_tensor(
            torch.stack([graph.enc_rows, graph.enc_cols]),
            graph.enc_values,
            (self.n_nodes, self.n_nodes),
            check_invariants=True,
        )
        return infomax, graph

    # ----------------------------------------------------------------------------------------
    # training losses
    # ----------------------------------------------------------------------------------------

    def cl_loss(
        self,
        user_final: torch.Tensor,
        item_final: torch.Tensor,
        anc: torch.Tensor,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        """cl = ssl_reg · (con(users) + con(items)) + cross (§2.6 (e), Q15), naive exp/sum/log.

        con(users) = mean over sorted unique ``anc`` n of log Σ_{m < U} exp(F_u[n]·F_u[m]);
        con(items) likewise over unique ``pos`` against all items; cross = mean over ``anc``
        (duplicates kept) of log Σ_{j < I} exp(F_u[anc_b]·F_i[j]). Raw dot products.
        """
        users = torch.unique(anc)
        items = torch.unique(pos)
        con_u = _log_sum_exp_dot(user_final[users], user_final).mean()
        con_i = _log_sum_exp_dot(item_final[items], item_final).mean()
        cross = _log_sum_exp_dot(user_final[anc], item_final).mean()
        return self.ssl_reg * (con_u + con_i) + cross

    def train_forward(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        ego_transform: EgoTransform | None = None,
    ) -> BackboneOutput:
        """The training forward on the current graphs and AutoCF's own extra term.

        The step's random draws are those of the last :meth:`resample` (done by
        :class:`AutoCFTrainer` every ``fix_steps`` steps); there are none per step.

        Args:
            anc: int64 [B] user ids.
            pos: int64 [B] positive item ids.
            neg: int64 [B] negative item ids, unused (Q14; kept for the interface).
            ego_transform: maps E0 [N, d] to the X^{(0)} actually propagated (AutoCF_gene's
                NodeMask); None propagates E0 itself.

        Returns:
            BackboneOutput(F_u [U, d], F_i [I, d] — the embeddings rec scores, {"cl": cl}).
        """
        del neg
        if self.graph is None or self.enc_adj is None:
            raise RuntimeError("no training graph yet: call resample() (AutoCFTrainer does)")
        ego = self.ego()
        if ego_transform is not None:
            ego = ego_transform(ego)
        final = self.propagate(ego, self.enc_adj, self.graph.dec_rows, self.graph.dec_cols)
        user_final, item_final = final[: self.n_users], final[self.n_users :]
        cl = self.cl_loss(user_final, item_final, anc, pos)
        return BackboneOutput(user_final, item_final, {"cl": cl})

    def rec_loss(
        self,
        user_final: torch.Tensor,
        item_final: torch.Tensor,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> torch.Tensor:
        """rec = −(1/B) Σ_b F_u[anc_b]·F_i[pos_b] (a mean); ``neg`` is ignored (Q14)."""
        del neg
        return -(user_final[anc] * item_final[pos]).sum(dim=-1).mean()

    def assemble_loss(
        self,
        out: BackboneOutput,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        variant_terms: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """total = rec + reg + backbone terms (cl) + variant terms, left to right (Q13).

        reg = reg_weight · Σ_P ‖P‖² over every ``model.parameters()``. The infomax term is not
        part of it: :class:`AutoCFTrainer` adds it last on resample steps.

        Returns:
            (total, {"rec", "reg", *out.terms, *variant_terms}), all weighted scalar tensors.
        """
        rec = self.rec_loss(out.user_final, out.item_final, anc, pos, neg)
        reg = self.reg_weight * reg_params(self)
        total = rec + reg
        terms = {"rec": rec, "reg": reg}
        for name, term in (*out.terms.items(), *(variant_terms or {}).items()):
            terms[name] = term
            total = total + term
        return total, terms

    def cal_loss(
        self, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the current graphs: total = rec + reg + cl (no infomax here; the
        trainer adds it on resample steps).

        Args:
            anc, pos: int64 [B] ids.
            neg: int64 [B], ignored (Q14).

        Returns:
            (total, {"rec", "reg", "cl"}), each already weighted.
        """
        return self.assemble_loss(self.train_forward(anc, pos, neg), anc, pos, neg)


class AutoCFPlusRef(RLMRecConMixin, AutoCFRef):
    """AutoCF_plus (RLMRec-Con): total = rec + reg + cl + kd, kd on the masked-graph forward's F
    with only the anchor and positive terms (no negative term), divided by B (§3.1).

    Parameters in order: AutoCF's, then ``mlp`` (Ds → (Ds+d)//2 → d).

    Args:
        n_users, n_items, adj, embedding_size, gcn_layer, gt_layer, head_num, seed_num,
            mask_depth, keep_rate, fix_steps, reg_weight, ssl_reg, fp32_row_decode: as
            :class:`AutoCFRef` (amazon defaults: gcn 2, reg 1e-6, ssl_reg 1; yelp reg 1e-8,
            steam ssl_reg 0.5).
        usr_emb, itm_emb: semantic embeddings [U, Ds], [I, Ds].
        kd_weight: w (amazon / yelp / steam: 0.1 / 1e-2 / 1e-2; 0 skips it).
        kd_temperature: τ_kd (0.5 / 0.1 / 0.2).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        embedding_size: int = 32,
        gcn_layer: int = 2,
        gt_layer: int = 1,
        head_num: int = 4,
        seed_num: int = 100,
        mask_depth: int = 2,
        keep_rate: float = 0.2,
        fix_steps: int = 10,
        reg_weight: float = 1e-6,
        ssl_reg: float = 1.0,
        fp32_row_decode: bool = False,
        kd_weight: float = 0.1,
        kd_temperature: float = 0.5,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            adj,
            embedding_size,
            gcn_layer,
            gt_layer,
            head_num,
            seed_num,
            mask_depth,
            keep_rate,
            fix_steps,
            reg_weight,
            ssl_reg,
            fp32_row_decode,
        )
        self._init_con(usr_emb, itm_emb, kd_weight, kd_temperature)

    def kd_term(
        self, out: BackboneOutput, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """(kd_weight / B) · [anchor term + positive term]; no negative term (an exact 0 when
        kd_weight == 0)."""
        if self.kd_weight == 0:
            return zero_term()
        return rlmrec_con_kd(
            out.user_final,
            out.item_final,
            self.mlp(self.usr_emb),
            self.mlp(self.itm_emb),
            anc,
            pos,
            neg,
            self.kd_weight,
            self.kd_temperature,
            with_negative_term=False,
        )

    def cal_loss(
        self, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the current graphs.

        Returns:
            (total, {"rec", "reg", "cl", "kd"}); total = rec + reg + cl + kd.
        """
        out = self.train_forward(anc, pos, neg)
        kd = self.kd_term(out, anc, pos, neg)
        return self.assemble_loss(out, anc, pos, neg, {"kd": kd})


class AutoCFGeneRef(RLMRecGenMixin, AutoCFRef):
    """AutoCF_gene (RLMRec-Gen): total = rec + reg + cl + recon, all on the forward from the
    NodeMask-ed E0 over the current graphs; LocalGraph still scores the *unmasked* E0, and the
    NodeMask seeds are a per-step draw made after that step's resample (§3.2).

    Parameters in order: AutoCF's, ``gene_masker.mask_token`` [1, d] (zeros), ``mlp``
    (d → (Ds+d)//2 → Ds).

    Args:
        n_users, …, fp32_row_decode: as :class:`AutoCFRef` (amazon defaults: gcn 2, reg 1e-6,
            ssl_reg 1).
        usr_emb, itm_emb: semantic embeddings [U, Ds], [I, Ds].
        mask_ratio: NodeMask M = max(floor(N·mask_ratio), 1) (0.2 all datasets).
        recon_weight: w (amazon / yelp / steam: 1.0 / 0.1 / 1.0; 0 skips it).
        recon_temperature: τ_re (0.5 / 0.1 / 0.2).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        embedding_size: int = 32,
        gcn_layer: int = 2,
        gt_layer: int = 1,
        head_num: int = 4,
        seed_num: int = 100,
        mask_depth: int = 2,
        keep_rate: float = 0.2,
        fix_steps: int = 10,
        reg_weight: float = 1e-6,
        ssl_reg: float = 1.0,
        fp32_row_decode: bool = False,
        mask_ratio: float = 0.2,
        recon_weight: float = 1.0,
        recon_temperature: float = 0.5,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            adj,
            embedding_size,
            gcn_layer,
            gt_layer,
            head_num,
            seed_num,
            mask_depth,
            keep_rate,
            fix_steps,
            reg_weight,
            ssl_reg,
            fp32_row_decode,
        )
        # RLMRecGenMixin's attributes, with the token in the module ``gene_masker`` (§3.2).
        ds = register_semantic(self, usr_emb, itm_emb)
        self.mask_ratio = mask_ratio
        self.recon_weight = recon_weight
        self.recon_temperature = recon_temperature
        self.gene_masker = NodeMasker(embedding_size)
        self.mlp = AlignMLP(embedding_size, (ds + embedding_size) // 2, ds)

    def masker(self, seeds: torch.Tensor) -> EgoTransform:
        """The step's NodeMask as an ``ego_transform`` (token ``gene_masker.mask_token``)."""
        return lambda ego: self.gene_masker(ego, seeds)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the current graphs from the masked E0.

        Args:
            anc, pos: int64 [B] ids; neg: ignored.
            seeds: int64 [M] distinct global node ids to mask with the token (NodeMask draw).

        Returns:
            (total, {"rec", "reg", "cl", "recon"}); total = rec + reg + cl + recon.
        """
        seeds = self._check_seeds(seeds)
        out = self.train_forward(anc, pos, neg, ego_transform=self.masker(seeds))
        return self.assemble_loss(out, anc, pos, neg, {"recon": self.recon_term(out, seeds)})


class AutoCFTrainer:
    """AutoCF's trainer behaviour (``AutoCFTrainer``, §2.6 (e), Q16): resample every
    ``fix_steps`` steps of an epoch (step i resamples iff i % fix_steps == 0; i resets at each
    epoch, so every epoch's first step resamples) and add the infomax term on those steps.

    Args:
        model: an :class:`AutoCFRef` (or variant).
        optimizer: defaults to :func:`make_optimizer` (Adam, lr 1e-3).
        fix_steps: defaults to ``model.fix_steps``.
    """

    def __init__(
        self,
        model: AutoCFRef,
        optimizer: torch.optim.Optimizer | None = None,
        fix_steps: int | None = None,
    ) -> None:
        self.model = model
        self.optimizer = make_optimizer(model) if optimizer is None else optimizer
        self.fix_steps = model.fix_steps if fix_steps is None else fix_steps
        self.step_in_epoch = 0

    def start_epoch(self) -> None:
        """Reset the step counter i to 0 (the next step resamples)."""
        self.step_in_epoch = 0

    def resamples_now(self) -> bool:
        """Whether the next step resamples."""
        return is_resample_step(self.step_in_epoch, self.fix_steps)

    def loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        draws: AutoCFDraws | None = None,
        **loss_kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The current step's loss (does not advance the counter).

        On a resample step: ``model.resample(*draws)`` first (None fields drawn from the global
        torch generator), then ``model.cal_loss``, then + infomax. Otherwise ``draws`` is
        ignored and "infomax" is reported as an exact 0.

        Args:
            anc, pos, neg: int64 [B] ids.
            draws: the resample draws.
            **loss_kwargs: forwarded to ``cal_loss`` (AutoCF_gene: ``seeds``).

        Returns:
            (total, cal_loss's terms + {"infomax"}).
        """
        resample = self.resamples_now()
        infomax = None
        if resample:
            infomax, _ = self.model.resample(*(AutoCFDraws() if draws is None else draws))
        total, terms = self.model.cal_loss(anc, pos, neg, **loss_kwargs)
        if infomax is None:
            terms["infomax"] = zero_term()
            return total, terms
        terms["infomax"] = infomax
        return total + infomax, terms

    def step(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        draws: AutoCFDraws | None = None,
        **loss_kwargs,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """zero_grad → :meth:`loss` → backward → Adam step → i += 1; returns (total, terms)."""
        self.optimizer.zero_grad()
        total, terms = self.loss(anc, pos, neg, draws, **loss_kwargs)
        total.backward()
        self.optimizer.step()
        self.step_in_epoch += 1
        return total.detach(), {k: v.detach() for k, v in terms.items()}

    def train_epoch(
        self,
        train_users: np.ndarray,
        train_items: np.ndarray,
        n_items: int,
        rng: np.random.RandomState,
        batch_size: int = 4096,
        step_inputs: Callable[[int], dict] | None = None,
        resample_draws: Callable[[], AutoCFDraws | None] | None = None,
    ) -> float:
        """One epoch as :func:`darec_jax.reference.train.train_epoch` (negatives are sampled
        although AutoCF ignores them, Q14; torch ``randperm`` shuffle), with the resample logic.

        Args:
            train_users, train_items, n_items, rng, batch_size: as ``train_epoch``.
            step_inputs: called with each step's B; its keyword arguments go to ``cal_loss``.
            resample_draws: called on resample steps only; its draws go to ``resample`` (None:
                all drawn from the global torch generator).

        Returns:
            Mean over steps of the total loss.
        """
        negatives = sample_negatives(train_users, train_items, n_items, rng)
        self.model.train()
        self.start_epoch()
        total, steps = 0.0, 0
        for anc, pos, neg in _batches_vectorised(train_users, train_items, negatives, batch_size):
            extra = {} if step_inputs is None else step_inputs(int(anc.shape[0]))
            draws = None
            if resample_draws is not None and self.resamples_now():
                draws = resample_draws()
            loss, _ = self.step(anc, pos, neg, draws, **extra)
            total += float(loss)
            steps += 1
        return total / max(steps, 1)


class AutoCFDaRecRef(DaRecMixin, AutoCFRef):
    """DaRec on AutoCF: total = rec + reg + cl + λ_or·L_or + λ_un·L_un + λ_gl·L_gl + λ_lo·L_lo, on
    the current graphs' forward (docs/darec.md over §2.6); :class:`AutoCFTrainer` adds infomax
    last on resample steps, as for every AutoCF variant.

    Parameters in order: AutoCF's, then DaRec's heads ``cf_specific``, ``cf_shared``,
    ``llm_specific``, ``llm_shared``.

    Args:
        n_users, n_items, adj: as :class:`AutoCFRef`.
        usr_emb, itm_emb: LLM embeddings [U, Ds], [I, Ds].
        darec: keyword arguments of :meth:`DaRecMixin._init_darec` (λs, K, temperatures, …).
        **autocf: keyword arguments of :class:`AutoCFRef` (embedding_size, gcn_layer, …).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        darec: dict | None = None,
        **autocf,
    ) -> None:
        super().__init__(n_users, n_items, adj, **autocf)
        self._init_darec(usr_emb, itm_emb, **(darec or {}))

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        **darec_draws: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the current graphs (no infomax; the trainer adds it).

        Args:
            anc, pos: int64 [B] ids; neg: int64 [B], ignored by rec but in DaRec's item set.
            **darec_draws: :meth:`DaRecMixin.darec_terms`' assignments and subsets.

        Returns:
            (total, {"rec", "reg", "cl", "orth", "unif", "global", "local"}).
        """
        return self.darec_loss(anc, pos, neg, **darec_draws)


class AutoCFRunner(StepRunner):
    """The equivalence harness's AutoCF steps: :class:`AutoCFTrainer` decides the resample
    steps and adds infomax; on a resample step the Gumbel uniforms, the extra mask nodes and the
    decoder's pair indices are drawn here (their ranges depend on the reference's mask set) and
    given to both sides; on other steps both sides keep the last resample's graphs."""

    def __init__(self, model, optimizer, method: str):
        super().__init__(model, optimizer, method)
        self.trainer = AutoCFTrainer(model, optimizer)
        self.trainer.start_epoch()

    def draws(self, rng, declared, shapes, edge_uniforms):
        """The four draws of a resample, named for the JAX side by the names its declaration
        gives the kind ``runner``, in this order: Gumbel uniforms, extra mask nodes, the two
        decoder pair index arrays."""
        model = self.model
        if self.trainer.resamples_now():
            u = rng.random(model.n_nodes, dtype=np.float32)
            q = rng.integers(0, model.n_nodes, model.samp_num())
            with torch.no_grad():
                seeds, _, _ = model.local_graph(torch.from_numpy(u))
                _, _, mask = model.mask_nodes(seeds, torch.from_numpy(q))
            j = rng.integers(0, len(mask), model.n_edges)
            j2 = rng.integers(0, len(mask), model.n_edges)
        else:  # ignored on both sides: the graphs of the last resample are kept
            u = np.zeros(model.n_nodes, np.float32)
            q = np.zeros(model.samp_num(), np.int64)
            j = j2 = np.zeros(model.n_edges, np.int64)
        theirs = {"draws": AutoCFDraws(*(torch.from_numpy(x) for x in (u, q, j, j2)))}
        names = [name for name, kind in declared.items() if kind == "runner"]
        values = (u, q.astype(np.int32), j.astype(np.int32), j2.astype(np.int32))
        if len(names) != len(values):
            raise ValueError(f"AutoCF declares {len(names)} runner draws, its runner makes 4")
        return dict(zip(names, values, strict=True)), theirs

    def loss(self, anc, pos, neg, backbone_draws, method_draws):
        return self.trainer.loss(anc, pos, neg, backbone_draws["draws"], **method_draws)

    def after_update(self) -> None:
        self.trainer.step_in_epoch += 1


def _darec(sizes, semantic, options, darec):
    return AutoCFDaRecRef(*sizes, *semantic, darec=darec, **options)


REFERENCE = ReferenceSpec(
    name="autocf",
    classes=lambda: (AutoCFRef, AutoCFPlusRef, AutoCFGeneRef),
    darec=_darec,
    renamed={"layer_num": "gcn_layer"},
    runner=AutoCFRunner,
)
