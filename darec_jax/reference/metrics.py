"""Full-ranking evaluation of the PyTorch reference (docs/backbones.md §1.10, Q21).

For every user with ≥ 1 item in the split (ascending ids), in batches of 1024 users: scores over
all I items, training positives masked to exactly −1e8, top-K with K = max(ks) by ``torch.topk``,
then with h_j = 1 iff the j-th ranked item is in GT_u:

    Recall@k = Σ_{j≤k} h_j / |GT_u|                      (denominator not capped at k)
    NDCG@k   = Σ_{j≤k} h_j / log2(j+1)  /  Σ_{j≤min(k,|GT_u|)} 1 / log2(j+1)
               (IDCG 0 → 1, NaN → 0)

Each metric is the plain mean over evaluated users, accumulated in numpy float64 as per-batch sums
each divided by the total number of evaluated users.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from darec_jax.reference.adjacency import interaction_matrix

MASK_SCORE = 1e8


class ScoresModel(Protocol):
    """Anything with RLMRec's ``full_predict(users [B]) -> scores [B, I]``.

    A model may also offer ``eval_embeddings() -> (F_u [U, d], F_i [I, d])``; ``evaluate`` then
    runs that clean forward once per pass and scores each batch as F_u[users] @ F_iᵀ, which is
    what ``full_predict`` computes, without repeating the forward for every batch.
    """

    def full_predict(self, users: torch.Tensor) -> torch.Tensor: ...


def _batch_scorer(model: ScoresModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """users [B] -> scores [B, I], with the eval forward done once if the model allows it."""
    eval_embeddings = getattr(model, "eval_embeddings", None)
    if eval_embeddings is None:
        return model.full_predict
    user_final, item_final = eval_embeddings()
    return lambda users: user_final[users] @ item_final.T


def mask_training_items(scores: torch.Tensor, train_mask: torch.Tensor) -> torch.Tensor:
    """s' = s·(1 − m) − 1e8·m, so training positives (m = 1) score exactly −1e8.

    Args:
        scores: [B, I] float scores.
        train_mask: [B, I] 0/1 mask of training positives, same dtype as ``scores``.
    """
    return scores * (1 - train_mask) - MASK_SCORE * train_mask


def topk_items(scores: torch.Tensor, k: int) -> np.ndarray:
    """Indices [B, k] of the k largest scores per row, descending (``torch.topk``; ties as torch
    orders them)."""
    return torch.topk(scores, k, dim=-1).indices.cpu().numpy()


def _metric_sums(
    ranked: np.ndarray, ground_truth: Sequence[np.ndarray], n_items: int, ks: Sequence[int]
) -> dict[str, float]:
    """Per-batch sums over users of Recall@k and NDCG@k, float64.

    Args:
        ranked: int [B, K] top-K item ids per user, best first.
        ground_truth: B arrays of GT item ids (distinct, non-empty).
        n_items: I, the width of the dense hit table.
        ks: cut-offs, each ≤ K.
    """
    n_rows, max_k = ranked.shape
    gt_sizes = np.array([len(g) for g in ground_truth], dtype=np.int64)  # |GT_u| [B]
    if np.any(gt_sizes == 0):
        raise ValueError("every evaluated user needs at least one ground-truth item")
    is_gt = np.zeros((n_rows, n_items), dtype=bool)
    is_gt[np.repeat(np.arange(n_rows), gt_sizes), np.concatenate(ground_truth)] = True
    hits = np.take_along_axis(is_gt, ranked, axis=1).astype(np.float64)  # h_j [B, K]
    discount = 1.0 / np.log2(np.arange(2, max_k + 2, dtype=np.float64))  # 1/log2(j+1) [K]
    sums: dict[str, float] = {}
    for k in ks:
        recall = hits[:, :k].sum(axis=1) / gt_sizes
        ideal = (np.arange(k)[None, :] < np.minimum(gt_sizes, k)[:, None]).astype(np.float64)
        idcg = (ideal * discount[:k]).sum(axis=1)
        dcg = (hits[:, :k] * discount[:k]).sum(axis=1)
        idcg[idcg == 0.0] = 1.0
        ndcg = dcg / idcg
        ndcg[np.isnan(ndcg)] = 0.0
        sums[f"recall@{k}"] = float(np.sum(recall))
        sums[f"ndcg@{k}"] = float(np.sum(ndcg))
    return sums


def _result_keys(ks: Sequence[int]) -> list[str]:
    return [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks]


def metrics_from_scores(
    scores: np.ndarray,
    ground_truth: Sequence[np.ndarray],
    ks: Sequence[int] = (5, 10, 20),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Recall@k and NDCG@k from a given score matrix (no masking is applied here).

    Args:
        scores: [n_eval_users, I] scores, already masked if masking is wanted.
        ground_truth: n_eval_users arrays of GT item ids (distinct, non-empty).
        ks: cut-offs; K = max(ks) ≤ I.
        batch_size: users per accumulation batch (1024 as in the reference).

    Returns:
        {"recall@k": …, "ndcg@k": …} as Python floats, the mean over rows.
    """
    scores_t = torch.as_tensor(np.asarray(scores))
    n_rows, n_items = scores_t.shape
    if len(ground_truth) != n_rows:
        raise ValueError(f"{len(ground_truth)} ground-truth lists for {n_rows} score rows")
    max_k = max(ks)
    results = dict.fromkeys(_result_keys(ks), 0.0)
    for start in range(0, n_rows, batch_size):
        stop = min(start + batch_size, n_rows)
        ranked = topk_items(scores_t[start:stop], max_k)
        gts = [np.asarray(g, dtype=np.int64) for g in ground_truth[start:stop]]
        for key, value in _metric_sums(ranked, gts, n_items, ks).items():
            results[key] += value / n_rows
    return results


