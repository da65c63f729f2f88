"""SimGCL of the PyTorch reference and its RLMRec variants (docs/backbones.md §2.4, §3, Q5, Q6, Q8).

* :class:`SimGCLRef`     — ``simgcl``.
* :class:`SimGCLPlusRef` — ``simgcl_plus`` (RLMRec-Con).
* :class:`SimGCLGeneRef` — ``simgcl_gene`` (RLMRec-Gen).

Perturbed forward (:func:`perturbed_propagate`), over the full Â (no edge drop): H^{(0)} = E0,
unperturbed; for l = 1..L, P = Â H^{(l-1)}, Δ = eps · sign(P) ⊙ rownorm(Ω_l) with Ω_l ∈
U[0,1)^{N×d} freshly drawn and rownorm(Ω)_n = Ω_n / max(‖Ω_n‖, 1e-12), sign(0) = 0, and
H^{(l)} = P + Δ feeds the next layer; F_pert = Σ_{l=0}^{L} H^{(l)} (Q5, Q6).

A training step computes view 1 (perturbed, draws Ω_1..Ω_L), view 2 (perturbed, L more draws) and
view 3 (the clean LightGCN forward over Â: the top-level keep_rate is 1.0, so nothing is
dropped). BPR (and the variants' kd / recon) use view 3; the contrast has no negative-item term:

    cl = (cl_weight / B) · [ cal_infonce(F¹_u[anc], F²_u[anc], F²_u, τ)
                           + cal_infonce(F¹_i[pos], F²_i[pos], F²_i, τ) ]

Total = bpr + reg + cl [+ kd | + recon]. Eval: clean forward over Â.

The ``noise`` argument of every step is the 2·L matrices [N, d] in draw order: view 1 layers
1..L, then view 2 layers 1..L (a sequence of tensors, or one tensor [2L, N, d]).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from darec_jax.reference.lightgcn import LightGCNRef, propagate
from darec_jax.reference.losses import view_contrast
from darec_jax.reference.spec import ReferenceSpec
from darec_jax.reference.variants import (
    BackboneOutput,
    EgoTransform,
    RLMRecConMixin,
    RLMRecGenMixin,
    assemble_loss,
    ego_embeddings,
    zero_term,
)

__all__ = ["SimGCLGeneRef", "SimGCLPlusRef", "SimGCLRef", "perturbed_propagate"]

Noise = Sequence[torch.Tensor] | torch.Tensor


def perturbed_propagate(
    adj: torch.Tensor, ego: torch.Tensor, noise: Sequence[torch.Tensor], eps: float
) -> torch.Tensor:
    """SimGCL's perturbed propagation (§2.4, Q6): F = 0 + H^{(0)} + … + H^{(L)}, L = len(noise).

    Args:
        adj: (N, N) sparse COO Â.
        ego: [N, d] H^{(0)} (not perturbed).
        noise: L uniform matrices Ω_l [N, d], layer 1 first.
        eps: noise magnitude.

    Returns:
        [N, d] F_pert.
    """
    layers = [ego]
    for omega in noise:
        prop = torch.sparse.mm(adj, layers[-1])  # P = Â H^{(l-1)}
        direction = F.normalize(omega.to(prop.dtype), dim=-1, eps=1e-12)  # rownorm(Ω)
        layers.append(prop + eps * torch.sign(prop) * direction)
    return sum(layers)


class SimGCLRef(LightGCNRef):
    """SimGCL (``simgcl``): total = bpr + reg + cl.

    Parameters in order: ``user_embeds`` [U, d], ``item_embeds`` [I, d]. LightGCNRef's edge
    dropout is off (keep_rate = 1.0, the YAML's top-level value).

    Hyper-parameters (amazon / yelp / steam): L = 3/3/3, reg_weight = 1e-5 (all), cl_weight =
    0.1 (all), cl_temperature = 0.2/0.2/0.5, eps = 0.9/0.9/0.2.

    Args:
        n_users: U.
        n_items: I.
        adj: Â, (N, N) float32 sparse COO (no self-loops), N = U + I.
        embedding_size: d.
        layer_num: L.
        reg_weight: weight of Σ‖P‖².
        cl_weight: w of the cl term (0 skips it; the draws are still consumed when not given).
        cl_temperature: τ of the cl term (YAML key ``temperature`` / ``cl_temperature``).
        eps: noise magnitude.
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 3,
        reg_weight: float = 1e-5,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
        eps: float = 0.9,
    ) -> None:
        super().__init__(
            n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate=1.0
        )
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.eps = eps
        self.final_dim = embedding_size

    def draw_noise(self, noise: Noise | None = None) -> list[torch.Tensor]:
        """The step's 2·L noise matrices [N, d], checked; None draws them as the reference does
        (``torch.rand(N, d)`` on the torch CPU generator, view 1 layers 1..L, then view 2)."""
        n_nodes = self.n_users + self.n_items
        shape = (n_nodes, self.embedding_size)
        if noise is None:
            return [torch.rand(shape) for _ in range(2 * self.layer_num)]
        noise = list(noise)
        if len(noise) != 2 * self.layer_num:
            raise ValueError(
                f"noise must hold 2·L = {2 * self.layer_num} matrices, got {len(noise)}"
            )
        for omega in noise:
            if tuple(omega.shape) != shape:
                raise ValueError(f"each noise matrix must be {shape}, got {tuple(omega.shape)}")
        return noise

    def views(
        self, noise: Noise | None = None, ego_transform: EgoTransform | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three forwards of a step, all from the same (transformed) ego matrix.

        Args:
            noise: 2·L matrices [N, d] (see :meth:`draw_noise`); None draws them.
            ego_transform: applied once to E0; its output drives all three views.

        Returns:
            (F¹, F², F³), each [N, d]: the two perturbed views and the clean view over Â.
        """
        noise = self.draw_noise(noise)
        ego = ego_embeddings(self, ego_transform)
        n_layers = self.layer_num
        view_1 = perturbed_propagate(self.adj, ego, noise[:n_layers], self.eps)
        view_2 = perturbed_propagate(self.adj, ego, noise[n_layers:], self.eps)
        view_3 = propagate(self.adj, ego, n_layers)
        return view_1, view_2, view_3

    def train_forward(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        noise: Noise | None = None,
        ego_transform: EgoTransform | None = None,
    ) -> BackboneOutput:
        """The training forward of one step: view 3 for BPR, plus the weighted cl term.

        Args:
            anc, pos, neg: int64 [B] ids (cl uses anc and pos only).
            noise: see :meth:`views`.
            ego_transform: see :meth:`views` (RLMRec-Gen's NodeMask).

        Returns:
            BackboneOutput(F³_u [U, d], F³_i [I, d], {"cl": cl}).
        """
        n_users = self.n_users
        if self.cl_weight == 0:
            self.draw_noise(noise)  # consumed as the reference would; the views are skipped
            final = propagate(self.adj, ego_embeddings(self, ego_transform), self.layer_num)
            return BackboneOutput(final[:n_users], final[n_users:], {"cl": zero_term()})
        view_1, view_2, view_3 = self.views(noise, ego_transform)
        cl = view_contrast(
            view_1[:n_users],
            view_1[n_users:],
            view_2[:n_users],
            view_2[n_users:],
            anc,
            pos,
            neg,
            self.cl_weight,
            self.cl_temperature,
            with_negative_term=False,
        )
        return BackboneOutput(view_3[:n_users], view_3[n_users:], {"cl": cl})

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        noise: Noise | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss over one batch: total = bpr + reg + cl.

        Args:
            anc: int64 [B] user ids.
            pos: int64 [B] positive item ids in [0, I).
            neg: int64 [B] negative item ids in [0, I).
            noise: the step's 2·L uniform matrices [N, d] (view 1 layers 1..L, then view 2);
                None draws them.

        Returns:
            (total, {"bpr", "reg", "cl"}), each already weighted.
        """
        out = self.train_forward(anc, pos, neg, noise)
        return assemble_loss(self, out, anc, pos, neg)


class SimGCLPlusRef(RLMRecConMixin, SimGCLRef):
    """SimGCL_plus (RLMRec-Con): total = bpr + reg + cl + kd, kd on view 3.

    Parameters in order: ``user_embeds``, ``item_embeds``, ``mlp`` (Ds → (Ds+d)//2 → d).

    Hyper-parameters (amazon / yelp / steam): L = 3/3/3, reg_weight = 1e-5 (all), cl_weight =
    0.1 (all), cl_temperature = 0.2/0.2/0.5, kd_weight = 1e-2 (all), kd_temperature =
    0.2/0.1/0.2, eps = 0.9/0.9/0.2.

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, cl_weight,
            cl_temperature, eps: as SimGCLRef.
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
        layer_num: int = 3,
        reg_weight: float = 1e-5,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
        eps: float = 0.9,
        kd_weight: float = 1e-2,
        kd_temperature: float = 0.2,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            adj,
            embedding_size,
            layer_num,
            reg_weight,
            cl_weight,
            cl_temperature,
            eps,
        )
        self._init_con(usr_emb, itm_emb, kd_weight, kd_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        noise: Noise | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss; arguments as :meth:`SimGCLRef.cal_loss`.

        Returns:
            (total, {"bpr", "reg", "cl", "kd"}), each already weighted.
        """
        out = self.train_forward(anc, pos, neg, noise)
        return assemble_loss(self, out, anc, pos, neg, {"kd": self.kd_term(out, anc, pos, neg)})


class SimGCLGeneRef(RLMRecGenMixin, SimGCLRef):
    """SimGCL_gene (RLMRec-Gen): total = bpr + reg + cl + recon; one mask drives all three views.

    BPR and recon use view 3 (masked, clean), cl the two perturbed masked views. RNG order of the
    reference: numpy seeds, then the 2·L torch noise draws. (The reference builds its masker and
    MLP twice; only the second pair survives, so the parameter set is the usual one.)

    Parameters in order: ``user_embeds``, ``item_embeds``, ``masker_token`` [1, d] (zeros),
    ``mlp`` (d → (Ds+d)//2 → Ds).

    Hyper-parameters (amazon / yelp / steam): L = 3/3/3, reg_weight = 1e-5 (all), cl_weight =
    0.1 (all), cl_temperature = 0.2/0.2/0.5, mask_ratio = 0.05/0.01/0.05, recon_weight =
    0.1/0.01/0.01, recon_temperature = 0.2/0.05/0.1, eps = 0.9/0.9/0.2.

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, cl_weight,
            cl_temperature, eps: as SimGCLRef.
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
        layer_num: int = 3,
        reg_weight: float = 1e-5,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
        eps: float = 0.9,
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
            reg_weight,
            cl_weight,
            cl_temperature,
            eps,
        )
        self._init_gen(usr_emb, itm_emb, mask_ratio, recon_weight, recon_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        noise: Noise | None = None,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the masked views.

        Args:
            anc, pos, neg, noise: as :meth:`SimGCLRef.cal_loss`.
            seeds: int64 [M] distinct global node ids to mask (users 0..U-1, item j = U + j).
                Required.

        Returns:
            (total, {"bpr", "reg", "cl", "recon"}), each already weighted.
        """
        seeds = self._check_seeds(seeds)
        out = self.train_forward(anc, pos, neg, noise, ego_transform=self.masker(seeds))
        return assemble_loss(self, out, anc, pos, neg, {"recon": self.recon_term(out, seeds)})


REFERENCE = ReferenceSpec(name="simgcl", classes=lambda: (SimGCLRef, SimGCLPlusRef, SimGCLGeneRef))
