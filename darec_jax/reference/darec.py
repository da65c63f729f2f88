"""DaRec for any backbone of the reference (docs/darec.md): a mixin over a backbone that has
``final_dim``, ``eval_embeddings()`` and (for the generic loss) ``train_forward`` (see
:mod:`darec_jax.reference.variants`).

Call :meth:`DaRecMixin._init_darec` after the backbone's constructor, so the four heads
(``cf_specific``, ``cf_shared``: Dout → Dout → d_h; ``llm_specific``, ``llm_shared``:
Ds → (Ds + d_h)//2 → d_h) come after the backbone's parameters. Every random input of a step
(cluster assignments, pair subsets, and the backbone's own draws) is an argument.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from darec_jax.reference.losses import (
    AlignMLP,
    global_alignment,
    local_alignment,
    normalize_eps,
    orthogonality,
    spherical_kmeans,
    uniformity,
)
from darec_jax.reference.variants import (
    BackboneOutput,
    assemble_loss,
    register_semantic,
    zero_term,
)

TERMS = ("orth", "unif", "global", "local")


class DaRecMixin:
    """DaRec's heads, terms, scoring and reclustering for any reference backbone."""

    def _init_darec(
        self,
        usr_emb: np.ndarray | torch.Tensor,
        itm_emb: np.ndarray | torch.Tensor,
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
        """Register the LLM embeddings and the four heads; store DaRec's options.

        Args:
            usr_emb, itm_emb: LLM embeddings [U, Ds], [I, Ds] (float32 buffers).
            head_dim: d_h (None → the backbone's final width).
            lambda_or, lambda_un, lambda_gl, lambda_lo: term weights (0 skips the term).
            global_kind: "mse" or "kl"; global_temperature: τ_g (kl only).
            local_temperature: τ_l; num_clusters: K.
            local_assign: "joint" (one k-means on both views) or "matched" (k-means per view,
                clusters paired by an exact assignment on centre cosine similarity).
            score_on: "backbone" (F scores pairs) or "disentangled" ([f_C,sp(F) ‖ f_C,sh(F)]
                does, in BPR and in ranking).
        """
        if global_kind not in ("mse", "kl"):
            raise ValueError(f"global_kind must be 'mse' or 'kl', got {global_kind!r}")
        if local_assign not in ("joint", "matched"):
            raise ValueError(f"local_assign must be 'joint' or 'matched', got {local_assign!r}")
        if score_on not in ("backbone", "disentangled"):
            raise ValueError(f"score_on must be 'backbone' or 'disentangled', got {score_on!r}")
        ds = register_semantic(self, usr_emb, itm_emb)
        cf = self.final_dim
        head_dim = cf if head_dim is None else head_dim
        self.head_dim = head_dim
        self.lambda_or = lambda_or
        self.lambda_un = lambda_un
        self.lambda_gl = lambda_gl
        self.lambda_lo = lambda_lo
        self.global_kind = global_kind
        self.global_temperature = global_temperature
        self.local_temperature = local_temperature
        self.num_clusters = num_clusters
        self.local_assign = local_assign
        self.score_on = score_on
        self.cf_specific = AlignMLP(cf, cf, head_dim)
        self.cf_shared = AlignMLP(cf, cf, head_dim)
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

    def eval_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What ranking scores with: the backbone's clean forward through :meth:`score_vectors`."""
        user_final, item_final = super().eval_embeddings()
        return self.score_vectors(user_final), self.score_vectors(item_final)

    def darec_terms(
        self,
        user_final: torch.Tensor,
        item_final: torch.Tensor,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        user_assign: torch.Tensor | None = None,
        item_assign: torch.Tensor | None = None,
        user_subset: torch.Tensor | None = None,
        item_subset: torch.Tensor | None = None,
        user_assign_llm: torch.Tensor | None = None,
        item_assign_llm: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The four weighted DaRec terms of one step (exact 0 for a zero weight).

        User set: rows F_u[anc] / usr_emb[anc] / user_assign[anc] (B rows). Item set: rows
        F_i[cat(pos, neg)] / itm_emb[…] / item_assign[…] (2B rows). L_or and L_lo use the full
        sets, L_un and L_gl the subset rows; each term is summed over the two sets, then weighted.

        Args:
            user_final, item_final: the final embeddings of the forward that feeds BPR.
            anc, pos, neg: int64 [B] ids.
            user_assign: int64 [U] cluster ids in [0, K) (needed when lambda_lo != 0).
            item_assign: int64 [I] cluster ids in [0, K).
            user_subset: int64 indices into the B user-set rows (None = all).
            item_subset: int64 indices into the 2B item-set rows (None = all).
            user_assign_llm, item_assign_llm: the LLM view's own assignments (``matched``).
        """
        if self.lambda_lo != 0 and (user_assign is None or item_assign is None):
            raise ValueError("user_assign and item_assign are required when lambda_lo != 0")
        items = torch.cat([pos, neg])

        def rows(assign, ids):
            return None if assign is None else torch.as_tensor(assign)[ids]

        user_terms = self._set_terms(
            user_final[anc],
            self.usr_emb[anc],
            rows(user_assign, anc),
            user_subset,
            rows(user_assign_llm, anc),
        )
        item_terms = self._set_terms(
            item_final[items],
            self.itm_emb[items],
            rows(item_assign, items),
            item_subset,
            rows(item_assign_llm, items),
        )
        lambdas = (self.lambda_or, self.lambda_un, self.lambda_gl, self.lambda_lo)
        weights = dict(zip(TERMS, lambdas, strict=True))
        return {
            name: zero_term() if w == 0 else w * (user_terms[name] + item_terms[name])
            for name, w in weights.items()
        }

    def darec_loss(
        self,
        anc: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
        backbone_draws: dict | None = None,
        **darec_draws: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One step's loss for a backbone with ``train_forward``: the recommendation term (on the
        scoring vectors) + reg + the backbone's terms + the DaRec terms, added in that order. The
        recommendation term is BPR, or the backbone's own when it assembles its loss itself
        (AutoCF's ``assemble_loss``: rec, negatives ignored).

        Args:
            anc, pos, neg: int64 [B] ids.
            backbone_draws: keyword arguments of the backbone's ``train_forward`` (its draws).
            darec_draws: :meth:`darec_terms`' assignments and subsets.
        """
        out = self.train_forward(anc, pos, neg, **(backbone_draws or {}))
        terms = self.darec_terms(out.user_final, out.item_final, anc, pos, neg, **darec_draws)
        scored = BackboneOutput(
            self.score_vectors(out.user_final), self.score_vectors(out.item_final), out.terms
        )
        own = getattr(self, "assemble_loss", None)
        if own is not None:
            return own(scored, anc, pos, neg, terms)
        return assemble_loss(self, scored, anc, pos, neg, terms)

    @torch.no_grad()
    def recluster(
        self, iters: int, user_init: torch.Tensor, item_init: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Spherical k-means of users and of items (docs/darec.md, preference clusters), clean
        forward, no gradient.

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
            user_final, item_final = super().eval_embeddings()
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
