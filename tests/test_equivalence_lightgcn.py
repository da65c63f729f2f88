"""LightGCN, its loss and the metrics: the JAX code equals the PyTorch reference.

Same weights, same batch and the same injected edge-dropout uniforms in both; float32 with the
highest matmul precision. Compared: the normalised graph, propagated embeddings (training and
eval forward), each loss term, gradients, parameters after one Adam step, and the metrics.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.eval import evaluate_embeddings, metrics_from_scores, prepare_ranking
from darec_jax.graph import edge_permutation
from darec_jax.train.step import StepInputs, make_step_functions
from tests.equivalence import assert_rel_close, injected_uniforms, padded_batch
from tests.toy import SHARED_DATA, random_dataset

torch = pytest.importorskip("torch")
ref = pytest.importorskip("darec_jax.reference")


@pytest.fixture(autouse=True)
def _torch_precision():
    torch.set_float32_matmul_precision("highest")


def _setup(data, layer_num=3, keep_rate=0.8, reg_weight=1e-2, spmm_impl="segment_sum"):
    cfg = config_lib.build_config(
        "synthetic",
        "lightgcn",
        "none",
        {
            "model.layer_num": layer_num,
            "model.lightgcn.keep_rate": keep_rate,
            "model.reg_weight": reg_weight,
            "train.lr": 1e-2,
            "model.spmm_impl": spmm_impl,
            "model.spmm_block_edges": 40,
        },
    )
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    adj = ref.normalized_adjacency(data.n_users, data.n_items, data.train.users, data.train.items)
    model = ref.LightGCNRef(data.n_users, data.n_items, adj, 32, layer_num, reg_weight, keep_rate)
    # Load the same weights into both: the JAX initialisation goes into the torch module.
    with torch.no_grad():
        model.user_embeds.copy_(torch.from_numpy(np.array(params["backbone"]["user_emb"])))
        model.item_embeds.copy_(torch.from_numpy(np.array(params["backbone"]["item_emb"])))
    rows, cols, values = ref.adjacency_edges(adj)
    perm = edge_permutation(arrays.graph, rows, cols)  # reference entry k -> our edge perm[k]
    return cfg, fns, arrays, params, state, model, perm, values


def test_normalised_graph_equals_reference(toy_data):
    _, _, arrays, _, _, _, perm, values = _setup(toy_data)
    assert perm.shape[0] == arrays.graph.n_edges  # same edge set, both directions
    assert_rel_close(np.asarray(arrays.graph.weights)[perm], values, "edge weights", rtol=1e-7)


def _batch(data, size, seed):
    rng = np.random.default_rng(seed)
    k = rng.integers(0, data.train.users.shape[0], size)
    return (
        data.train.users[k].astype(np.int64),
        data.train.items[k].astype(np.int64),
        rng.integers(0, data.n_items, size).astype(np.int64),
    )


@pytest.mark.parametrize("spmm_impl", ["segment_sum", "transposed", "blocked", "native"])
@pytest.mark.parametrize("layer_num,keep_rate", [(3, 0.8), (2, 1.0), (0, 0.8)])
def test_forward_loss_gradients_and_adam_step(toy_data, layer_num, keep_rate, spmm_impl):
    """Every execution of the graph products (see model.spmm_impl) gives the reference's numbers."""
    data = toy_data
    cfg, fns, arrays, params, state, model, perm, _ = _setup(
        data, layer_num, keep_rate, spmm_impl=spmm_impl
    )
    assert arrays.graph.impl == spmm_impl
    anc, pos, neg = _batch(data, 50, seed=layer_num)
    u_ref, u_jax = injected_uniforms(perm, seed=layer_num)  # same draw, same directed entry
    uniforms = None if keep_rate == 1.0 else jnp.asarray(u_jax)

    # Our batch is padded to 64 rows; padding must not change anything.
    batch = padded_batch(anc, pos, neg, 64)

    # Propagated training embeddings.
    fu, fi = fns.train_embeddings(params, arrays, StepInputs(backbone={"uniforms": uniforms}))[:2]
    dropped = model.edge_drop(model.adj, u_ref if keep_rate < 1 else None)
    ru, ri = model(dropped)
    assert_rel_close(fu, ru.detach().numpy(), "train F_u")
    assert_rel_close(fi, ri.detach().numpy(), "train F_i")

    # Each loss term, then the gradients.
    draws = StepInputs(backbone={} if uniforms is None else {"uniforms": uniforms})
    (total, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
    model.zero_grad()
    rtotal, rterms = model.cal_loss(
        torch.from_numpy(anc),
        torch.from_numpy(pos),
        torch.from_numpy(neg),
        u_ref if keep_rate < 1 else None,
    )
    rtotal.backward()
    assert_rel_close(terms["bpr"], rterms["bpr"].item(), "bpr")
    assert_rel_close(terms["reg"], rterms["reg"].item(), "reg")
    assert_rel_close(total, rtotal.item(), "total")
    assert_rel_close(grads["backbone"]["user_emb"], model.user_embeds.grad.numpy(), "grad user_emb")
    assert_rel_close(grads["backbone"]["item_emb"], model.item_embeds.grad.numpy(), "grad item_emb")

    # One Adam step.
    new_params = fns.step(state, arrays, batch, draws)[0].params
    optim = ref.make_optimizer(model, lr=cfg.train.lr)
    optim.step()
    assert_rel_close(
        new_params["backbone"]["user_emb"], model.user_embeds.detach().numpy(), "adam user_emb"
    )
    assert_rel_close(
        new_params["backbone"]["item_emb"], model.item_embeds.detach().numpy(), "adam item_emb"
    )

    # Clean eval forward after the step.
    eu, ei = fns.eval_embeddings(new_params, arrays)
    reu, rei = model.eval_embeddings()
    assert_rel_close(eu, reu.detach().numpy(), "eval F_u")
    assert_rel_close(ei, rei.detach().numpy(), "eval F_i")


def test_metrics_on_the_same_score_matrix():
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 30
    # Distinct scores (no ties), so top-k is unambiguous in both frameworks.
    scores = rng.permuted(np.tile(np.arange(n_items, dtype=np.float32), (n_users, 1)), axis=1)
    scores = scores + rng.random((n_users, n_items), dtype=np.float32) * 0.1
    gt = [rng.choice(n_items, rng.integers(1, 25), replace=False) for _ in range(n_users)]
    gt_mask = np.zeros((n_users, n_items), np.float32)
    for u, items in enumerate(gt):
        gt_mask[u, items] = 1
    ks = (5, 10, 20)
    ours = {
        k: float(np.mean(v))
        for k, v in metrics_from_scores(scores, gt_mask, gt_mask.sum(1), ks).items()
    }
    theirs = ref.metrics_from_scores(scores, gt, ks)
    for name in theirs:
        assert ours[name] == pytest.approx(theirs[name], rel=1e-6), name


def test_full_evaluation_matches_reference(toy_data):
    data = random_dataset(n_users=300, n_items=120, per_user=10, seed=5)
    _, fns, arrays, params, _, model, _, _ = _setup(data)
    fu, fi = fns.eval_embeddings(params, arrays)
    for split in (data.val, data.test):
        task = prepare_ranking(
            data.n_users,
            data.n_items,
            data.train.users,
            data.train.items,
            split.users,
            split.items,
            chunk=64,
        )
        ours = evaluate_embeddings(fu, fi, task)
        theirs = ref.evaluate(
            model, data.n_items, data.train.users, data.train.items, split.users, split.items
        )
        for name in theirs:
            assert ours[name] == pytest.approx(theirs[name], rel=1e-5, abs=1e-7), name


@pytest.mark.skipif(not (SHARED_DATA / "yelp").exists(), reason="needs ../shared/data/yelp")
@pytest.mark.parametrize("spmm_impl", ["segment_sum", "native"])
def test_real_yelp_graph_and_forward_equal_reference(spmm_impl):
    """The real graph (the native kernel's multi-threaded path runs at this size)."""
    from darec_jax.data import load_rlmrec_folder

    data = load_rlmrec_folder(SHARED_DATA / "yelp", name="yelp")
    _, fns, arrays, params, _, model, perm, values = _setup(data, layer_num=3, spmm_impl=spmm_impl)
    assert perm.shape[0] == 2 * 166620
    assert_rel_close(np.asarray(arrays.graph.weights)[perm], values, "yelp weights", rtol=1e-7)
    fu, fi = fns.eval_embeddings(params, arrays)
    with torch.no_grad():
        ru, ri = model.eval_embeddings()
    assert_rel_close(fu, ru.numpy(), "yelp F_u")
    assert_rel_close(fi, ri.numpy(), "yelp F_i")
