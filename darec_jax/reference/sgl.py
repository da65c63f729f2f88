"""SGL of the PyTorch reference and its RLMRec variants (docs/backbones.md §2.3, §3, Q3, Q4, Q7,
Q8).

* :class:`SGLRef`     — ``sgl``.
* :class:`SGLPlusRef` — ``sgl_plus`` (RLMRec-Con).
* :class:`SGLGeneRef` — ``sgl_gene`` (RLMRec-Gen).

Every training step runs three LightGCN forwards (F = Σ_{l=0}^{L} E^{(l)}), in this order:
view 1 over EdgeDrop(Â, keep) with the step's first uniform vector, view 2 over EdgeDrop(Â, keep)
with a second, separately drawn vector, view 3 over the full Â (nothing drawn). BPR (and the
variants' kd / recon) use view 3; the contrast is

    cl = (cl_weight / B) · [ cal_infonce(F¹_u[anc], F²_u[anc], F²_u, τ)
                           + cal_infonce(F¹_i[pos], F²_i[pos], F²_i, τ)
                           + cal_infonce(F¹_i[neg], F²_i[neg], F²_i, τ) ]

(:func:`view_contrast`; denominators over all users / items of view 2, no deduplication).
Total = bpr + reg + cl [+ kd | + recon]. Eval: clean forward over Â. The depth L is the YAML's
top-level ``layer_num`` (3 everywhere, Q3): pass 3 on steam too, where the dataset block says 2.
"""

from __future__ import annotations

import numpy as np
import torch

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

__all__ = ["SGLGeneRef", "SGLPlusRef", "SGLRef"]


