"""DaRec's loss terms and its adaptive preference clustering (docs/darec.md).

Every function takes one set of rows (the batch's users, or its items); DaRec computes each term
on the user set and on the item set and adds the two. Normalisation is x̃ = x / sqrt(1e-8+‖x‖²)
and cos(a, b) = ã·b̃ throughout.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from darec_jax.losses.alignment import normalize_eps


def _check_set(views: list[jax.Array], *per_row: jax.Array | None) -> None:
    """Trace-time shape checks (free under jit): the views are [m, h], all of one shape, and each
    per-row array (mask, assignment) is [m]. A [m, 1] mask would otherwise broadcast silently."""
    chex.assert_rank(views, 2)
    chex.assert_equal_shape(views)
    rows = [a for a in per_row if a is not None]
    if rows:
        chex.assert_shape(rows, (views[0].shape[0],))


def _ones(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    return jnp.ones((x.shape[0],), x.dtype) if mask is None else mask.astype(x.dtype)


def orthogonality(
    specific: jax.Array, shared: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """mean_n cos(sp_n, sh_n)²  (one view; L_or adds the CF and LLM views).  [m, h] each.

    mask [m]: 0/1 real rows of a padded set (the mean runs over real rows only).
    """
    _check_set([specific, shared], mask)
    cos = jnp.sum(normalize_eps(specific) * normalize_eps(shared), axis=-1)
    w = _ones(specific, mask)
    return jnp.sum(w * jnp.square(cos)) / jnp.sum(w)


def uniformity(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """log mean_{j<k} exp(−2 ‖x̃_j − x̃_k‖²) over the distinct pairs of (real) rows of x [m, h];
    0 when there is no pair (fewer than two real rows)."""
    _check_set([x], mask)
    xn = normalize_eps(x)
    norms = jnp.sum(jnp.square(xn), axis=-1)
    # ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b (the rows are only nearly unit: keep the norms).
    sq = jnp.maximum(norms[:, None] + norms[None, :] - 2.0 * (xn @ xn.T), 0.0)  # [m, m]
    m = x.shape[0]
    w = _ones(x, mask)
    pairs = jnp.triu(jnp.ones((m, m), x.dtype), k=1) * w[:, None] * w[None, :]
    n_pairs = jnp.sum(pairs)
    # Fewer than two real rows: no pair, the term is 0 (not log(0/0)).
    mean = jnp.sum(pairs * jnp.exp(-2.0 * sq)) / jnp.maximum(n_pairs, 1.0)
    return jnp.where(n_pairs > 0, jnp.log(jnp.where(n_pairs > 0, mean, 1.0)), 0.0)


def global_alignment(
    shared_cf: jax.Array,
    shared_llm: jax.Array,
    kind: str = "mse",
    temperature: float = 1.0,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Similarity-structure alignment of the shared parts, S^V = Ẽ^V (Ẽ^V)ᵀ ([m, m]).

    mse: mean_{j,k} (S^C_jk − S^L_jk)².  kl: mean_j KL(softmax(S^L_j/τ) ‖ softmax(S^C_j/τ)).
    mask [m]: real rows; pairs and softmax columns with a padding row are left out.
    """
    _check_set([shared_cf, shared_llm], mask)
    s_cf = normalize_eps(shared_cf) @ normalize_eps(shared_cf).T
    s_llm = normalize_eps(shared_llm) @ normalize_eps(shared_llm).T
    w = _ones(shared_cf, mask)
    if kind == "mse":
        pairs = w[:, None] * w[None, :]
        return jnp.sum(pairs * jnp.square(s_cf - s_llm)) / jnp.sum(pairs)
    if kind == "kl":
        column_ok = w[None, :] > 0
        log_p = jax.nn.log_softmax(jnp.where(column_ok, s_llm / temperature, -jnp.inf), axis=-1)
        log_q = jax.nn.log_softmax(jnp.where(column_ok, s_cf / temperature, -jnp.inf), axis=-1)
        # The difference is masked before it meets exp(log_p): at a padding column both logs are
        # −inf, and a product with their NaN difference would send NaN back through the
        # gradient even where the forward value is masked away.
        per_row = jnp.sum(jnp.exp(log_p) * jnp.where(column_ok, log_p - log_q, 0.0), axis=-1)
        return jnp.sum(w * per_row) / jnp.sum(w)
    raise ValueError(f"unknown global alignment {kind!r}; valid: mse, kl")


def cluster_centres(
    x: jax.Array, assign: jax.Array, num_clusters: int, mask: jax.Array | None = None
) -> jax.Array:
    """c_k = normalise(Σ_{n: a(n)=k} x̃_n), [K, h] (zero-sum clusters stay ~0)."""
    _check_set([x], assign, mask)
    rows = normalize_eps(x) * _ones(x, mask)[:, None]
    sums = jax.ops.segment_sum(rows, assign, num_segments=num_clusters)
    return normalize_eps(sums)


