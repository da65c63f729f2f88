"""Full-ranking evaluation, jitted and chunked over users (docs/backbones.md §1.10, Q21).

For every user with at least one item in the split: score all items, mask the user's training
items to −1e8, take the top K = max(ks), and compute

    Recall@k = Σ_{j≤k} h_j / |GT|            (RLMRec; option: / min(k, |GT|))
    NDCG@k   = Σ_{j≤k} h_j / log2(j+1)  /  Σ_{j=1}^{min(k,|GT|)} 1 / log2(j+1)

averaged over the evaluated users. Host-side preparation turns the ragged per-user item lists into
fixed-shape padded arrays, so the device function compiles once per (dataset, split).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import chex
import jax
import jax.numpy as jnp
import numpy as np

from darec_jax.parallel import DATA, constrain, mesh_size, replicate

MASK_SCORE = -1e8


@dataclass(frozen=True)
class RankingTask:
    """A split prepared for device evaluation, in chunks of ``chunk`` users.

    users:        int32 [C, chunk] evaluated user ids (padding rows repeat user 0).
    user_valid:   float32 [C, chunk] 1 for real rows.
    gt_count:     float32 [C, chunk] |GT_u| (1 on padding rows, to keep divisions finite).
    train_rows, train_items: int32 [C, Ptr] (row-in-chunk, item) of training items to mask,
                  sorted by row; padding entries point at item n_items (dropped by the scatter).
    train_indptr: int32 [C, chunk+1] row pointers into each chunk's sorted training pairs.
    gt_keys:      int32 [C, Pgt] sorted keys row-in-chunk * n_items + item of the ground-truth
                  pairs; padding keys are chunk * n_items (larger than every real key).
    n_users_evaluated: number of real users.
    """

    users: np.ndarray
    user_valid: np.ndarray
    gt_count: np.ndarray
    train_rows: np.ndarray
    train_items: np.ndarray
    train_indptr: np.ndarray
    gt_keys: np.ndarray
    n_users_evaluated: int
    n_items: int


def _chunk_pairs(
    rows_of_user: np.ndarray,
    items: np.ndarray,
    chunk_of_user: np.ndarray,
    n_chunks: int,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Group (row-in-chunk, item) pairs by chunk into padded [C, P] arrays, sorted by row."""
    counts = np.bincount(chunk_of_user, minlength=n_chunks)
    width = max(int(counts.max(initial=0)), 1)
    rows = np.zeros((n_chunks, width), np.int32)
    cols = np.full((n_chunks, width), n_items, np.int32)
    order = np.lexsort((rows_of_user, chunk_of_user))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(order.shape[0]) - np.repeat(starts, counts)
    rows[chunk_of_user[order], slot] = rows_of_user[order]
    cols[chunk_of_user[order], slot] = items[order]
    return rows, cols


