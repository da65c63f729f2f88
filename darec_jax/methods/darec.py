"""DaRec (docs/darec.md): disentangle each view into specific and shared parts, align the shared
parts
globally (similarity structure) and locally (preference clusters).

Four heads (Linear → LeakyReLU 0.01 → Linear) map CF rows (d) and LLM rows (d_L) to specific
and shared parts of width h. Each step, on the batch's user set (the B anchors) and item set
(the B positives then the B negatives), with x̃ = x / sqrt(1e-8 + ‖x‖²):

    L_or = orth(E^L_sp, E^L_sh) + orth(E^C_sp, E^C_sh)                  (all rows of the set)
    L_un = U(E^C_sp[S]) + U(E^L_sp[S]);  L_gl = G(E^C_sh[S], E^L_sh[S])  (a random subset S)
    L_lo = symmetric InfoNCE of the CF and LLM cluster centres           (all rows of the set)

each added over the two sets, then weighted: λ_or L_or + λ_un L_un + λ_gl L_gl + λ_lo L_lo.
Preference clusters: before every `recluster_every`-th epoch, spherical k-means (k-means++
seeding from the epoch's key) of all users, and of all items, from the clean forward — jointly on
[Ẽ^C_sh ‖ Ẽ^L_sh] (``local_assign=joint``) or per view with the LLM clusters paired to the CF
clusters by an exact assignment on the host (``matched``); constant (no gradient) until the next
reclustering, and checkpointed with the train state. ``score_on=disentangled`` scores pairs (BPR
and ranking) with [E^C_sp ‖ E^C_sh] instead of E^C.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import nnx

from darec_jax.losses.alignment import normalize_eps
from darec_jax.losses.darec import (
    global_alignment,
    local_alignment,
    match_clusters,
    orthogonality,
    spherical_kmeans,
    spherical_kmeans_from,
    uniformity,
)
from darec_jax.methods.base import Method, Params
from darec_jax.nn import LeakyMLP

HEADS = ("cf_specific", "cf_shared", "llm_specific", "llm_shared")


class DarecHeads(nnx.Module):
    """DaRec's four heads (:class:`~darec_jax.nn.LeakyMLP`), named as :data:`HEADS`:

        E^C_sp = cf_specific(E^C),   E^C_sh = cf_shared(E^C)     CF rows [n, d] -> [n, h]
        E^L_sp = llm_specific(E^L),  E^L_sh = llm_shared(E^L)    LLM rows [n, d_L] -> [n, h]

    widths d -> d -> h (CF) and d_L -> (d_L + h) // 2 -> h (LLM).
    """

    def __init__(self, cf_dim: int, llm_dim: int, head_dim: int, *, rngs: nnx.Rngs):
        llm_hidden = (llm_dim + head_dim) // 2
        self.cf_specific = LeakyMLP(cf_dim, cf_dim, head_dim, rngs=rngs)
        self.cf_shared = LeakyMLP(cf_dim, cf_dim, head_dim, rngs=rngs)
        self.llm_specific = LeakyMLP(llm_dim, llm_hidden, head_dim, rngs=rngs)
        self.llm_shared = LeakyMLP(llm_dim, llm_hidden, head_dim, rngs=rngs)

    def __call__(self, cf: jax.Array, llm: jax.Array) -> dict[str, jax.Array]:
        """The four spaces {head: [n, h]} of the same n rows' CF [n, d] and LLM [n, d_L]."""
        return {
            "cf_specific": self.cf_specific(cf),
            "cf_shared": self.cf_shared(cf),
            "llm_specific": self.llm_specific(llm),
            "llm_shared": self.llm_shared(llm),
        }


