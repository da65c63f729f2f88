"""Wrong-shaped inputs to the losses and the ranking metrics fail at trace time, by name,
instead of broadcasting into a wrong value (chex shape assertions at the module boundaries)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax.eval.ranking import evaluate_embeddings, metrics_from_topk_hits, prepare_ranking
from darec_jax.losses.core import bpr_loss
from darec_jax.losses.darec import (
    global_alignment,
    local_alignment,
    match_clusters,
    orthogonality,
    uniformity,
)


def _rows(seed, m, d):
    return jax.random.normal(jax.random.key(seed), (m, d))


def test_bpr_loss_rejects_mismatched_rows_and_masks():
    u, p, n = _rows(0, 6, 4), _rows(1, 6, 4), _rows(2, 6, 4)
    valid = jnp.ones(6)
    assert np.isfinite(float(jax.jit(bpr_loss)(u, p, n, valid)))
    with pytest.raises(AssertionError, match="rank"):
        bpr_loss(u[0], p[0], n[0])  # one [d] row, not a [B, d] batch
    with pytest.raises(AssertionError, match="shape"):
        bpr_loss(u, p, n[:5])
    with pytest.raises(AssertionError, match="shape"):
        jax.jit(bpr_loss)(u, p, n, valid[:, None])  # [B, 1] would broadcast to [B, B]


def test_darec_terms_reject_column_masks_and_mismatched_views():
    a, b = _rows(3, 8, 5), _rows(4, 8, 5)
    mask = jnp.ones(8)
    for term in (orthogonality, global_alignment):
        assert np.isfinite(float(term(a, b, mask=mask)))
        with pytest.raises(AssertionError, match="shape"):
            jax.jit(term)(a, b, mask=mask[:, None])
        with pytest.raises(AssertionError, match="shape"):
            term(a, b[:7])
    with pytest.raises(AssertionError, match="shape"):
        uniformity(a, mask[:, None])
    with pytest.raises(AssertionError, match="rank"):
        uniformity(a[None])


def test_local_alignment_and_matching_reject_wrong_lengths():
    a, b = _rows(5, 8, 3), _rows(6, 8, 3)
    assign = jnp.arange(8) % 3
    assert np.isfinite(float(local_alignment(a, b, assign, 3, 0.5)))
    with pytest.raises(AssertionError, match="shape"):
        local_alignment(a, b, assign[:7], 3, 0.5)
    with pytest.raises(AssertionError, match="shape"):
        local_alignment(a, b, assign, 3, 0.5, assign_llm=assign[:, None])
    # Unequal cluster counts would leave some partners unassigned.
    with pytest.raises(AssertionError, match="shape"):
        match_clusters(_rows(7, 4, 3), _rows(8, 5, 3))


def test_ranking_rejects_wrong_counts_and_item_tables():
    hits = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    gt = jnp.array([1.0, 2.0, 1.0])
    assert metrics_from_topk_hits(hits, gt, (2,))["recall@2"].shape == (3,)
    with pytest.raises(AssertionError, match="shape"):
        metrics_from_topk_hits(hits, gt[:, None], (2,))  # would give [3, 3] "per-user" values
    task = prepare_ranking(3, 5, np.array([0, 1]), np.array([0, 1]), np.array([0, 2]), [3, 4])
    fu, fi = np.ones((3, 2), np.float32), np.ones((5, 2), np.float32)
    assert set(evaluate_embeddings(fu, fi, task, ks=(2,))) == {"recall@2", "ndcg@2"}
    with pytest.raises(AssertionError):
        evaluate_embeddings(fu, fi[:4], task, ks=(2,))  # not the task's item count
    with pytest.raises(AssertionError):
        evaluate_embeddings(fu, np.ones((5, 3), np.float32), task, ks=(2,))  # other width