def prepare_ranking(
    n_users: int,
    n_items: int,
    train_users: np.ndarray,
    train_items: np.ndarray,
    split_users: np.ndarray,
    split_items: np.ndarray,
    chunk: int = 1024,
) -> RankingTask:
    """Pad a split's ground truth and the training masks into fixed-shape chunks."""
    split_users = np.asarray(split_users, np.int64)
    split_items = np.asarray(split_items, np.int64)
    gt_count_all = np.bincount(split_users, minlength=n_users)
    evaluated = np.flatnonzero(gt_count_all > 0)
    n_eval = evaluated.shape[0]
    chunk = max(1, min(chunk, n_eval, (2**31 - 1) // (n_items + 1)))  # int32 pair keys
    n_chunks = max(1, -(-n_eval // chunk))
    padded = np.zeros(n_chunks * chunk, np.int64)
    padded[:n_eval] = evaluated
    valid = np.zeros(n_chunks * chunk, np.float32)
    valid[:n_eval] = 1.0
    position = np.full(n_users, -1, np.int64)  # user -> flat position among evaluated users
    position[evaluated] = np.arange(n_eval)

    def pairs(us: np.ndarray, its: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        us = np.asarray(us, np.int64)
        its = np.asarray(its, np.int64)
        keep = position[us] >= 0
        flat = position[us[keep]]
        return _chunk_pairs(flat % chunk, its[keep], flat // chunk, n_chunks, n_items)

    train_rows, train_cols = pairs(train_users, train_items)
    real = train_cols < n_items
    per_row = np.zeros((n_chunks, chunk + 1), np.int64)
    np.add.at(per_row, (np.nonzero(real)[0], train_rows[real] + 1), 1)
    train_indptr = np.cumsum(per_row, axis=1).astype(np.int32)
    gt_rows, gt_cols = pairs(split_users, split_items)
    gt_keys = np.where(
        gt_cols < n_items, gt_rows.astype(np.int64) * n_items + gt_cols, chunk * n_items
    )
    gt_keys = np.sort(gt_keys, axis=1).astype(np.int32)
    gt_count = np.ones(n_chunks * chunk, np.float32)
    gt_count[:n_eval] = gt_count_all[evaluated]
    return RankingTask(
        users=padded.reshape(n_chunks, chunk).astype(np.int32),
        user_valid=valid.reshape(n_chunks, chunk),
        gt_count=gt_count.reshape(n_chunks, chunk),
        train_rows=train_rows,
        train_items=train_cols,
        train_indptr=train_indptr,
        gt_keys=gt_keys,
        n_users_evaluated=int(n_eval),
        n_items=n_items,
    )


def prepare_split(data, split: str = "val", chunk: int = 1024) -> RankingTask:
    """:func:`prepare_ranking` of a dataset's ``"val"`` or ``"test"`` split, masking its
    training interactions (``data``: a :class:`darec_jax.data.InteractionData`)."""
    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    target = getattr(data, split)
    return prepare_ranking(
        data.n_users,
        data.n_items,
        data.train.users,
        data.train.items,
        target.users,
        target.items,
        chunk,
    )


def metrics_from_topk_hits(
    hits: jax.Array, gt_count: jax.Array, ks: tuple[int, ...], recall_denominator: str = "gt"
) -> dict[str, jax.Array]:
    """Per-user Recall@k and NDCG@k from the hit indicators of the ranked top-K list.

    Args:
      hits: [B, K] 0/1, hits[b, j] = 1 iff the (j+1)-th ranked item of user b is in GT_b.
      gt_count: [B] |GT_b| (> 0).
    Returns:
      dict ``recall@k`` / ``ndcg@k`` -> [B] per-user values.
    """
    # Trace-time checks (free under jit): a [B, 1] gt_count would broadcast to [B, B] silently.
    chex.assert_rank(hits, 2)
    chex.assert_shape(gt_count, (hits.shape[0],))
    return _per_user_metrics(jnp, jnp.float32, hits, gt_count, ks, recall_denominator)


def _per_user_metrics(xp, dtype, hits, gt_count, ks, recall_denominator) -> dict:
    """The per-user formulas, for ``xp`` = jax.numpy (on device) or numpy (host, float64)."""
    discounts = 1.0 / xp.log2(xp.arange(2, hits.shape[-1] + 2, dtype=dtype))  # 1/log2(j+1)
    cum_idcg = xp.cumsum(discounts)
    out = {}
    for k in ks:
        denom = gt_count if recall_denominator == "gt" else xp.minimum(gt_count, k)
        out[f"recall@{k}"] = xp.sum(hits[:, :k], axis=-1) / denom
        dcg = xp.sum(hits[:, :k] * discounts[:k], axis=-1)
        ideal_len = xp.minimum(gt_count, k).astype(xp.int32)
        idcg = xp.where(ideal_len > 0, cum_idcg[xp.maximum(ideal_len - 1, 0)], 1.0)
        out[f"ndcg@{k}"] = dcg / idcg
    return out


def metrics_from_scores(
    scores: jax.Array,
    gt_mask: jax.Array,
    gt_count: jax.Array,
    ks: tuple[int, ...],
    recall_denominator: str = "gt",
) -> dict[str, jax.Array]:
    """Per-user metrics from an already masked score matrix [B, I] and a 0/1 GT matrix [B, I]."""
    chex.assert_rank(scores, 2)
    chex.assert_equal_shape([scores, gt_mask])
    _, top = jax.lax.top_k(scores, max(ks))
    hits = jnp.take_along_axis(gt_mask, top, axis=-1).astype(jnp.float32)
    return metrics_from_topk_hits(hits, gt_count, ks, recall_denominator)


def top_k_indices(scores: jax.Array, k: int, native: bool = False) -> jax.Array:
    """int32 [B, k] indices of each row's k largest scores, best first (tie order unspecified).

    ``native``: the C++ row top-k kernel (CPU backend only; see ``darec_jax.kernels``).
    """
    chex.assert_rank(scores, 2)
    if native:
        from darec_jax.kernels import row_topk

        return row_topk(scores, k)
    return jax.lax.top_k(scores, k)[1]


def _use_native_topk() -> bool:
    # The native kernel runs on one device; a multi-device mesh shards the chunk's rows instead.
    if jax.default_backend() != "cpu" or mesh_size() > 1:
        return False
    from darec_jax.kernels import native_spmm_available

    return native_spmm_available()


def _chunk_hits(user_final, item_final, item_t, chunk_arrays, ks, native):
    """uint8 [chunk, max(ks)]: hits[b, j] = 1 iff the (j+1)-th ranked item of the chunk's user b
    is one of its ground-truth items."""
    users, _, _, tr_rows, tr_items, tr_indptr, gt_keys = chunk_arrays
    n_items = item_final.shape[0]
    if native:
        # Scores, mask and top-k fused in one kernel: no [chunk, I] matrix in memory.
        from darec_jax.kernels import score_topk

        top = score_topk(user_final[users], item_t, tr_indptr, tr_items, max(ks), n_items)
    else:
        users = constrain(users, DATA)  # a multi-device mesh splits the chunk's users
        scores = constrain(user_final[users] @ item_final.T, DATA, None)  # [chunk, I]
        # Training items -> MASK_SCORE, written in place (padding pairs point past the last item).
        scores = scores.at[tr_rows, tr_items].set(MASK_SCORE, mode="drop")
        top = top_k_indices(scores, max(ks))  # [chunk, K]
    # hits[b, j] = 1 iff (b, top[b, j]) is a ground-truth pair: binary search of the pair keys
    # row * I + item among the chunk's sorted ground-truth keys.
    query = jnp.arange(users.shape[0], dtype=jnp.int32)[:, None] * n_items + top
    pos = jnp.clip(jnp.searchsorted(gt_keys, query), 0, gt_keys.shape[0] - 1)
    return (gt_keys[pos] == query).astype(jnp.uint8)


def metric_sums_float64(
    hits: np.ndarray,
    gt_count: np.ndarray,
    valid: np.ndarray,
    ks: tuple[int, ...],
    recall_denominator: str = "gt",
) -> dict[str, float]:
    """Sums over the real users of per-user Recall@k and NDCG@k, in float64 on the host (the
    same formulas as :func:`metrics_from_topk_hits`). hits [n, K] 0/1, gt_count [n] > 0,
    valid [n] 0/1 (padding rows 0)."""
    w = np.asarray(valid, np.float64)
    per_user = _per_user_metrics(
        np,
        np.float64,
        np.asarray(hits, np.float64),
        np.asarray(gt_count, np.float64),
        ks,
        recall_denominator,
    )
    return {name: float(np.sum(w * value)) for name, value in per_user.items()}


def evaluate_embeddings(
    user_final: jax.Array,
    item_final: jax.Array,
    task: RankingTask,
    ks: tuple[int, ...] = (5, 10, 20),
    recall_denominator: str = "gt",
) -> dict[str, float]:
    """Mean metrics over the task's users, from final embeddings (scores = F_u F_iᵀ)."""
    # F_u [U, d] and F_i [I, d], I the task's: the masks and pair keys were built for that I.
    chex.assert_rank([user_final, item_final], 2)
    chex.assert_equal_shape([user_final, item_final], dims=1)
    chex.assert_axis_dimension(item_final, 0, task.n_items)
    # The device ranks (scores and top-k, one chunk of users at a time); the host turns the hit
    # indicators into metrics in float64, as the reference does, so the means carry no float32
    # rounding (one 0/1 byte per user and rank crosses over).
    hits = _evaluate_hits(user_final, item_final, _task_arrays(task), tuple(ks), _use_native_topk())
    hits = np.asarray(jax.device_get(hits)).reshape(-1, max(ks))
    sums = metric_sums_float64(
        hits, task.gt_count.reshape(-1), task.user_valid.reshape(-1), ks, recall_denominator
    )
    return {k: v / task.n_users_evaluated for k, v in sums.items()}


def _task_arrays(task: RankingTask) -> tuple[np.ndarray, ...]:
    return (
        task.users,
        task.user_valid,
        task.gt_count,
        task.train_rows,
        task.train_items,
        task.train_indptr,
        task.gt_keys,
    )


@functools.partial(jax.jit, static_argnums=(3, 4))
def _evaluate_hits(user_final, item_final, arrays, ks, native):
    """uint8 [C, chunk, max(ks)]: every chunk's hit indicators (``lax.map``: one chunk's
    [chunk, I] scores in memory at a time)."""
    item_t = None
    if native:  # the kernel's item layout, once per evaluation
        from darec_jax.kernels import item_tiles

        item_t = item_tiles(item_final)
    hits = jax.lax.map(lambda a: _chunk_hits(user_final, item_final, item_t, a, ks, native), arrays)
    # Replicated on an active mesh (a small uint8 all-gather), so that every process can fetch
    # the whole array for the host-side sums; without a mesh this is the array itself.
    return replicate(hits)