@dataclass(frozen=True)
class Darec(Method):
    head_dim: int = 0
    lambda_or: float = 0.1
    lambda_un: float = 0.0
    lambda_gl: float = 0.1
    lambda_lo: float = 0.01
    global_loss: str = "mse"
    global_temperature: float = 1.0
    local_temperature: float = 0.2
    num_clusters: int = 16
    kmeans_iters: int = 10
    pair_sample: int = 1024
    local_assign: str = "joint"
    score_on: str = "backbone"
    recluster_every: int = 1
    term_names: tuple[str, ...] = field(default=("orth", "unif", "global", "local"))

    def make_module(self, cf_dim, llm_dim, ego_dim, *, rngs) -> DarecHeads:
        return DarecHeads(cf_dim, llm_dim, self.head_dim or cf_dim, rngs=rngs)

    def spaces(
        self,
        params: Params,
        user_final: jax.Array,
        item_final: jax.Array,
        llm: tuple[jax.Array, jax.Array],
    ) -> dict[str, dict[str, jax.Array]]:
        """{"user" | "item": {head: [n, h]}}: the four spaces of every user (n = U) and item
        (n = I), from the final embeddings [U, d], [I, d] and the LLM embeddings [U, d_L],
        [I, d_L]."""
        heads = self.module(params)
        return {"user": heads(user_final, llm[0]), "item": heads(item_final, llm[1])}

    # ----------------------------------------------------------------- clustering (per epoch)

    def epoch_state(self, params, user_final, item_final, llm, key, inits=None):
        """Cluster assignments of all users and items (constant until the next reclustering).

        ``joint``: one assignment per row from k-means on [Ẽ^C_sh ‖ Ẽ^L_sh]. ``matched``: k-means
        on each view's Ẽ_sh separately, then the LLM clusters relabelled to their paired CF
        cluster (:func:`match_clusters`); the state then also holds ``*_assign_llm``.
        ``inits``: injected initial centre row ids (equivalence tests), keyed ``user`` /
        ``item`` (joint) or ``user_cf`` / ``user_llm`` / ``item_cf`` / ``item_llm`` (matched).
        """
        if self.lambda_lo == 0:
            return {}
        heads = self.module(jax.lax.stop_gradient(params))
        views = {
            "user": (heads.cf_shared(user_final), heads.llm_shared(llm[0])),
            "item": (heads.cf_shared(item_final), heads.llm_shared(llm[1])),
        }
        if key is None:  # injected starting centres: no randomness needed
            keys = {"user": None, "item": None}
        else:
            keys = dict(zip(("user", "item"), jax.random.split(key), strict=True))

        def init(name):
            return None if inits is None else inits[name]

        out = {}
        for side, (cf_shared, llm_shared) in views.items():
            if self.local_assign == "joint":
                assign = self.joint_clusters(cf_shared, llm_shared, keys[side], init(side))
                out[f"{side}_assign"] = assign
                continue
            k_cf, k_llm = (None, None) if key is None else jax.random.split(keys[side])
            a_cf, c_cf = self._kmeans(normalize_eps(cf_shared), k_cf, init(f"{side}_cf"))
            a_llm, c_llm = self._kmeans(normalize_eps(llm_shared), k_llm, init(f"{side}_llm"))
            out[f"{side}_assign"] = a_cf
            out[f"{side}_assign_llm"] = match_clusters(c_cf, c_llm)[a_llm]
        return out

    def joint_clusters(
        self,
        cf_shared: jax.Array,
        llm_shared: jax.Array,
        key: jax.Array | None,
        init: jax.Array | None = None,
    ) -> jax.Array:
        """Preference clusters [n] of n rows from their shared views E^C_sh, E^L_sh [n, h]:
        spherical k-means on [Ẽ^C_sh ‖ Ẽ^L_sh] [n, 2h], K = ``num_clusters`` centres seeded by
        k-means++ from ``key``, or starting at the rows ``init`` [K]."""
        rows = jnp.concatenate([normalize_eps(cf_shared), normalize_eps(llm_shared)], axis=1)
        return self._kmeans(rows, key, init)[0]

    def _kmeans(self, rows, key, init):
        """(assignments [n], centres [K, w]) of spherical k-means on ``rows`` [n, w]."""
        if init is not None:
            return spherical_kmeans_from(rows, init, self.kmeans_iters)
        return spherical_kmeans(key, rows, self.num_clusters, self.kmeans_iters)

    # ----------------------------------------------------------------- scoring

    def score_rows(self, params, rows):
        """``score_on=disentangled``: [E^C_sp ‖ E^C_sh] scores a pair (BPR and ranking)."""
        if self.score_on == "backbone":
            return rows
        heads = self.module(params)
        return jnp.concatenate([heads.cf_specific(rows), heads.cf_shared(rows)], axis=-1)

    # ----------------------------------------------------------------- per step

    def subset_sizes(self, batch_size: int) -> tuple[int, int]:
        m = self.pair_sample
        return (min(m, batch_size) if m else batch_size), (
            min(m, 2 * batch_size) if m else 2 * batch_size
        )

    def draw_for_batch(self, key, batch_size: int, valid=None):
        """Pair subsets: min(m, B_real) distinct real rows of the user set, chosen uniformly (as
        the reference draws them from its unpadded batch), then padding rows (masked out)."""
        ku, ki = jax.random.split(key)
        mu, mi = self.subset_sizes(batch_size)
        if valid is None:
            valid = jnp.ones((batch_size,), jnp.float32)

        def real_rows_first(k, mask, m):
            # iid uniforms for the real rows, 2 for padding: sorting gives the real rows in a
            # uniformly random order, then the padding rows.
            scores = jnp.where(mask > 0, jax.random.uniform(k, mask.shape), 2.0)
            return jnp.argsort(scores)[:m].astype(jnp.int32)

        return {
            "user_subset": real_rows_first(ku, valid, mu),
            "item_subset": real_rows_first(ki, jnp.concatenate([valid, valid]), mi),
        }

    def _set_terms(self, heads, cf_rows, llm_rows, assign, mask, subset, assign_llm=None):
        out = {}
        need_sp = self.lambda_or != 0 or self.lambda_un != 0
        need_sh = self.lambda_or != 0 or self.lambda_gl != 0 or self.lambda_lo != 0
        sp_c = heads.cf_specific(cf_rows) if need_sp else None
        sp_l = heads.llm_specific(llm_rows) if need_sp else None
        sh_c = heads.cf_shared(cf_rows) if need_sh else None
        sh_l = heads.llm_shared(llm_rows) if need_sh else None
        if self.lambda_or != 0:
            out["orth"] = orthogonality(sp_l, sh_l, mask) + orthogonality(sp_c, sh_c, mask)
        sub_mask = mask[subset]
        if self.lambda_un != 0:
            out["unif"] = uniformity(sp_c[subset], sub_mask) + uniformity(sp_l[subset], sub_mask)
        if self.lambda_gl != 0:
            out["global"] = global_alignment(
                sh_c[subset], sh_l[subset], self.global_loss, self.global_temperature, sub_mask
            )
        if self.lambda_lo != 0:
            out["local"] = local_alignment(
                sh_c, sh_l, assign, self.num_clusters, self.local_temperature, mask, assign_llm
            )
        return out

    def terms(self, params, user_final, item_final, batch, llm, draws):
        items = jnp.concatenate([batch.pos, batch.neg])
        item_mask = jnp.concatenate([batch.valid, batch.valid])

        def rows_of(name, ids):
            a = draws.get(name)
            return None if a is None else a[ids]

        heads = self.module(params)
        user = self._set_terms(
            heads,
            user_final[batch.users],
            llm[0][batch.users],
            rows_of("user_assign", batch.users),
            batch.valid,
            draws["user_subset"],
            rows_of("user_assign_llm", batch.users),
        )
        item = self._set_terms(
            heads,
            item_final[items],
            llm[1][items],
            rows_of("item_assign", items),
            item_mask,
            draws["item_subset"],
            rows_of("item_assign_llm", items),
        )
        weights = {
            "orth": self.lambda_or,
            "unif": self.lambda_un,
            "global": self.lambda_gl,
            "local": self.lambda_lo,
        }
        out = {}
        for name in self.term_names:
            if weights[name] == 0:
                out[name] = jnp.zeros((), jnp.float32)
            else:
                out[name] = weights[name] * (user[name] + item[name])
        return out