def local_alignment(
    shared_cf: jax.Array,
    shared_llm: jax.Array,
    assign: jax.Array,
    num_clusters: int,
    temperature: float,
    mask: jax.Array | None = None,
    assign_llm: jax.Array | None = None,
) -> jax.Array:
    """Symmetric InfoNCE between the CF and LLM centres of the clusters present in the set:

        ½ [ mean_k −log softmax_j(ĉ^C_k·ĉ^L_j/τ)_k + mean_k −log softmax_j(ĉ^L_k·ĉ^C_j/τ)_k ]

    with k, j over present clusters only (masked). assign [m] in [0, K); mask [m]: real rows.
    ``assign_llm`` [m]: the LLM view's own assignment (``local_assign=matched``, already
    relabelled to the paired CF cluster); a cluster is then present when both views have a row
    of the set in it. None: one joint assignment serves both views.

    With no cluster present (no real row, or — ``matched`` — no cluster holding a real row in
    both views, e.g. a padded last batch with one row whose two views fall in different
    clusters) the term is 0, with zero gradient, instead of 0/0.
    """
    _check_set([shared_cf, shared_llm], assign, mask, assign_llm)
    w = _ones(shared_cf, mask)
    present = jax.ops.segment_sum(w, assign, num_segments=num_clusters) > 0  # [K]
    if assign_llm is None:
        assign_llm = assign
    else:
        present &= jax.ops.segment_sum(w, assign_llm, num_segments=num_clusters) > 0
    c_cf = cluster_centres(shared_cf, assign, num_clusters, mask)
    c_llm = cluster_centres(shared_llm, assign_llm, num_clusters, mask)
    pair = present[:, None] & present[None, :]

    def one_way(a: jax.Array, b: jax.Array) -> jax.Array:
        logits = jnp.where(pair, a @ b.T / temperature, -jnp.inf)
        log_prob = jax.nn.log_softmax(logits, axis=-1)
        diag = jnp.where(present, -jnp.diagonal(log_prob), 0.0)
        return jnp.sum(diag) / jnp.maximum(jnp.sum(present), 1)

    return 0.5 * (one_way(c_cf, c_llm) + one_way(c_llm, c_cf))


def _match_on_host(similarity: np.ndarray) -> np.ndarray:
    rows, cols = linear_sum_assignment(np.asarray(similarity, np.float64), maximize=True)
    partner = np.empty(similarity.shape[1], np.int32)
    partner[cols] = rows
    return partner


def match_clusters(centres_cf: jax.Array, centres_llm: jax.Array) -> jax.Array:
    """Pair the LLM clusters with the CF clusters by maximum total centre cosine similarity.

    An exact assignment solver (``scipy.optimize.linear_sum_assignment``) runs on the host
    through a callback, so this works inside jit. Returns ``partner`` [K] int32: LLM cluster j is
    paired with CF cluster ``partner[j]`` (relabel an LLM assignment a with ``partner[a]``).
    """
    # Both [K, h]: with unequal K the assignment would leave some ``partner`` entries unset.
    _check_set([centres_cf, centres_llm])
    sim = normalize_eps(centres_cf) @ normalize_eps(centres_llm).T
    k = centres_llm.shape[0]
    return jax.pure_callback(
        _match_on_host, jax.ShapeDtypeStruct((k,), jnp.int32), jax.lax.stop_gradient(sim)
    )


def spherical_kmeans_from(
    x: jax.Array, init_indices: jax.Array, iters: int
) -> tuple[jax.Array, jax.Array]:
    """Spherical k-means from given initial centres x̃[init_indices].

    Each iteration: a(n) = argmax_k x̃_n·c_k (ties: lowest k), then c_k = normalise(Σ x̃ of its
    rows); an empty cluster keeps its centre. Returns (assignment [n] int32 from the final
    centres, centres [K, h]).
    """
    chex.assert_rank([x, init_indices], [2, 1])
    xn = normalize_eps(x)
    k = init_indices.shape[0]
    centres = xn[init_indices]

    def step(centres, _):
        assign = jnp.argmax(xn @ centres.T, axis=-1)
        sums = jax.ops.segment_sum(xn, assign, num_segments=k)
        counts = jnp.bincount(assign, length=k)
        centres = jnp.where(counts[:, None] > 0, normalize_eps(sums), centres)
        return centres, None

    centres, _ = jax.lax.scan(step, centres, None, length=iters)
    return jnp.argmax(xn @ centres.T, axis=-1).astype(jnp.int32), centres


def kmeans_plus_plus(key: jax.Array, x: jax.Array, num_clusters: int) -> jax.Array:
    """k-means++ seeding on the sphere: indices [K] of the initial centres.

    The first is uniform; each next one is drawn with probability ∝ the squared distance of a row
    to its nearest chosen centre (‖x̃ − c̃‖² = 2 − 2 cos for unit rows).
    """
    chex.assert_rank(x, 2)
    xn = normalize_eps(x)
    n = x.shape[0]
    keys = jax.random.split(key, num_clusters)
    first = jax.random.randint(keys[0], (), 0, n)
    chosen = jnp.zeros((num_clusters,), jnp.int32).at[0].set(first)
    best = jnp.maximum(2.0 - 2.0 * (xn @ xn[first]), 0.0)

    def body(i, state):
        chosen, best = state
        total = jnp.sum(best)
        probs = jnp.where(total > 0, best / jnp.where(total > 0, total, 1.0), 1.0 / n)
        nxt = jax.random.choice(keys[i], n, p=probs)
        best = jnp.minimum(best, jnp.maximum(2.0 - 2.0 * (xn @ xn[nxt]), 0.0))
        return chosen.at[i].set(nxt), best

    chosen, _ = jax.lax.fori_loop(1, num_clusters, body, (chosen, best))
    return chosen


def spherical_kmeans(
    key: jax.Array, x: jax.Array, num_clusters: int, iters: int
) -> tuple[jax.Array, jax.Array]:
    """k-means++ seeding from ``key``, then :func:`spherical_kmeans_from`; jit-friendly."""
    return spherical_kmeans_from(x, kmeans_plus_plus(key, x, num_clusters), iters)
