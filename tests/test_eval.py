"""Ranking metrics on hand-computed cases, and the chunked device evaluation."""

import math

import chex
import numpy as np
import pytest

from darec_jax.eval import evaluate_embeddings, metrics_from_scores, prepare_ranking


def _dcg(hit_positions):
    return sum(1.0 / math.log2(j + 1) for j in hit_positions)  # positions are 1-based


def test_metrics_hand_computed():
    # 2 users x 6 items; ks = (2, 4).
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # ranking: 0 1 2 3 4 5
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ],  # ranking: 5 4 3 2 1 0
        np.float32,
    )
    gt = np.zeros((2, 6), np.float32)
    gt[0, [1, 3, 5]] = 1  # |GT| = 3 > k=2: hits at ranks 2 and 4
    gt[1, [4]] = 1  # |GT| = 1 < k: hit at rank 2
    out = metrics_from_scores(scores, gt, gt.sum(1), ks=(2, 4))
    np.testing.assert_allclose(out["recall@2"], [1 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(out["recall@4"], [2 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(
        out["ndcg@2"], [_dcg([2]) / _dcg([1, 2]), _dcg([2]) / _dcg([1])], rtol=1e-6
    )
    np.testing.assert_allclose(
        out["ndcg@4"], [_dcg([2, 4]) / _dcg([1, 2, 3]), _dcg([2]) / _dcg([1])], rtol=1e-6
    )
    capped = metrics_from_scores(scores, gt, gt.sum(1), ks=(2,), recall_denominator="min_k_gt")
    np.testing.assert_allclose(capped["recall@2"], [1 / 2, 1.0], rtol=1e-6)


@pytest.mark.parametrize("chunk", [1, 2, 1000])
def test_evaluate_embeddings_masks_training_items_and_matches_dense(chunk):
    rng = np.random.default_rng(0)
    n_users, n_items, d = 5, 12, 3
    fu = rng.normal(size=(n_users, d)).astype(np.float32)
    fi = rng.normal(size=(n_items, d)).astype(np.float32)
    scores = fu @ fi.T
    # Train: each user's 3 best-scoring items, so masking them changes the ranking.
    top3 = np.argsort(-scores, axis=1)[:, :3]
    tr_u = np.repeat(np.arange(n_users), 3)
    tr_i = top3.reshape(-1)
    # GT: user 0 none (not evaluated), others 2 items each, one of them a masked-out train item
    # would be impossible (splits are disjoint), so pick from the remaining items.
    gt_u, gt_i = [], []
    for u in range(1, n_users):
        rest = [i for i in np.argsort(-scores[u]) if i not in top3[u]]
        gt_u += [u, u]
        gt_i += [rest[0], rest[5]]
    task = prepare_ranking(n_users, n_items, tr_u, tr_i, np.array(gt_u), np.array(gt_i), chunk)
    assert task.n_users_evaluated == n_users - 1
    got = evaluate_embeddings(fu, fi, task, ks=(1, 3, 6))
    # Dense expectation: after masking, rest[0] is rank 1 and rest[5] is rank 6.
    expect = {
        "recall@1": 0.5,
        "recall@3": 0.5,
        "recall@6": 1.0,
        "ndcg@1": 1.0,
        "ndcg@3": 1.0 / _dcg([1, 2]),
        "ndcg@6": _dcg([1, 6]) / _dcg([1, 2]),
    }
    chex.assert_trees_all_close(got, expect, rtol=1e-6)


def test_native_top_k_matches_xla_top_k():
    import jax
    import jax.numpy as jnp

    from darec_jax.eval.ranking import top_k_indices
    from darec_jax.kernels import native_spmm_available

    assert native_spmm_available()
    x = jax.random.normal(jax.random.key(0), (300, 5000))  # large enough for several threads
    np.testing.assert_array_equal(top_k_indices(x, 20, native=True), jax.lax.top_k(x, 20)[1])
    ties = jnp.round(x[:, :50] * 2) / 2
    ties = ties.at[0, 3].set(jnp.nan)
    got = top_k_indices(ties, 7, native=True)
    vals = np.take_along_axis(np.asarray(ties), np.asarray(got), axis=1)
    np.testing.assert_array_equal(vals, jax.lax.top_k(jnp.nan_to_num(ties, nan=-jnp.inf), 7)[0])
    assert len({tuple(r) for r in np.sort(np.asarray(got), axis=1)}) > 1  # distinct per row
    assert all(len(set(r)) == 7 for r in np.asarray(got).tolist())


@pytest.mark.parametrize(("n_users", "n_items", "dim", "k"), [(300, 5003, 32, 20), (13, 40, 20, 7)])
def test_fused_score_topk_matches_masked_xla_top_k(n_users, n_items, dim, k):
    """The fused kernel (scores in register tiles, mask, top-k; no score matrix) ranks like
    XLA's matmul → mask → top_k, for item counts that are not multiples of the tile, widths that
    are not multiples of the vector, and rows that are not multiples of the 8-row group."""
    import jax
    import jax.numpy as jnp

    from darec_jax.kernels import item_tiles, native_spmm_available, score_topk

    assert native_spmm_available()
    ku, ki, km = jax.random.split(jax.random.key(1), 3)
    # Values on a 1/8 grid: sums of products are exact in float32, so both orders agree and
    # ties (broken towards the lower index by both) really occur.
    users = jnp.round(jax.random.normal(ku, (n_users, dim)) * 2) / 4
    items = jnp.round(jax.random.normal(ki, (n_items, dim)) * 2) / 4
    rng = np.random.default_rng(0)
    masked_rows = [
        np.sort(rng.choice(n_items, rng.integers(0, 9), replace=False)) for _ in range(n_users)
    ]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in masked_rows])]).astype(np.int32)
    flat = np.concatenate(masked_rows + [np.array([n_items, -1])]).astype(np.int32)  # + ignored
    got = score_topk(users, item_tiles(items), jnp.asarray(indptr), jnp.asarray(flat), k, n_items)
    scores = np.asarray(users @ items.T, dtype=np.float64)
    for b, cols in enumerate(masked_rows):
        scores[b, cols] = -1e8
    # Expected: descending score, ties by ascending index (a stable sort of the negated scores).
    expect = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(np.asarray(got), expect)
    assert np.any(np.diff(np.take_along_axis(scores, expect, 1), axis=1) == 0)  # ties occurred
