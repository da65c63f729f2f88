"""Hand-checked tests of the project's PyTorch reference (darec_jax.reference); § and Q tags refer
to docs/backbones.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from darec_jax.reference import (  # noqa: E402
    LightGCNRef,
    adjacency_edges,
    evaluate,
    fit,
    interactions_from_matrix,
    make_optimizer,
    mask_training_items,
    metrics_from_scores,
    normalized_adjacency,
    sample_negatives,
    train_epoch,
)
from darec_jax.reference.metrics import topk_items  # noqa: E402

# Tiny graph: U = 3, I = 4; user 2 and item 3 are isolated; (0, 0) is given twice.
TINY_U, TINY_I = 3, 4
TINY_USERS = np.array([0, 0, 1, 1, 0])
TINY_ITEMS = np.array([0, 1, 1, 2, 0])
TINY_NNZ = 4
# Degrees by global node: users 0..2, then items 0..3 (nodes 3..6).
TINY_DEGREE = np.array([2, 2, 0, 1, 2, 1, 0])


def _tiny_adj(self_loops: bool = False) -> torch.Tensor:
    return normalized_adjacency(TINY_U, TINY_I, TINY_USERS, TINY_ITEMS, self_loops=self_loops)


def _set_embeddings(model: LightGCNRef, users: np.ndarray, items: np.ndarray) -> None:
    with torch.no_grad():
        model.user_embeds.copy_(torch.tensor(users, dtype=torch.float32))
        model.item_embeds.copy_(torch.tensor(items, dtype=torch.float32))


# ---------------------------------------------------------------------------------------------
# Adjacency (§1.2)


def test_adjacency_values_are_inverse_sqrt_degree_products() -> None:
    adj = _tiny_adj()
    rows, cols, values = adjacency_edges(adj)
    assert adj.dtype == torch.float32 and adj._indices().dtype == torch.int64
    assert tuple(adj.shape) == (7, 7)
    assert not adj.is_coalesced()
    assert rows.size == 2 * TINY_NNZ  # E = 2·nnz(R), duplicates collapsed
    expected = (1.0 / np.sqrt(TINY_DEGREE[rows] * TINY_DEGREE[cols])).astype(np.float32)
    np.testing.assert_array_equal(values, expected)
    # Bipartite and symmetric: every entry joins a user and an item, in both directions.
    assert np.all((rows < TINY_U) != (cols < TINY_U))
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == set(
        zip(cols.tolist(), rows.tolist(), strict=True)
    )
    # scipy 1.17's CSC → COO order: column-major, ascending rows inside a column.
    np.testing.assert_array_equal(np.lexsort((rows, cols)), np.arange(rows.size))
    dense = adj.to_dense().numpy()
    for isolated in (2, TINY_U + 3):
        assert not dense[isolated].any() and not dense[:, isolated].any()


def test_adjacency_self_loops() -> None:
    rows, cols, values = adjacency_edges(_tiny_adj(self_loops=True))
    n_nodes = TINY_U + TINY_I
    assert rows.size == 2 * TINY_NNZ + n_nodes
    degree = TINY_DEGREE + 1
    expected = (1.0 / np.sqrt(degree[rows] * degree[cols])).astype(np.float32)
    np.testing.assert_array_equal(values, expected)
    diag = rows == cols
    assert diag.sum() == n_nodes
    np.testing.assert_allclose(values[diag], 1.0 / degree[rows[diag]], rtol=1e-7)


def test_interactions_from_matrix_binarises() -> None:
    sp = pytest.importorskip("scipy.sparse")
    mat = sp.coo_matrix(([2.0, 1.0, 3.0], ([1, 0, 1], [2, 1, 0])), shape=(2, 3))
    users, items = interactions_from_matrix(mat)
    np.testing.assert_array_equal(users, [0, 1, 1])
    np.testing.assert_array_equal(items, [1, 0, 2])


# ---------------------------------------------------------------------------------------------
# Edge dropout (§1.3, Q4)


def test_edge_drop_keep_rule_and_values() -> None:
    adj = _tiny_adj()
    model = LightGCNRef(TINY_U, TINY_I, adj, embedding_size=4, keep_rate=0.8)
    n_edges = adj._values().shape[0]
    uniforms = torch.full((n_edges,), 0.5)
    uniforms[0] = 0.2  # fl32(0.2 + 0.8) == 1.0 → kept
    uniforms[1] = 0.19  # 0.99 → dropped
    uniforms[2] = 0.0  # dropped
    dropped = model.edge_drop(adj, uniforms)
    rows, cols, values = adjacency_edges(adj)
    kept_rows, kept_cols, kept_values = adjacency_edges(dropped)
    keep = np.ones(n_edges, dtype=bool)
    keep[[1, 2]] = False
    np.testing.assert_array_equal(kept_rows, rows[keep])
    np.testing.assert_array_equal(kept_cols, cols[keep])
    np.testing.assert_array_equal(kept_values, values[keep])  # no rescaling


def test_edge_drop_draws_torch_rand_when_not_injected() -> None:
    adj = _tiny_adj()
    model = LightGCNRef(TINY_U, TINY_I, adj, embedding_size=4, keep_rate=0.5)
    torch.manual_seed(7)
    drawn = model.edge_drop(adj)
    torch.manual_seed(7)
    injected = model.edge_drop(adj, torch.rand(adj._values().shape[0]))
    np.testing.assert_array_equal(drawn._indices().numpy(), injected._indices().numpy())


def test_edge_drop_keep_one_is_identity_and_draws_nothing() -> None:
    adj = _tiny_adj()
    model = LightGCNRef(TINY_U, TINY_I, adj, embedding_size=4, keep_rate=1.0)
    state = torch.random.get_rng_state()
    assert model.edge_drop(adj) is adj
    assert model.edge_drop(adj, torch.zeros(adj._values().shape[0])) is adj
    assert torch.equal(torch.random.get_rng_state(), state)


# ---------------------------------------------------------------------------------------------
# Forward and loss (§2.2, §1.7, Q12)


def test_forward_is_hand_computed_sum_of_layers() -> None:
    # One user linked to two items: Â has a = 1/sqrt(2) on the four directed entries.
    adj = normalized_adjacency(1, 2, np.array([0, 0]), np.array([0, 1]))
    model = LightGCNRef(1, 2, adj, embedding_size=2, layer_num=3, keep_rate=1.0)
    x_u = np.array([1.0, 2.0])
    x_items = np.array([[3.0, -1.0], [0.5, 4.0]])
    _set_embeddings(model, x_u[None], x_items)
    a, s = 1 / math.sqrt(2), x_items.sum(axis=0)
    # E1 = (a·s ; a·x_u ; a·x_u), E2 = (x_u ; s/2 ; s/2), E3 = (a·s ; a·x_u ; a·x_u).
    expected_user = 2 * x_u + 2 * a * s
    expected_items = x_items + 2 * a * x_u + s / 2
    user_final, item_final = model(adj)
    np.testing.assert_allclose(user_final.detach().numpy()[0], expected_user, rtol=1e-6)
    np.testing.assert_allclose(item_final.detach().numpy(), expected_items, rtol=1e-6)
    scores = model.full_predict(torch.tensor([0])).detach().numpy()
    np.testing.assert_allclose(scores[0], expected_items @ expected_user, rtol=1e-6)


def test_bpr_and_reg_match_hand_computation() -> None:
    adj = normalized_adjacency(2, 3, np.array([0, 1]), np.array([0, 2]))
    reg_weight = 1e-3
    model = LightGCNRef(
        2, 3, adj, embedding_size=2, layer_num=0, reg_weight=reg_weight, keep_rate=1.0
    )
    users = np.array([[1.0, 0.0], [0.0, 1.0]])
    items = np.array([[0.5, 0.0], [100.0, 0.0], [0.0, 2.0]])
    _set_embeddings(model, users, items)
    anc, pos, neg = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 0])
    total, parts = model.cal_loss(anc, pos, neg)
    # Row 0: s⁻ − s⁺ = 100 − 0.5 = 99.5 > 20 → softplus is exactly x (a naive float32
    # log(1 + eˣ) would overflow to inf). Row 1: 0 − 2 = −2 → log(1 + e⁻²).
    bpr = (99.5 + math.log1p(math.exp(-2.0))) / 2
    reg = reg_weight * (np.square(users).sum() + np.square(items).sum())
    assert parts["bpr"].item() == pytest.approx(bpr, rel=1e-6)
    assert parts["reg"].item() == pytest.approx(reg, rel=1e-6)
    assert total.item() == pytest.approx(bpr + reg, rel=1e-6)
    total.backward()
    assert model.user_embeds.grad is not None and model.item_embeds.grad is not None


def test_cal_loss_uses_dropped_adjacency() -> None:
    adj = _tiny_adj()
    torch.manual_seed(0)
    model = LightGCNRef(TINY_U, TINY_I, adj, embedding_size=4, layer_num=2, keep_rate=0.8)
    n_edges = adj._values().shape[0]
    anc, pos, neg = torch.tensor([0, 1]), torch.tensor([1, 2]), torch.tensor([3, 0])
    all_kept, _ = model.cal_loss(anc, pos, neg, torch.full((n_edges,), 0.99))
    full = LightGCNRef(TINY_U, TINY_I, adj, embedding_size=4, layer_num=2, keep_rate=1.0)
    full.load_state_dict(model.state_dict())
    reference, _ = full.cal_loss(anc, pos, neg)
    assert all_kept.item() == reference.item()
    # Everything dropped: F = E^{(0)} + 0 + 0.
    none_kept, parts = model.cal_loss(anc, pos, neg, torch.zeros(n_edges))
    u, i = model.user_embeds.detach(), model.item_embeds.detach()
    x = ((u[anc] * i[neg]).sum(-1) - (u[anc] * i[pos]).sum(-1)).double()
    expected = torch.nn.functional.softplus(x).sum().item() / 2
    assert parts["bpr"].item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Metrics (§1.10, Q21)

HAND_SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],  # ranking 0 1 2 3 4 5
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # ranking 5 4 3 2 1 0
        [0.3, 0.9, 0.1, 0.8, 0.2, 0.7],  # ranking 1 3 5 0 4 2
    ],
    dtype=np.float32,
)
# |GT| = 4 > k = 2; |GT| = 1 < k; |GT| = 2 < k = 4.
HAND_GT = [np.array([1, 3, 4, 5]), np.array([5]), np.array([0, 2])]


def _hand_metrics() -> dict[str, float]:
    l3, l5 = 1 / math.log2(3), 1 / math.log2(5)
    # Hits in the top 4: user 0 [0 1 0 1], user 1 [1 0 0 0], user 2 [0 0 0 1].
    recall2 = (1 / 4 + 1 + 0) / 3
    recall4 = (2 / 4 + 1 + 1 / 2) / 3
    ndcg2 = (l3 / (1 + l3) + 1 + 0) / 3
    ndcg4 = ((l3 + l5) / (1 + l3 + 0.5 + l5) + 1 + l5 / (1 + l3)) / 3
    return {"recall@2": recall2, "recall@4": recall4, "ndcg@2": ndcg2, "ndcg@4": ndcg4}


@pytest.mark.parametrize("batch_size", [1024, 2])
def test_metrics_from_scores_hand_case(batch_size: int) -> None:
    got = metrics_from_scores(HAND_SCORES, HAND_GT, ks=(2, 4), batch_size=batch_size)
    expected = _hand_metrics()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


class _FixedScores:
    """A stand-in model whose ``full_predict`` returns rows of a fixed score matrix."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def full_predict(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores[users]