def evaluate(
    model: ScoresModel,
    n_items: int,
    train_users: np.ndarray,
    train_items: np.ndarray,
    split_users: np.ndarray,
    split_items: np.ndarray,
    ks: Sequence[int] = (5, 10, 20),
    batch_size: int = 1024,
) -> dict[str, float]:
    """RLMRec's full-ranking evaluation of ``model`` on one split (validation or test).

    Only training positives are masked (validation items stay rankable when testing).

    Args:
        model: has ``full_predict(users int64 [B]) -> [B, I]`` (and optionally
            ``eval_embeddings()``, see :class:`ScoresModel`).
        n_items: I.
        train_users, train_items: int [nnz_train] training interactions (the mask).
        split_users, split_items: int [nnz_split] the split's interactions (the ground truth).
        ks: cut-offs; K = max(ks).
        batch_size: users per test batch (1024).

    Returns:
        {"recall@k": …, "ndcg@k": …} for k in ks, Python floats.
    """
    n_rows = 1 + int(max(np.max(train_users, initial=-1), np.max(split_users, initial=-1)))
    train_mat = interaction_matrix(n_rows, n_items, train_users, train_items)
    split_mat: sp.csr_matrix = interaction_matrix(n_rows, n_items, split_users, split_items)
    eval_users = np.flatnonzero(np.diff(split_mat.indptr) > 0)  # ascending, |GT_u| ≥ 1
    n_eval = eval_users.size
    max_k = max(ks)
    results = dict.fromkeys(_result_keys(ks), 0.0)
    with torch.no_grad():
        score_batch = _batch_scorer(model)
    for start in range(0, n_eval, batch_size):
        batch_users = eval_users[start : start + batch_size]
        with torch.no_grad():
            scores = score_batch(torch.from_numpy(batch_users.astype(np.int64)))
            train_mask = torch.from_numpy(train_mat[batch_users].toarray()).to(scores.dtype)
            ranked = topk_items(mask_training_items(scores, train_mask.to(scores.device)), max_k)
        gts = [
            split_mat.indices[split_mat.indptr[u] : split_mat.indptr[u + 1]] for u in batch_users
        ]
        for key, value in _metric_sums(ranked, gts, n_items, ks).items():
            results[key] += value / n_eval
    return results
