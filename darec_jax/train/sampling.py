"""On-device negative sampling (docs/backbones.md §1.8).

For each training interaction (u, i) one negative j is drawn uniformly from [0, I) and redrawn
while (u, j) is a training positive. The reference loops over interactions sequentially; the draws
are independent, so redrawing all colliding entries at once gives the same distribution.

Membership tests use the training matrix in CSR form (per-user sorted item lists) and a vectorised
binary search, so no U·I-sized hash is needed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def csr_from_pairs(
    n_users: int, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """(indptr [U+1], sorted indices [nnz], number of binary-search steps) of a binary matrix."""
    order = np.argsort(np.asarray(users, np.int64) * (int(np.max(items, initial=0)) + 1) + items)
    indices = np.asarray(items, np.int32)[order]
    counts = np.bincount(np.asarray(users, np.int64), minlength=n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    max_degree = int(counts.max(initial=0))
    search_steps = int(np.ceil(np.log2(max_degree + 1))) + 1
    return indptr, indices, search_steps


def is_positive(
    users: jax.Array,
    items: jax.Array,
    indptr: jax.Array,
    indices: jax.Array,
    search_steps: int,
) -> jax.Array:
    """[n] bool: is items[k] in the sorted CSR row of users[k]?"""
    lo = indptr[users]
    row_end = indptr[users + 1]
    hi = row_end
    last = indices.shape[0] - 1

    def body(_, bounds):
        lo, hi = bounds
        active = lo < hi
        mid = (lo + hi) // 2
        go_right = indices[jnp.minimum(mid, last)] < items
        lo = jnp.where(active & go_right, mid + 1, lo)
        hi = jnp.where(active & ~go_right, mid, hi)
        return lo, hi

    lo, _ = jax.lax.fori_loop(0, search_steps, body, (lo, hi))
    return (lo < row_end) & (indices[jnp.minimum(lo, last)] == items)


def sample_negatives(
    key: jax.Array,
    users: jax.Array,
    n_items: int,
    indptr: jax.Array,
    indices: jax.Array,
    search_steps: int,
) -> jax.Array:
    """One negative item per entry of ``users`` ([nnz] int32), uniform over non-positives.

    A user who interacted with every item would make rejection sampling loop forever; the loader
    rejects such data (it has no negatives to learn from).
    """

    def draw(k):
        return jax.random.randint(k, users.shape, 0, n_items, dtype=jnp.int32)

    def cond(state):
        _, _, bad = state
        return jnp.any(bad)

    def body(state):
        k, negs, bad = state
        k, sub = jax.random.split(k)
        negs = jnp.where(bad, draw(sub), negs)
        bad = bad & is_positive(users, negs, indptr, indices, search_steps)
        return k, negs, bad

    key, sub = jax.random.split(key)
    negs = draw(sub)
    bad = is_positive(users, negs, indptr, indices, search_steps)
    _, negs, _ = jax.lax.while_loop(cond, body, (key, negs, bad))
    return negs