class SGLRef(LightGCNRef):
    """SGL (``sgl``): total = bpr + reg + cl.

    Parameters in order: ``user_embeds`` [U, d], ``item_embeds`` [I, d].

    Hyper-parameters (amazon / yelp / steam): L = 3 (top level, Q3), reg_weight =
    1e-5/1e-6/1e-5, cl_weight = 0.1/1e-3/0.1, cl_temperature = 0.2/0.1/0.5, keep_rate = 0.8.

    Args:
        n_users: U.
        n_items: I.
        adj: Â, (N, N) float32 sparse COO (no self-loops), N = U + I.
        embedding_size: d.
        layer_num: L (the top-level value, Q3).
        reg_weight: weight of Σ‖P‖².
        keep_rate: edge-dropout keep probability of views 1 and 2 (1.0: nothing is drawn and
            both views equal view 3).
        cl_weight: w of the cl term (0 skips it; the draws are still consumed when not given).
        cl_temperature: τ of the cl term (the YAML key is ``temperature`` for ``sgl`` and
            ``cl_temperature`` for the variants).
    """

    def __init__(
        self,
        n_users: int,
        n_items: int,
        adj: torch.Tensor,
        embedding_size: int = 32,
        layer_num: int = 3,
        reg_weight: float = 1e-5,
        keep_rate: float = 0.8,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
    ) -> None:
        super().__init__(n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate)
        self.cl_weight = cl_weight
        self.cl_temperature = cl_temperature
        self.final_dim = embedding_size

    def views(
        self,
        uniforms_1: torch.Tensor | None = None,
        uniforms_2: torch.Tensor | None = None,
        ego_transform: EgoTransform | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three forwards of a step, all from the same (transformed) ego matrix.

        Args:
            uniforms_1: [E] edge-dropout uniforms of view 1 (storage order of ``adj``; see
                :meth:`LightGCNRef.edge_drop`). None draws ``torch.rand(E)``.
            uniforms_2: [E] uniforms of view 2, drawn after view 1's when None.
            ego_transform: applied once to E0; its output drives all three views.

        Returns:
            (F¹, F², F³), each [N, d]: view 1, view 2 (edge-dropped) and view 3 (full Â).
        """
        ego = ego_embeddings(self, ego_transform)
        view_1 = propagate(self.edge_drop(self.adj, uniforms_1), ego, self.layer_num)
        view_2 = propagate(self.edge_drop(self.adj, uniforms_2), ego, self.layer_num)
        view_3 = propagate(self.adj, ego, self.layer_num)
        return view_1, view_2, view_3

    def train_forward(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms_1: torch.Tensor | None = None,
        uniforms_2: torch.Tensor | None = None,
        ego_transform: EgoTransform | None = None,
    ) -> BackboneOutput:
        """The training forward of one step: view 3 for BPR, plus the weighted cl term.

        Args:
            anc, pos, neg: int64 [B] ids (cl uses anc, pos and neg).
            uniforms_1, uniforms_2: see :meth:`views`.
            ego_transform: see :meth:`views` (RLMRec-Gen's NodeMask).

        Returns:
            BackboneOutput(F³_u [U, d], F³_i [I, d], {"cl": cl}).
        """
        n_users = self.n_users
        if self.cl_weight == 0:
            # Consume the draws as the reference would, but skip the two dropped forwards.
            self.edge_drop(self.adj, uniforms_1)
            self.edge_drop(self.adj, uniforms_2)
            final = propagate(self.adj, ego_embeddings(self, ego_transform), self.layer_num)
            return BackboneOutput(final[:n_users], final[n_users:], {"cl": zero_term()})
        view_1, view_2, view_3 = self.views(uniforms_1, uniforms_2, ego_transform)
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
        )
        return BackboneOutput(view_3[:n_users], view_3[n_users:], {"cl": cl})

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms_1: torch.Tensor | None = None,
        uniforms_2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss over one batch: total = bpr + reg + cl.

        Args:
            anc: int64 [B] user ids.
            pos: int64 [B] positive item ids in [0, I).
            neg: int64 [B] negative item ids in [0, I).
            uniforms_1: [E] edge-dropout uniforms of view 1 (None: drawn).
            uniforms_2: [E] edge-dropout uniforms of view 2 (None: drawn after view 1's).

        Returns:
            (total, {"bpr", "reg", "cl"}), each already weighted.
        """
        out = self.train_forward(anc, pos, neg, uniforms_1, uniforms_2)
        return assemble_loss(self, out, anc, pos, neg)


class SGLPlusRef(RLMRecConMixin, SGLRef):
    """SGL_plus (RLMRec-Con): total = bpr + reg + cl + kd, kd on view 3.

    Parameters in order: ``user_embeds``, ``item_embeds``, ``mlp`` (Ds → (Ds+d)//2 → d).

    Hyper-parameters (amazon / yelp / steam): L = 3 (top level), reg_weight = 1e-5 (all),
    cl_weight = 0.1 (all), cl_temperature = 0.2/0.2/0.5, kd_weight = 1e-2 (all),
    kd_temperature = 0.5/1.0/1.0, keep_rate = 0.8.

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate, cl_weight,
            cl_temperature: as SGLRef.
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
        keep_rate: float = 0.8,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
        kd_weight: float = 1e-2,
        kd_temperature: float = 0.5,
    ) -> None:
        super().__init__(
            n_users,
            n_items,
            adj,
            embedding_size,
            layer_num,
            reg_weight,
            keep_rate,
            cl_weight,
            cl_temperature,
        )
        self._init_con(usr_emb, itm_emb, kd_weight, kd_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms_1: torch.Tensor | None = None,
        uniforms_2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss; arguments as :meth:`SGLRef.cal_loss`.

        Returns:
            (total, {"bpr", "reg", "cl", "kd"}), each already weighted.
        """
        out = self.train_forward(anc, pos, neg, uniforms_1, uniforms_2)
        return assemble_loss(self, out, anc, pos, neg, {"kd": self.kd_term(out, anc, pos, neg)})


class SGLGeneRef(RLMRecGenMixin, SGLRef):
    """SGL_gene (RLMRec-Gen): total = bpr + reg + cl + recon; one mask drives all three views.

    Views 1 and 2 are masked + edge-dropped, view 3 masked over the full Â; BPR and recon use
    view 3, cl views 1 and 2. RNG order of the reference: numpy seeds, torch view 1, view 2.

    Parameters in order: ``user_embeds``, ``item_embeds``, ``masker_token`` [1, d] (zeros),
    ``mlp`` (d → (Ds+d)//2 → Ds).

    Hyper-parameters (amazon / yelp / steam): L = 3 (top level), reg_weight = 1e-5 (all),
    cl_weight = 0.1 (all), cl_temperature = 0.2/0.2/0.5, mask_ratio = 0.2/0.15/0.1,
    recon_weight = 0.1 (all), recon_temperature = 0.2 (all), keep_rate = 0.8.

    Args:
        n_users, n_items, adj, embedding_size, layer_num, reg_weight, keep_rate, cl_weight,
            cl_temperature: as SGLRef.
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
        keep_rate: float = 0.8,
        cl_weight: float = 0.1,
        cl_temperature: float = 0.2,
        mask_ratio: float = 0.2,
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
            keep_rate,
            cl_weight,
            cl_temperature,
        )
        self._init_gen(usr_emb, itm_emb, mask_ratio, recon_weight, recon_temperature)

    def cal_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        uniforms_1: torch.Tensor | None = None,
        uniforms_2: torch.Tensor | None = None,
        seeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss on the masked views.

        Args:
            anc, pos, neg, uniforms_1, uniforms_2: as :meth:`SGLRef.cal_loss`.
            seeds: int64 [M] distinct global node ids to mask (users 0..U-1, item j = U + j).
                Required.

        Returns:
            (total, {"bpr", "reg", "cl", "recon"}), each already weighted.
        """
        seeds = self._check_seeds(seeds)
        out = self.train_forward(
            anc, pos, neg, uniforms_1, uniforms_2, ego_transform=self.masker(seeds)
        )
        return assemble_loss(self, out, anc, pos, neg, {"recon": self.recon_term(out, seeds)})


REFERENCE = ReferenceSpec(name="sgl", classes=lambda: (SGLRef, SGLPlusRef, SGLGeneRef))
