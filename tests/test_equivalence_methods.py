"""LightGCN with RLMRec-Con and RLMRec-Gen: the JAX code equals the PyTorch reference.

Same weights (backbone and method parameters), same padded batch, same injected edge-dropout
uniforms and node-mask seeds; every loss term, every gradient and one Adam step agree to 1e-5.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.eval import evaluate_embeddings, prepare_ranking
from darec_jax.graph import edge_permutation
from darec_jax.train.step import Batch, StepInputs, make_step_functions
from tests.equivalence import (
    assert_first_adam_step_close,
    assert_rel_close,
    darec_step_inputs,
    injected_uniforms,
    padded_batch,
)
from tests.toy import (
    assert_reported_metrics_are_the_references,
    random_dataset,
    with_llm_embeddings,
)

torch = pytest.importorskip("torch")
ref = pytest.importorskip("darec_jax.reference")
build_reference = pytest.importorskip("darec_jax.crosscheck.factory").build_reference
ref_methods = pytest.importorskip("darec_jax.reference.lightgcn")

LLM_DIM = 12


@pytest.fixture(autouse=True)
def _torch_precision():
    torch.set_float32_matmul_precision("highest")


def _data():
    return with_llm_embeddings(random_dataset(n_users=40, n_items=30, per_user=6, seed=11), LLM_DIM)


def _copy(dst, src):
    with torch.no_grad():
        dst.copy_(torch.from_numpy(np.array(src)))


def _mlp_pairs(torch_mlp, jax_mlp):
    seq = torch_mlp.mlp
    return [
        (seq[0].weight, jax_mlp["w1"]),
        (seq[0].bias, jax_mlp["b1"]),
        (seq[2].weight, jax_mlp["w2"]),
        (seq[2].bias, jax_mlp["b2"]),
    ]


def _setup(method, overrides):
    data = _data()
    base = {
        "model.layer_num": 2,
        "model.reg_weight": 1e-2,
        "train.lr": 1e-2,
        "model.spmm_impl": "segment_sum",
    }
    base.update(overrides)
    cfg = config_lib.build_config("synthetic", "lightgcn", method, base)
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    adj = ref.normalized_adjacency(data.n_users, data.n_items, data.train.users, data.train.items)
    common = dict(embedding_size=32, layer_num=2, reg_weight=1e-2, keep_rate=0.8)
    r = cfg.rlmrec
    if method == "rlmrec-con":
        cls, options = (
            ref_methods.LightGCNPlusRef,
            dict(kd_weight=r.kd_weight, kd_temperature=r.kd_temperature),
        )
    else:
        cls, options = (
            ref_methods.LightGCNGeneRef,
            dict(
                mask_ratio=r.mask_ratio,
                recon_weight=r.recon_weight,
                recon_temperature=r.recon_temperature,
            ),
        )
    model = cls(data.n_users, data.n_items, adj, data.user_emb, data.item_emb, **common, **options)
    # The JAX initialisation goes into torch.
    for dst, src in _tree_pairs(model, method, params):
        _copy(dst, src)
    rows, cols, _ = ref.adjacency_edges(adj)
    perm = edge_permutation(arrays.graph, rows, cols)
    return cfg, data, fns, arrays, params, state, model, perm


def _tree_pairs(model, method, tree):
    out = [
        (model.user_embeds, tree["backbone"]["user_emb"]),
        (model.item_embeds, tree["backbone"]["item_emb"]),
    ]
    out += _mlp_pairs(model.mlp, tree["method"]["mlp"])
    if method == "rlmrec-gen":
        out.append((model.masker_token, tree["method"]["mask_token"]))
    return out


@pytest.mark.parametrize(
    "method,overrides",
    [
        ("rlmrec-con", {"rlmrec.kd_weight": 0.5, "rlmrec.kd_temperature": 0.2}),
        (
            "rlmrec-gen",
            {"rlmrec.mask_ratio": 0.1, "rlmrec.recon_weight": 0.5, "rlmrec.recon_temperature": 0.3},
        ),
    ],
)
def test_terms_gradients_and_adam_step(method, overrides):
    cfg, data, fns, arrays, params, state, model, perm = _setup(method, overrides)
    rng = np.random.default_rng(0)
    k = rng.integers(0, data.train.users.shape[0], 45)
    anc = data.train.users[k].astype(np.int64)
    pos = data.train.items[k].astype(np.int64)
    neg = rng.integers(0, data.n_items, 45).astype(np.int64)
    batch = padded_batch(anc, pos, neg, 64)
    u_ref, u_jax = injected_uniforms(perm, seed=1)
    draws = StepInputs(backbone={"uniforms": jnp.asarray(u_jax)})
    extra = {}
    if method == "rlmrec-gen":
        n_nodes = data.n_users + data.n_items
        seeds = rng.choice(n_nodes, fns.method.n_seeds, replace=False)
        draws.method["seeds"] = jnp.asarray(seeds, jnp.int32)
        extra["seeds"] = torch.from_numpy(seeds.astype(np.int64))
        assert fns.method.n_seeds == model.num_seeds()

    (total, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
    model.zero_grad()
    rtotal, rterms = model.cal_loss(
        torch.from_numpy(anc), torch.from_numpy(pos), torch.from_numpy(neg), u_ref, **extra
    )
    rtotal.backward()
    for name, value in rterms.items():
        assert_rel_close(terms[name], value.item(), name)
        assert value.item() != 0.0
    assert_rel_close(total, rtotal.item(), "total")
    for k, (t, g) in enumerate(_tree_pairs(model, method, grads)):
        assert_rel_close(g, t.grad.numpy(), f"grad {k}")

    new_params = fns.step(state, arrays, batch, draws)[0].params
    optim = ref.make_optimizer(model, lr=cfg.train.lr)
    optim.step()
    for k, (t, p) in enumerate(_tree_pairs(model, method, new_params)):
        assert_rel_close(p, t.detach().numpy(), f"adam {k}")


@pytest.mark.parametrize("method", ["rlmrec-con", "rlmrec-gen"])
def test_method_runs_end_to_end_on_the_planted_world(method, tmp_path):
    from darec_jax.train.trainer import load_data, train_and_evaluate

    cfg = config_lib.build_config(
        "synthetic",
        "lightgcn",
        method,
        {
            "train.epochs": "4",
            "data.synthetic.n_users": "150",
            "data.synthetic.n_items": "100",
            "data.synthetic.llm_dim": "16",
            "train.batch_size": "256",
        },
    )
    res = train_and_evaluate(
        cfg, tmp_path / method, progress=False, log=lambda _: None, plots=False
    )
    assert res["status"] == "finished" and res["method"] == method
    assert_reported_metrics_are_the_references(tmp_path / method, load_data(cfg), res)


def _darec_setup(overrides):
    data = _data()
    base = {
        "model.layer_num": 2,
        "model.reg_weight": 1e-2,
        "train.lr": 1e-2,
        "model.spmm_impl": "segment_sum",
        "darec.num_clusters": 4,
        "darec.pair_sample": 20,
    }
    base.update(overrides)
    cfg = config_lib.build_config("synthetic", "lightgcn", "darec", base)
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    model, adj = build_reference(cfg, data)
    assert cfg.model.lightgcn.keep_rate == 0.8 and cfg.model.embedding_size == 32
    pairs = _darec_pairs(model, params)
    for dst, src in pairs:
        _copy(dst, src)
    rows, cols, _ = ref.adjacency_edges(adj)
    return (
        cfg,
        data,
        fns,
        arrays,
        params,
        state,
        model,
        edge_permutation(arrays.graph, rows, cols),
    )


def _darec_pairs(model, tree):
    out = [
        (model.user_embeds, tree["backbone"]["user_emb"]),
        (model.item_embeds, tree["backbone"]["item_emb"]),
    ]
    for head in ("cf_specific", "cf_shared", "llm_specific", "llm_shared"):
        out += _mlp_pairs(getattr(model, head), tree["method"][head])
    return out


@pytest.mark.parametrize(
    "overrides",
    [
        {
            "darec.lambda_or": 0.3,
            "darec.lambda_un": 0.2,
            "darec.lambda_gl": 0.4,
            "darec.lambda_lo": 0.5,
        },
        {
            "darec.lambda_or": 0.0,
            "darec.lambda_un": 0.2,
            "darec.lambda_gl": 0.4,
            "darec.lambda_lo": 0.5,
            "darec.global_loss": "kl",
            "darec.global_temperature": 0.5,
        },
        {"darec.lambda_lo": 0.5, "darec.local_assign": "matched"},
        {"darec.lambda_or": 0.3, "darec.lambda_lo": 0.5, "darec.score_on": "disentangled"},
    ],
)
def test_darec_terms_gradients_and_adam_step(overrides):
    cfg, data, fns, arrays, params, state, model, perm = _darec_setup(overrides)
    rng = np.random.default_rng(2)
    n_real, size = 45, 64
    k = rng.integers(0, data.train.users.shape[0], n_real)
    anc = data.train.users[k].astype(np.int64)
    pos = data.train.items[k].astype(np.int64)
    neg = rng.integers(0, data.n_items, n_real).astype(np.int64)
    batch = padded_batch(anc, pos, neg, size)
    u_ref, u_jax = injected_uniforms(perm, seed=3)
    user_assign = rng.integers(0, 4, data.n_users)
    item_assign = rng.integers(0, 4, data.n_items)
    user_subset = rng.choice(n_real, 20, replace=False)
    item_subset = rng.choice(2 * n_real, 20, replace=False)
    matched = cfg.darec.local_assign == "matched"
    user_llm = rng.integers(0, 4, data.n_users) if matched else None
    item_llm = rng.integers(0, 4, data.n_items) if matched else None
    # Our item set is [pos (64 rows) ; neg (64 rows)]; the reference's is [pos (45) ; neg (45)].
    item_subset_jax = np.where(item_subset < n_real, item_subset, item_subset - n_real + size)
    draws = darec_step_inputs(
        {"uniforms": jnp.asarray(u_jax)}, user_assign, item_assign, user_subset, item_subset_jax
    )
    if matched:
        draws.epoch_state["user_assign_llm"] = jnp.asarray(user_llm, jnp.int32)
        draws.epoch_state["item_assign_llm"] = jnp.asarray(item_llm, jnp.int32)
    (total, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
    model.zero_grad()
    rtotal, rterms = model.cal_loss(
        torch.from_numpy(anc),
        torch.from_numpy(pos),
        torch.from_numpy(neg),
        u_ref,
        torch.from_numpy(user_assign),
        torch.from_numpy(item_assign),
        torch.from_numpy(user_subset),
        torch.from_numpy(item_subset),
        None if user_llm is None else torch.from_numpy(user_llm),
        None if item_llm is None else torch.from_numpy(item_llm),
    )
    rtotal.backward()
    for name, value in rterms.items():
        assert_rel_close(terms[name], value.item(), name)
    assert (terms["orth"] == 0.0) == (cfg.darec.lambda_or == 0.0)
    assert_rel_close(total, rtotal.item(), "total")
    for k, (t, g) in enumerate(_darec_pairs(model, grads)):
        grad = np.zeros(t.shape, np.float32) if t.grad is None else t.grad.numpy()
        assert_rel_close(g, grad, f"grad {k}")
    new_params = fns.step(state, arrays, batch, draws)[0].params
    optim = ref.make_optimizer(model, lr=cfg.train.lr)
    optim.step()
    # 1e-5 of the scale, plus what the checked gradient difference makes of Adam's first step
    # where |g| is near its ε (the same derived bound as DaRec on the other backbones).
    steps = zip(_darec_pairs(model, new_params), _darec_pairs(model, grads), strict=True)
    for k, ((t, p), (_, g)) in enumerate(steps):
        ref_grad = np.zeros(t.shape, np.float32) if t.grad is None else t.grad.numpy()
        assert_first_adam_step_close(p, t.detach().numpy(), g, ref_grad, cfg.train.lr, k)


@pytest.mark.parametrize("assign", ["joint", "matched"])
def test_darec_reclustering_matches_reference(assign):
    cfg, data, fns, arrays, params, _, model, _ = _darec_setup({"darec.local_assign": assign})
    user_init, item_init = np.array([0, 7, 19, 33]), np.array([2, 5, 11, 28])
    if assign == "joint":
        inits = {"user": user_init, "item": item_init}
        names = ("user_assign", "item_assign")
    else:  # per view: the CF view's initial rows, then the LLM view's
        user_init = np.stack([user_init, np.array([3, 4, 25, 39])])
        item_init = np.stack([item_init, np.array([1, 9, 14, 22])])
        inits = {
            "user_cf": user_init[0],
            "user_llm": user_init[1],
            "item_cf": item_init[0],
            "item_llm": item_init[1],
        }
        names = ("user_assign", "item_assign", "user_assign_llm", "item_assign_llm")
    fu, fi = fns.eval_embeddings(params, arrays)
    state = fns.method.epoch_state(
        params["method"],
        fu,
        fi,
        (arrays.user_llm, arrays.item_llm),
        None,
        inits={k: jnp.asarray(v) for k, v in inits.items()},
    )
    ref_state = model.recluster(
        cfg.darec.kmeans_iters, torch.from_numpy(user_init), torch.from_numpy(item_init)
    )
    assert set(state) == set(names)
    for name, value in zip(names, ref_state, strict=True):
        np.testing.assert_array_equal(np.asarray(state[name]), value.numpy())
    # And in training: the epoch draws them from its key (k-means++), one compile per run.
    key_state = fns.method_epoch_state(params, arrays, jax.random.key(0))
    assert key_state["user_assign"].shape == (data.n_users,)
    assert int(key_state["item_assign"].max()) < cfg.darec.num_clusters


def test_darec_disentangled_scores_and_metrics_match_reference():
    cfg, data, fns, arrays, params, _, model, _ = _darec_setup({"darec.score_on": "disentangled"})
    su, si = fns.scoring_embeddings(params, arrays)
    with torch.no_grad():
        ru, ri = model.eval_embeddings()
    assert su.shape[1] == 2 * cfg.model.embedding_size
    assert_rel_close(su, ru.numpy(), "user scoring vectors")
    assert_rel_close(si, ri.numpy(), "item scoring vectors")
    train, test = data.train, data.test
    task = prepare_ranking(
        data.n_users, data.n_items, train.users, train.items, test.users, test.items, 16
    )
    ours = evaluate_embeddings(su, si, task, (5, 10))
    theirs = ref.evaluate(
        model, data.n_items, train.users, train.items, test.users, test.items, (5, 10)
    )
    assert set(theirs) == set(ours)
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_darec_with_zero_weights_equals_the_bare_backbone():
    zero = {
        "darec.lambda_or": 0.0,
        "darec.lambda_un": 0.0,
        "darec.lambda_gl": 0.0,
        "darec.lambda_lo": 0.0,
        "model.reg_weight": 0.0,
    }
    cfg, data, fns, arrays, params, _, _, _ = _darec_setup(zero)
    bare_cfg = config_lib.build_config(
        "synthetic",
        "lightgcn",
        "none",
        {"model.layer_num": 2, "model.reg_weight": 0.0, "model.spmm_impl": "segment_sum"},
    )
    bare_fns, _, _ = make_step_functions(bare_cfg, data)
    batch = Batch(
        users=jnp.asarray(data.train.users[:32]),
        pos=jnp.asarray(data.train.items[:32]),
        neg=jnp.asarray(data.train.items[32:64]),
        valid=jnp.ones(32, jnp.float32),
    )
    draws = fns.draw_step_inputs(params, jax.random.key(5), arrays)
    (total, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
    bare_params = {"backbone": params["backbone"], "method": {}}
    bare_draws = StepInputs(backbone={"uniforms": draws.backbone["uniforms"]})
    (bare_total, _), bare_grads = jax.value_and_grad(bare_fns.loss, has_aux=True)(
        bare_params, arrays, batch, bare_draws
    )
    assert float(total) == float(bare_total)
    for name in ("orth", "unif", "global", "local"):
        assert float(terms[name]) == 0.0
    for a, b in zip(
        jax.tree.leaves(grads["backbone"]), jax.tree.leaves(bare_grads["backbone"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
