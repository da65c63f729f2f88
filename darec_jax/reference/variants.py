"""Backbone-generic pieces of the reference's RLMRec variants (docs/backbones.md §3, Q11–Q13).

Every backbone written against this module (GCCF, SGL, SimGCL) exposes

* ``final_dim``: the width Dout of its final embeddings (d, or (L+1)·d for GCCF);
* ``train_forward(anc, pos, neg, <the step's draws>, ego_transform=None)``: the training forward
  of one step, returning a :class:`BackboneOutput` — the final user / item embeddings that BPR
  (and the variants' kd / recon) use, plus the backbone's own weighted extra terms (e.g. SGL's
  ``cl``) in the order they are added (Q13). ``ego_transform`` maps the ego matrix E0 = [E_u ; E_i]
  [N, d] to the matrix that drives **every** forward of the step (RLMRec-Gen passes its
  NodeMask, Q11; a generic DaRec can pass anything);
* ``reg_weight``, ``user_embeds``, ``item_embeds``.

``cal_loss`` is then :func:`assemble_loss`: total = bpr + reg + backbone terms + variant terms,
added left to right in that order (Q13). The mixins :class:`RLMRecConMixin` (RLMRec-Con, ``kd``)
and :class:`RLMRecGenMixin` (RLMRec-Gen, ``recon``) add the variant parameters and terms to any
such backbone; they define no ``__init__`` (call ``_init_con`` / ``_init_gen`` after the
backbone's own constructor, so the MLP / token come after the backbone's parameters).

A loss weight of exactly 0 skips its term's computation: the term is an exact 0 (adding it leaves
the total bit-identical) and the MLP is not evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from darec_jax.reference.losses import (
    AlignMLP,
    bpr_loss_sum,
    node_mask,
    reg_params,
    rlmrec_con_kd,
    rlmrec_gen_recon,
)

__all__ = [
    "BackboneOutput",
    "as_buffer",
    "EgoTransform",
    "RLMRecConMixin",
    "RLMRecGenMixin",
    "assemble_loss",
    "ego_embeddings",
    "register_semantic",
    "zero_term",
]

EgoTransform = Callable[[torch.Tensor], torch.Tensor]
"""Maps the ego matrix [N, d] to the [N, d] matrix that drives a step's forwards."""


class BackboneOutput(NamedTuple):
    """Result of a backbone's ``train_forward``.

    Attributes:
        user_final: [U, Dout] final user embeddings of the forward that feeds BPR.
        item_final: [I, Dout] final item embeddings of that forward.
        terms: the backbone's own extra loss terms, each a weighted scalar, in the order they
            are added to the total (empty for GCCF; ``{"cl": …}`` for SGL / SimGCL).
    """

    user_final: torch.Tensor
    item_final: torch.Tensor
    terms: dict[str, torch.Tensor]