def test_evaluate_hand_case_with_unevaluated_user() -> None:
    # User 1 has no split items, so it is skipped; the others are HAND_SCORES' rows.
    scores = np.insert(HAND_SCORES, 1, np.linspace(1, 0, 6), axis=0)
    gt = [HAND_GT[0], np.array([], dtype=np.int64), HAND_GT[1], HAND_GT[2]]
    split_users = np.concatenate([np.full(len(g), u) for u, g in enumerate(gt)])
    got = evaluate(
        _FixedScores(scores),
        6,
        np.array([], dtype=np.int64),
        np.array([], dtype=np.int64),
        split_users,
        np.concatenate(gt),
        ks=(2, 4),
    )
    for key, value in _hand_metrics().items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_masked_training_items_never_ranked() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, k = 6, 40, 20
    scores = rng.random((n_users, n_items)).astype(np.float32)
    order = np.argsort(-scores, axis=1)
    # Training positives: each user's 8 best-scoring items plus 4 random ones.
    train = [
        np.union1d(order[u, :8], rng.choice(n_items, 4, replace=False)) for u in range(n_users)
    ]
    mask = np.zeros((n_users, n_items), dtype=np.float32)
    for u, items in enumerate(train):
        mask[u, items] = 1.0
    masked = mask_training_items(torch.from_numpy(scores), torch.from_numpy(mask))
    assert torch.all(masked[mask == 1] == -1e8)
    assert torch.equal(masked[mask == 0], torch.from_numpy(scores)[mask == 0])
    ranked = topk_items(masked, k)
    for u in range(n_users):
        assert not np.isin(ranked[u], train[u]).any()
    # Through evaluate: GT = the best non-training item, so Recall@1 = 1 only if masking works.
    best_free = [order[u][~np.isin(order[u], train[u])][0] for u in range(n_users)]
    got = evaluate(
        _FixedScores(scores),
        n_items,
        np.concatenate([np.full(len(t), u) for u, t in enumerate(train)]),
        np.concatenate(train),
        np.arange(n_users),
        np.array(best_free),
        ks=(1, 5),
    )
    assert got["recall@1"] == 1.0 and got["ndcg@5"] == 1.0


