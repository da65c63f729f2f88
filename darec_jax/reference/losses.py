"""Alignment losses of the PyTorch reference: RLMRec-Con/Gen (docs/backbones.md §1.5, §1.7, §3.1,
§3.2)
and the DaRec terms (docs/darec.md).

Pure torch functions: float32 tensors in, a differentiable scalar tensor out (except
:func:`node_mask`, which returns the masked matrix, and :func:`spherical_kmeans`, which returns
an assignment and centres without gradient). Two normalisation conventions appear (Q7):

* ``x̃ = x / sqrt(1e-8 + ‖x‖²)`` (row-wise) — :func:`cal_infonce` and every DaRec term.
* ``x̂ = x / max(‖x‖, 1e-12)`` (``F.normalize``) — :func:`ssl_con_loss` only.

The RLMRec InfoNCE forms use naive exp / log / sum (no max-subtraction), as the reference does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "bpr_loss_sum",
    "reg_params",
    "AlignMLP",
    "cal_infonce",
    "global_alignment",
    "local_alignment",
    "node_mask",
    "normalize_eps",
    "orthogonality",
    "rlmrec_con_kd",
    "rlmrec_gen_recon",
    "spherical_kmeans",
    "ssl_con_loss",
    "uniformity",
    "view_contrast",
]


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


def normalize_eps(x: torch.Tensor) -> torch.Tensor:
    """Row-wise x̃ = x / sqrt(1e-8 + ‖x‖²) (RLMRec's InfoNCE / DaRec convention).

    Args:
        x: [n, d].

    Returns:
        [n, d]. A zero row stays zero (no NaN).
    """
    return x / torch.sqrt(1e-8 + x.square().sum(dim=-1, keepdim=True))


# --------------------------------------------------------------------------------------------
# RLMRec loss primitives (§1.7)
# --------------------------------------------------------------------------------------------


def cal_infonce(
    x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Sum-reduced InfoNCE (``cal_infonce_loss``, §1.7, Q7).

    With x̃ = x / sqrt(1e-8 + ‖x‖²) row-wise for X, Y and Z:

        L = Σ_b [ −(x̃_b·ỹ_b)/τ + log Σ_{z ∈ rows(Z)} exp(x̃_b·z̃/τ) ]

    The log-sum-exp is naive (no max-subtraction); the denominator includes the positive whenever
    it is a row of Z. Sum over rows, not mean: callers divide.

    Args:
        x: [B, d] anchors.
        y: [B, d] positives (row b pairs with x_b).
        z: [M, d] denominator set.
        temperature: τ.

    Returns:
        Scalar.
    """
    xn, yn, zn = normalize_eps(x), normalize_eps(y), normalize_eps(z)
    pos = (xn * yn).sum(dim=-1) / temperature  # [B]
    denom = torch.log(torch.exp(xn @ zn.T / temperature).sum(dim=-1))  # [B]
    return (-pos + denom).sum()


def ssl_con_loss(x: torch.Tensor, y: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean-reduced InfoNCE used by RLMRec-Gen (``ssl_con_loss``, §1.7, Q7).

    With x̂ = F.normalize(x) (x / max(‖x‖, 1e-12)) row-wise for X and Y:

        L = −(1/M) Σ_m log( exp(x̂_m·ŷ_m/τ) / (Σ_{m'} exp(x̂_m·ŷ_{m'}/τ) + 1e-8) + 1e-8 )

    Naive exp (no max-subtraction); negatives are the other rows of Y.

    Args:
        x: [M, D] predictions.
        y: [M, D] targets.
        temperature: τ.

    Returns:
        Scalar.
    """
    xn = F.normalize(x, dim=1, eps=1e-12)
    yn = F.normalize(y, dim=1, eps=1e-12)
    pos = torch.exp((xn * yn).sum(dim=-1) / temperature)  # [M]
    tot = torch.exp(xn @ yn.T / temperature).sum(dim=-1)  # [M]
    return -torch.log(pos / (tot + 1e-8) + 1e-8).mean()


class AlignMLP(nn.Module):
    """y = LeakyReLU_{0.01}(x W1ᵀ + b1) W2ᵀ + b2 (§3, §1.6; also the DaRec heads, docs/darec.md,
    the heads).

    Weights Xavier-uniform (bound sqrt(6/(in+out))); biases keep torch's default Linear init
    U(−1/sqrt(in), 1/sqrt(in)). State-dict names: ``mlp.0.weight``, ``mlp.0.bias``,
    ``mlp.2.weight``, ``mlp.2.bias`` (weights are [out, in]).

    Args:
        in_dim: input width.
        hidden_dim: hidden width.
        out_dim: output width.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.LeakyReLU(negative_slope=0.01),
            nn.Linear(hidden_dim, out_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n, in_dim] → [n, out_dim]."""
        return self.mlp(x)


# --------------------------------------------------------------------------------------------
# RLMRec-Con (§3.1) and RLMRec-Gen (§1.5, §3.2)
# --------------------------------------------------------------------------------------------


def rlmrec_con_kd(
    user_final: torch.Tensor,
    item_final: torch.Tensor,
    user_proj_all: torch.Tensor,
    item_proj_all: torch.Tensor,
    anc: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    kd_weight: float,
    kd_temperature: float,
    with_negative_term: bool = True,
) -> torch.Tensor:
    """RLMRec-Con contrastive alignment (§3.1, Q8, Q12).

        kd = (w / B) · [ cal_infonce(F_u[anc], P_u[anc], P_u, τ)
                       + cal_infonce(F_i[pos], P_i[pos], P_i[pos], τ)
                       + cal_infonce(F_i[neg], P_i[neg], P_i[neg], τ) ]

    Order: sum the terms, divide by B = len(anc), multiply by w. The user denominator runs over
    all users; item denominators over the batch's own rows (duplicates included).

    Args:
        user_final: [U, d] F_u, final CF user embeddings.
        item_final: [I, d] F_i, final CF item embeddings.
        user_proj_all: [U, d] P_u = MLP_con(S_u).
        item_proj_all: [I, d] P_i = MLP_con(S_i).
        anc: [B] int64 user ids.
        pos: [B] int64 positive item ids.
        neg: [B] int64 negative item ids.
        kd_weight: w.
        kd_temperature: τ.
        with_negative_term: False drops the negative-item term (AutoCF_plus).

    Returns:
        Scalar.
    """
    batch = anc.shape[0]
    pos_proj = item_proj_all[pos]
    total = cal_infonce(user_final[anc], user_proj_all[anc], user_proj_all, kd_temperature)
    total = total + cal_infonce(item_final[pos], pos_proj, pos_proj, kd_temperature)
    if with_negative_term:
        neg_proj = item_proj_all[neg]
        total = total + cal_infonce(item_final[neg], neg_proj, neg_proj, kd_temperature)
    return total / batch * kd_weight


def node_mask(ego: torch.Tensor, seeds: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """NodeMask (§1.5): E0'_n = m_n·E0_n + (1 − m_n)·t, m_n = 0 for n ∈ S else 1.

    Masked rows become exactly t; the gradient to the original masked rows is zero.

    Args:
        ego: [N, d] E0.
        seeds: [M] int64 distinct row ids S.
        token: [1, d] learnable mask token t.

    Returns:
        [N, d].
    """
    mask = torch.ones(ego.shape[0], 1, dtype=ego.dtype, device=ego.device)
    mask[seeds] = 0.0
    return mask * ego + (1.0 - mask) * token


def rlmrec_gen_recon(
    final_all: torch.Tensor,
    semantic_all: torch.Tensor,
    seeds: torch.Tensor,
    mlp_gen: nn.Module,
    recon_weight: float,
    recon_temperature: float,
) -> torch.Tensor:
    """RLMRec-Gen reconstruction (§3.2): w · ssl_con_loss(MLP_gen(F[S]), [S_u; S_i][S], τ).

    Args:
        final_all: [N, d] F, final user rows then item rows (global ids).
        semantic_all: [N, Ds] semantic embeddings, users then items.
        seeds: [M] int64 mask seeds S (global ids).
        mlp_gen: d → Ds module.
        recon_weight: w.
        recon_temperature: τ.

    Returns:
        Scalar (mean over the M seeds, times w).
    """
    pred = mlp_gen(final_all[seeds])
    return recon_weight * ssl_con_loss(pred, semantic_all[seeds], recon_temperature)


# --------------------------------------------------------------------------------------------
# DaRec terms (docs/darec.md); x̃ = x / sqrt(1e-8 + ‖x‖²) throughout
# --------------------------------------------------------------------------------------------


def orthogonality(sp: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """One view's orthogonality term (docs/darec.md, the four terms): mean_n cos(sp_n, sh_n)²,
    cos(a,b) = ã·b̃.

    Args:
        sp: [n, d_h] specific part.
        sh: [n, d_h] shared part.

    Returns:
        Scalar. The caller adds the C and L views.
    """
    cos = (normalize_eps(sp) * normalize_eps(sh)).sum(dim=-1)  # [n]
    return cos.square().mean()


def uniformity(x: torch.Tensor) -> torch.Tensor:
    """Uniformity (docs/darec.md, the four terms, Wang & Isola t = 2): log mean_{j<k} exp(−2‖x̃_j −
    x̃_k‖²).

    Distinct pairs only; ‖x̃_j − x̃_k‖² is computed directly (``torch.pdist``), not as 2 − 2cos.

    Args:
        x: [n, d]; with n < 2 there is no pair and the term is 0.

    Returns:
        Scalar.
    """
    if x.shape[0] < 2:
        return torch.zeros((), dtype=x.dtype) + 0.0 * x.sum()
    sq = torch.pdist(normalize_eps(x), p=2).square()  # [n(n−1)/2], pairs j<k
    return torch.log(torch.exp(-2.0 * sq).mean())


def global_alignment(
    sh_c: torch.Tensor, sh_l: torch.Tensor, kind: str = "mse", temperature: float = 1.0
) -> torch.Tensor:
    """Global structure alignment (docs/darec.md, the four terms), S^V = Ẽ^V (Ẽ^V)ᵀ ([m, m]).

    * ``mse``: mean_{j,k} (S^C_jk − S^L_jk)².
    * ``kl``:  mean_j Σ_k p^L_jk (log p^L_jk − log p^C_jk), p^V = softmax_rows(S^V / τ).

    Args:
        sh_c: [m, d_h] CF shared part.
        sh_l: [m, d_h] LLM shared part.
        kind: "mse" or "kl".
        temperature: τ_g (kl only).

    Returns:
        Scalar.
    """
    ec, el = normalize_eps(sh_c), normalize_eps(sh_l)
    s_c = ec @ ec.T
    s_l = el @ el.T
    if kind == "mse":
        return (s_c - s_l).square().mean()
    if kind == "kl":
        logp_l = torch.log_softmax(s_l / temperature, dim=1)
        logp_c = torch.log_softmax(s_c / temperature, dim=1)
        return (logp_l.exp() * (logp_l - logp_c)).sum(dim=1).mean()
    raise ValueError(f"unknown global alignment kind {kind!r} (expected 'mse' or 'kl')")


def local_alignment(
    sh_c: torch.Tensor,
    sh_l: torch.Tensor,
    assign: torch.Tensor,
    num_clusters: int,
    temperature: float,
    assign_llm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Local structure alignment (docs/darec.md, preference clusters), symmetric InfoNCE over
    present cluster centres.

    c^V_k = normalise(Σ_{n: a^V(n)=k} Ẽ^V_sh,n) for each view V (a^C = ``assign``; a^L =
    ``assign_llm``, or ``assign`` when None); only the P clusters with at least one row of the
    set in every view take part. With G_kj = c^C_k · c^L_j / τ over present k, j:

        L = ½ [ mean_k −log_softmax_j(G)_kk + mean_k −log_softmax_j(Gᵀ)_kk ]

    With no cluster present (P = 0: an empty set, or ``matched`` views whose rows share no
    cluster) L = 0, kept in the autograd graph, instead of the mean of an empty tensor (NaN).

    Args:
        sh_c: [n, d_h] CF shared part of the set's rows.
        sh_l: [n, d_h] LLM shared part of the same rows.
        assign: [n] int64 cluster ids in [0, K).
        num_clusters: K.
        temperature: τ_l.
        assign_llm: [n] int64 cluster ids of the LLM view (``local_assign=matched``).

    Returns:
        Scalar.
    """
    assign_l = assign if assign_llm is None else assign_llm
    ec, el = normalize_eps(sh_c), normalize_eps(sh_l)
    d = ec.shape[1]
    sum_c = torch.zeros(num_clusters, d, dtype=ec.dtype).index_add(0, assign, ec)
    sum_l = torch.zeros(num_clusters, d, dtype=el.dtype).index_add(0, assign_l, el)
    present = (torch.bincount(assign, minlength=num_clusters) > 0) & (
        torch.bincount(assign_l, minlength=num_clusters) > 0
    )
    if not bool(present.any()):
        return (sh_c.sum() + sh_l.sum()) * 0.0
    cen_c = normalize_eps(sum_c[present])  # [P, d_h]
    cen_l = normalize_eps(sum_l[present])
    logits = cen_c @ cen_l.T / temperature  # [P, P], G_kj = c^C_k·c^L_j/τ
    loss_cl = -torch.diagonal(torch.log_softmax(logits, dim=1)).mean()
    loss_lc = -torch.diagonal(torch.log_softmax(logits.T, dim=1)).mean()
    return 0.5 * (loss_cl + loss_lc)


@torch.no_grad()
def spherical_kmeans(
    x: torch.Tensor, num_clusters: int, iters: int, init_indices: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means with injected initial centres (docs/darec.md, preference clusters).

    x̃ = normalise(x) (1e-8 rule); c = x̃[init_indices]. Each of ``iters`` iterations:
    a(n) = argmax_k x̃_n·c_k (ties → lowest k), then c_k = normalise(Σ_{a(n)=k} x̃_n); an empty
    cluster keeps its previous centre. The returned assignment uses the final centres.

    Args:
        x: [n, D] rows to cluster.
        num_clusters: K.
        iters: number of iterations (≥ 0).
        init_indices: [K] int64 row ids of the initial centres.

    Returns:
        (assign [n] int64, centres [K, D]).
    """
    xn = normalize_eps(x)
    centres = xn[init_indices].clone()
    for _ in range(iters):
        assign = torch.argmax(xn @ centres.T, dim=1)
        sums = torch.zeros_like(centres).index_add(0, assign, xn)
        counts = torch.bincount(assign, minlength=num_clusters)
        centres = torch.where((counts > 0)[:, None], normalize_eps(sums), centres)
    assign = torch.argmax(xn @ centres.T, dim=1).to(torch.int64)
    return assign, centres


# --------------------------------------------------------------------------------------------
# Cross-view contrast of SGL and SimGCL (docs/backbones.md §2.3, §2.4)
# --------------------------------------------------------------------------------------------


def view_contrast(
    user_1: torch.Tensor,
    item_1: torch.Tensor,
    user_2: torch.Tensor,
    item_2: torch.Tensor,
    anc: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    cl_weight: float,
    temperature: float,
    with_negative_term: bool = True,
) -> torch.Tensor:
    """SGL / SimGCL contrast between two augmented views (§2.3, §2.4, Q7, Q8).

        cl = (w / B) · [ cal_infonce(F¹_u[anc], F²_u[anc], F²_u, τ)
                       + cal_infonce(F¹_i[pos], F²_i[pos], F²_i, τ)
                       + cal_infonce(F¹_i[neg], F²_i[neg], F²_i, τ) ]

    View 1 is the anchor, view 2 the positive; the denominators run over **all** users / items of
    view 2. Batch ids are not deduplicated. Order: sum the terms, divide by B = len(anc), multiply
    by w (the order Q12 gives for kd; nothing fixes it for cl).

    Args:
        user_1: [U, d] view-1 final user embeddings F¹_u.
        item_1: [I, d] view-1 final item embeddings F¹_i.
        user_2: [U, d] view-2 final user embeddings F²_u.
        item_2: [I, d] view-2 final item embeddings F²_i.
        anc: [B] int64 user ids.
        pos: [B] int64 positive item ids.
        neg: [B] int64 negative item ids.
        cl_weight: w.
        temperature: τ.
        with_negative_term: False drops the negative-item term (SimGCL).

    Returns:
        Scalar.
    """
    batch = anc.shape[0]
    total = cal_infonce(user_1[anc], user_2[anc], user_2, temperature)
    total = total + cal_infonce(item_1[pos], item_2[pos], item_2, temperature)
    if with_negative_term:
        total = total + cal_infonce(item_1[neg], item_2[neg], item_2, temperature)
    return total / batch * cl_weight