def as_buffer(x: np.ndarray | torch.Tensor, rows: int, name: str) -> torch.Tensor:
    """[rows, Ds] float32 copy of ``x`` (a constant buffer); checks the shape."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(torch.float32).clone()
    if t.ndim != 2 or t.shape[0] != rows:
        raise ValueError(f"{name} must be [{rows}, Ds], got {tuple(t.shape)}")
    return t


def zero_term() -> torch.Tensor:
    """The exact 0 reported for a skipped (zero-weight) term."""
    return torch.zeros((), dtype=torch.float32)


def ego_embeddings(model: nn.Module, ego_transform: EgoTransform | None = None) -> torch.Tensor:
    """E0 = [E_u ; E_i] [N, d] (users then items), passed through ``ego_transform`` if given."""
    ego = torch.cat([model.user_embeds, model.item_embeds], dim=0)
    return ego if ego_transform is None else ego_transform(ego)


def assemble_loss(
    model: nn.Module,
    out: BackboneOutput,
    anc: torch.Tensor,
    pos: torch.Tensor,
    neg: torch.Tensor,
    variant_terms: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """total = bpr + reg + backbone terms + variant terms, added left to right (Q12, Q13).

    bpr = (1/B) Σ_b softplus(s⁻_b − s⁺_b) on ``out``'s final embeddings; reg = reg_weight ·
    Σ_P ‖P‖² over every ``model.parameters()`` (not divided by B).

    Returns:
        (total, {"bpr", "reg", *out.terms, *variant_terms}), all weighted scalar tensors.
    """
    batch = anc.shape[0]
    bpr = bpr_loss_sum(out.user_final[anc], out.item_final[pos], out.item_final[neg]) / batch
    reg = model.reg_weight * reg_params(model)
    total = bpr + reg
    terms = {"bpr": bpr, "reg": reg}
    for name, term in (*out.terms.items(), *(variant_terms or {}).items()):
        terms[name] = term
        total = total + term
    return total, terms


def register_semantic(
    model: nn.Module, usr_emb: np.ndarray | torch.Tensor, itm_emb: np.ndarray | torch.Tensor
) -> int:
    """Register the constant semantic embeddings as float32 buffers ``usr_emb`` [U, Ds] and
    ``itm_emb`` [I, Ds] (never parameters, never normalised, §3). Returns Ds."""
    usr = as_buffer(usr_emb, model.n_users, "usr_emb")
    itm = as_buffer(itm_emb, model.n_items, "itm_emb")
    if usr.shape[1] != itm.shape[1]:
        raise ValueError(f"usr_emb and itm_emb widths differ: {usr.shape[1]} vs {itm.shape[1]}")
    model.register_buffer("usr_emb", usr)
    model.register_buffer("itm_emb", itm)
    return int(usr.shape[1])


class RLMRecConMixin:
    """RLMRec-Con (§3.1) for any backbone: parameter ``mlp`` (Ds → (Ds+Dout)//2 → Dout), term kd.

    kd = (kd_weight / B) · [ cal_infonce(F_u[anc], P_u[anc], P_u, τ_kd)
                           + cal_infonce(F_i[pos], P_i[pos], P_i[pos], τ_kd)
                           + cal_infonce(F_i[neg], P_i[neg], P_i[neg], τ_kd) ],
    P = MLP_con(S) for all users / items, F the backbone's BPR forward (``train_forward``).
    """

    def _init_con(
        self,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        kd_weight: float,
        kd_temperature: float,
    ) -> None:
        ds = register_semantic(self, usr_emb, itm_emb)
        self.kd_weight = kd_weight
        self.kd_temperature = kd_temperature
        out_dim = self.final_dim
        self.mlp = AlignMLP(ds, (ds + out_dim) // 2, out_dim)

    def kd_term(
        self, out: BackboneOutput, anc: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
    ) -> torch.Tensor:
        """The weighted kd term of one step (an exact 0 when kd_weight == 0)."""
        if self.kd_weight == 0:
            return zero_term()
        user_proj = self.mlp(self.usr_emb)  # [U, Dout]
        item_proj = self.mlp(self.itm_emb)  # [I, Dout]
        return rlmrec_con_kd(
            out.user_final,
            out.item_final,
            user_proj,
            item_proj,
            anc,
            pos,
            neg,
            self.kd_weight,
            self.kd_temperature,
        )


class RLMRecGenMixin:
    """RLMRec-Gen (§1.5, §3.2) for any backbone: parameters ``masker_token`` [1, d] (zeros) and
    ``mlp`` (Dout → (Ds+Dout)//2 → Ds), term recon.

    One NodeMask per step (seeds S injected) replaces rows S of E0 by the token and drives every
    forward of the step (via ``ego_transform``); recon = recon_weight · ssl_con_loss(
    MLP_gen(F[S]), [S_u ; S_i][S], τ_re) with F = [F_u ; F_i] of the BPR forward.
    """

    def _init_gen(
        self,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
        mask_ratio: float,
        recon_weight: float,
        recon_temperature: float,
    ) -> None:
        ds = register_semantic(self, usr_emb, itm_emb)
        self.mask_ratio = mask_ratio
        self.recon_weight = recon_weight
        self.recon_temperature = recon_temperature
        self.masker_token = nn.Parameter(torch.zeros(1, self.embedding_size, dtype=torch.float32))
        in_dim = self.final_dim
        self.mlp = AlignMLP(in_dim, (ds + in_dim) // 2, ds)

    def num_seeds(self) -> int:
        """M = max(floor(N · mask_ratio), 1), N = U + I (§1.5)."""
        return max(int(np.floor((self.n_users + self.n_items) * self.mask_ratio)), 1)

    @staticmethod
    def _check_seeds(seeds: torch.Tensor | None) -> torch.Tensor:
        if seeds is None:
            raise ValueError("seeds must be given (inject the NodeMask draw)")
        return torch.as_tensor(seeds, dtype=torch.int64)

    def masker(self, seeds: torch.Tensor) -> EgoTransform:
        """The step's NodeMask as an ``ego_transform``: rows ``seeds`` of E0 become the token."""
        return lambda ego: node_mask(ego, seeds, self.masker_token)

    def recon_term(self, out: BackboneOutput, seeds: torch.Tensor) -> torch.Tensor:
        """The weighted recon term of one step (an exact 0 when recon_weight == 0)."""
        if self.recon_weight == 0:
            return zero_term()
        final = torch.cat([out.user_final, out.item_final], dim=0)  # [N, Dout], global ids
        semantic = torch.cat([self.usr_emb, self.itm_emb], dim=0)  # [N, Ds]
        return rlmrec_gen_recon(
            final, semantic, seeds, self.mlp, self.recon_weight, self.recon_temperature
        )