def _random_graph(
    seed: int, n_users: int = 40, n_items: int = 50, n_edges: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, n_users * n_items, n_edges))
    return keys // n_items, keys % n_items


def test_evaluate_matches_metrics_from_scores_on_lightgcn() -> None:
    n_users, n_items = 40, 50
    users, items = _random_graph(1)
    split = np.random.default_rng(2).random(users.size) < 0.2
    train_u, train_i, test_u, test_i = users[~split], items[~split], users[split], items[split]
    torch.manual_seed(0)
    adj = normalized_adjacency(n_users, n_items, train_u, train_i)
    model = LightGCNRef(n_users, n_items, adj, embedding_size=8, layer_num=2)
    got = evaluate(model, n_items, train_u, train_i, test_u, test_i, ks=(5, 10), batch_size=7)
    eval_users = np.unique(test_u)
    mask = np.zeros((n_users, n_items), dtype=np.float32)
    mask[train_u, train_i] = 1.0
    with torch.no_grad():
        scores = model.full_predict(torch.from_numpy(eval_users))
        scores = mask_training_items(scores, torch.from_numpy(mask[eval_users]))
    gt = [np.unique(test_i[test_u == u]) for u in eval_users]
    expected = metrics_from_scores(scores.numpy(), gt, ks=(5, 10))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


# ---------------------------------------------------------------------------------------------
# Negatives and training (§1.8, §1.9)


def test_sample_negatives_rejects_positives_and_replays_sequential_loop() -> None:
    users, items = _random_graph(3, n_users=10, n_items=12, n_edges=60)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    for sequential in (False, True):
        negs = sample_negatives(users, items, 12, np.random.RandomState(0), sequential=sequential)
        assert negs.shape == users.shape and negs.dtype == np.int64
        assert negs.min() >= 0 and negs.max() < 12
        assert not any((u, j) in positives for u, j in zip(users, negs, strict=True))
    rng = np.random.RandomState(5)
    expected = []
    for u in users.tolist():
        j = rng.randint(12)
        while (u, j) in positives:
            j = rng.randint(12)
        expected.append(j)
    got = sample_negatives(users, items, 12, np.random.RandomState(5), sequential=True)
    np.testing.assert_array_equal(got, expected)


def test_sample_negatives_uniform_over_non_positives() -> None:
    # One user with positives {0, 1} out of 5 items: negatives uniform over {2, 3, 4}.
    n = 30000
    users, items = np.zeros(n, dtype=np.int64), np.tile([0, 1], n // 2)
    negs = sample_negatives(users, items, 5, np.random.RandomState(1))
    counts = np.bincount(negs, minlength=5)
    assert counts[0] == counts[1] == 0
    np.testing.assert_allclose(counts[2:] / n, 1 / 3, atol=0.015)


def test_train_epoch_loss_decreases_on_random_graph() -> None:
    n_users, n_items = 40, 50
    users, items = _random_graph(4, n_users, n_items)
    torch.manual_seed(0)
    adj = normalized_adjacency(n_users, n_items, users, items)
    model = LightGCNRef(n_users, n_items, adj, embedding_size=16, layer_num=2)
    optimizer = make_optimizer(model, lr=1e-2)
    rng = np.random.RandomState(0)
    losses = [
        train_epoch(model, optimizer, users, items, n_items, rng, batch_size=64) for _ in range(6)
    ]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.05


def test_fit_runs_and_restores_best_state() -> None:
    n_users, n_items = 30, 40
    users, items = _random_graph(5, n_users, n_items, 400)
    part = np.random.default_rng(6).integers(0, 5, users.size)
    train = (users[part >= 2], items[part >= 2])
    valid = (users[part == 1], items[part == 1])
    test = (users[part == 0], items[part == 0])
    torch.manual_seed(0)
    adj = normalized_adjacency(n_users, n_items, *train)
    model = LightGCNRef(n_users, n_items, adj, embedding_size=8, layer_num=2)
    result = fit(
        model, n_items, train, valid, test, np.random.RandomState(0), max_epochs=7, lr=1e-2
    )
    assert result["epochs_run"] == 7 and len(result["losses"]) == 7
    assert result["best_epoch"] in (0, 3, 6)
    assert set(result["test"]) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)}
    assert evaluate(model, n_items, *train, *valid) == result["valid"]


def test_rlmrec_pipeline_epoch_runs_every_interaction_once():
    """RLMRec's DataLoader path: ceil(nnz / B) steps, and it trains like the vectorised path."""
    import numpy as np

    from darec_jax.reference import LightGCNRef, make_optimizer, normalized_adjacency
    from darec_jax.reference.train import train_epoch

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 4)
    items = np.concatenate([rng.choice(20, 4, replace=False) for _ in range(30)])
    torch.manual_seed(0)
    adj = normalized_adjacency(30, 20, users, items)
    model = LightGCNRef(30, 20, adj, 8, 2, 1e-4, 0.8)
    optim = make_optimizer(model, lr=1e-2)
    calls = []
    original = model.cal_loss

    def counting(anc, pos, neg, uniforms=None):
        calls.append(anc.shape[0])
        return original(anc, pos, neg, uniforms)

    model.cal_loss = counting
    state = np.random.RandomState(0)
    losses = [
        train_epoch(model, optim, users, items, 20, state, batch_size=32, pipeline="rlmrec")
        for _ in range(15)
    ]
    assert calls[:4] == [32, 32, 32, 24]
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="unknown pipeline"):
        train_epoch(model, optim, users, items, 20, state, pipeline="fast")
