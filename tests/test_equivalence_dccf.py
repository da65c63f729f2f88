"""DCCF bare, with RLMRec-Con and with RLMRec-Gen: the JAX code equals the PyTorch reference.

Same weights (backbone and method parameters), the same padded batch (duplicate users and items,
padding rows whose ids are absent from the real rows) and the same injected node-mask seeds;
the static graph weights, every layer's views, the final embeddings, every loss term, every
gradient, one Adam step and the clean eval forward agree to 1e-5. Also: one compile per run,
DaRec trains on DCCF, and a short end-to-end run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from darec_jax import config as config_lib
from darec_jax.train.step import StepInputs, epoch_key, make_step_functions
from tests.equivalence import assert_rel_close, padded_batch
from tests.toy import (
    assert_reported_metrics_are_the_references,
    random_dataset,
    with_llm_embeddings,
)

torch = pytest.importorskip("torch")
ref = pytest.importorskip("darec_jax.reference")
build_reference = pytest.importorskip("darec_jax.crosscheck.factory").build_reference
ref_dccf = pytest.importorskip("darec_jax.reference.dccf")

LLM_DIM = 12
INTENTS = 16
# Larger than the preset 1e-3 so that the contrast weighs in every gradient compared.
CL_WEIGHT, CL_TAU = 0.1, 0.2


@pytest.fixture(autouse=True)
def _torch_precision():
    torch.set_float32_matmul_precision("highest")


def _data():
    return with_llm_embeddings(random_dataset(n_users=40, n_items=30, per_user=6, seed=11), LLM_DIM)


def _config(method, overrides=None):
    base = {
        "model.layer_num": 2,
        "model.reg_weight": 1e-2,
        "model.dccf.intent_num": INTENTS,
        "model.dccf.cl_weight": CL_WEIGHT,
        "model.dccf.cl_temperature": CL_TAU,
        "train.lr": 1e-2,
        "model.spmm_impl": "segment_sum",
    }
    base.update(overrides or {})
    return config_lib.build_config("synthetic", "dccf", method, base)


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


def _tree_pairs(model, method, tree):
    """(torch parameter, JAX leaf) for every parameter of the run."""
    b = tree["backbone"]
    out = [
        (model.user_embeds.weight, b["user_emb"]),
        (model.item_embeds.weight, b["item_emb"]),
        (model.user_intent, b["user_intent"]),
        (model.item_intent, b["item_intent"]),
    ]
    if method != "none":
        out += _mlp_pairs(model.mlp, tree["method"]["mlp"])
    if method == "rlmrec-gen":
        out.append((model.masker_token, tree["method"]["mask_token"]))
    return out


def _setup(method, overrides=None):
    data = _data()
    cfg = _config(method, overrides)
    fns, arrays, state = make_step_functions(cfg, data)
    params, opt_state = state.params, state.opt_state
    model, adj = build_reference(cfg, data)
    # The JAX initialisation goes into torch.
    for dst, src in _tree_pairs(model, method, params):
        _copy(dst, src)
    return cfg, data, fns, arrays, params, opt_state, model


def _batch(data, n_real, seed):
    """Real triples (duplicate users and items) avoiding user 0 and item 0, which are the padding
    rows' ids: a padding row that leaked into the unique sets would change the contrast."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero((data.train.users != 0) & (data.train.items != 0))
    k = rng.choice(rows, n_real, replace=True)
    anc = data.train.users[k].astype(np.int64)
    pos = data.train.items[k].astype(np.int64)
    neg = rng.integers(0, data.n_items, n_real).astype(np.int64)
    assert np.unique(anc).size < n_real and np.unique(pos).size < n_real
    return anc, pos, neg


def test_graph_weights_layer_views_and_eval_forward_equal_reference():
    _, _, fns, arrays, params, _, model = _setup("none")
    # The reference's (head, tail)-sorted edges are the graph's (receiver, sender)-sorted ones.
    np.testing.assert_array_equal(np.asarray(arrays.graph.receivers), model.heads.numpy())
    np.testing.assert_array_equal(np.asarray(arrays.graph.senders), model.tails.numpy())
    assert_rel_close(arrays.extra["dccf_weights"], model.graph_weights.numpy(), "G", rtol=1e-6)

    # Every layer's views (Z, R, Aga, Aia) and F of the clean forward.
    backbone = fns.backbone(params)
    final, views = backbone.propagate(backbone.ego(), arrays)
    with torch.no_grad():
        ref_final, ref_views = model.propagate(model.ego())
    assert len(views) == len(ref_views) == 2
    for layer, (ours, theirs) in enumerate(zip(views, ref_views, strict=True)):
        for name, a, e in zip(("Z", "R", "Aga", "Aia"), ours, theirs, strict=True):
            assert_rel_close(a, e.numpy(), f"layer {layer} {name}")
    assert_rel_close(final, ref_final.numpy(), "F")
    # The eval forward is that clean forward.
    eu, ei = fns.eval_embeddings(params, arrays)
    with torch.no_grad():
        reu, rei = model.eval_embeddings()
    assert_rel_close(eu, reu.numpy(), "eval F_u")
    assert_rel_close(ei, rei.numpy(), "eval F_i")


def test_adaptive_weights_are_row_stochastic_with_reference_gradients():
    """The adaptive weights and their gradients through α and S (nothing detached,
    docs/backbones.md Q10)."""
    from darec_jax.models.dccf import adaptive_weights

    _, _, _, arrays, _, _, model = _setup("none")
    rng = np.random.default_rng(7)
    n_nodes = arrays.graph.n_nodes
    y = rng.normal(size=(int(n_nodes), 8)).astype(np.float32)
    y[3] = 0.0  # a zero row: F.normalize's clamp, and no 0·∞ in the gradient
    c = rng.normal(size=arrays.graph.senders.shape[0]).astype(np.float32)
    heads, tails = arrays.graph.receivers, arrays.graph.senders

    def weighted(y):
        return jnp.sum(adaptive_weights(y, heads, tails) * c)

    w = adaptive_weights(jnp.asarray(y), heads, tails)
    grad = jax.grad(weighted)(jnp.asarray(y))
    yt = torch.from_numpy(y).requires_grad_(True)
    wt = ref_dccf.adaptive_weights(yt, model.heads, model.tails)
    (wt * torch.from_numpy(c)).sum().backward()
    assert_rel_close(w, wt.detach().numpy(), "w")
    assert np.all(np.isfinite(np.asarray(grad)))
    # Row 3's gradient is ~1e12 (1/eps); compare it apart so it does not hide the others.
    others = np.arange(y.shape[0]) != 3
    assert_rel_close(np.asarray(grad)[others], yt.grad.numpy()[others], "dw/dy")
    assert_rel_close(np.asarray(grad)[3], yt.grad.numpy()[3], "dw/dy of the zero row")
    row_sums = jax.ops.segment_sum(w, heads, num_segments=int(n_nodes))
    has_edges = np.bincount(np.asarray(heads), minlength=int(n_nodes)) > 0
    np.testing.assert_allclose(np.asarray(row_sums)[has_edges], 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "method,overrides",
    [
        # The graph products as training runs them by default ("auto": the native CSR kernel,
        # or blocks of 40 edges, on CPU), with their hand-written backward through the weights.
        ("none", {"model.spmm_impl": "auto", "model.spmm_block_edges": 40}),
        ("rlmrec-con", {"rlmrec.kd_weight": 0.5, "rlmrec.kd_temperature": 0.2}),
        (
            "rlmrec-gen",
            {"rlmrec.mask_ratio": 0.1, "rlmrec.recon_weight": 0.5, "rlmrec.recon_temperature": 0.3},
        ),
    ],
)
def test_forward_terms_gradients_and_adam_step(method, overrides):
    cfg, data, fns, arrays, params, opt_state, model = _setup(method, overrides)
    if cfg.model.spmm_impl == "auto" and jax.default_backend() == "cpu":
        assert arrays.graph.impl in ("native", "blocked")
    anc, pos, neg = _batch(data, 45, seed=1)
    # 19 padding rows (user 0, item 0, neg 1; ids absent from the real rows) on our side only.
    batch = padded_batch(anc, pos, neg, 64)
    draws, extra = StepInputs(), {}
    ego_transform = None
    if method == "rlmrec-gen":
        rng = np.random.default_rng(0)
        seeds = rng.choice(data.n_users + data.n_items, fns.method.n_seeds, replace=False)
        assert fns.method.n_seeds == model.num_seeds()
        draws.method["seeds"] = jnp.asarray(seeds, jnp.int32)
        extra["seeds"] = torch.from_numpy(seeds.astype(np.int64))
        ego_transform = model.masker(extra["seeds"])
    own = fns.draw_step_inputs(params, jax.random.key(0), arrays)
    assert set(own.backbone) == set(draws.backbone) and set(own.method) == set(draws.method)

    # One compiled function: the training forward (from the masked ego for Gen), every term and
    # gradient, and one Adam step (as fns.step applies it).
    @jax.jit
    def run(params, opt_state, arrays, batch, draws):
        forward = fns.train_embeddings(params, arrays, draws, batch)
        (_, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
        updates, _ = fns.optimizer.update(grads, opt_state, params)
        return forward, terms, grads, optax.apply_updates(params, updates)

    (fu, fi, own), terms, grads, new_params = run(params, opt_state, arrays, batch, draws)
    t_anc, t_pos, t_neg = (torch.from_numpy(x) for x in (anc, pos, neg))
    with torch.no_grad():
        out = model.train_forward(t_anc, t_pos, t_neg, ego_transform=ego_transform)
    assert_rel_close(fu, out.user_final.numpy(), "train F_u")
    assert_rel_close(fi, out.item_final.numpy(), "train F_i")
    assert_rel_close(own["cl"], out.terms["cl"].item(), "cl of the forward")

    model.zero_grad()
    rtotal, rterms = model.cal_loss(t_anc, t_pos, t_neg, **extra)
    rtotal.backward()
    assert set(rterms) == set(terms) - {"loss"}
    for name, value in rterms.items():
        assert_rel_close(terms[name], value.item(), name)
        assert value.item() != 0.0
    assert_rel_close(terms["loss"], rtotal.item(), "total")
    for k, (t, g) in enumerate(_tree_pairs(model, method, grads)):
        assert_rel_close(g, t.grad.numpy(), f"grad {k}")

    optim = ref.make_optimizer(model, lr=cfg.train.lr)
    optim.step()
    for k, (t, p) in enumerate(_tree_pairs(model, method, new_params)):
        assert_rel_close(p, t.detach().numpy(), f"adam {k}")


def test_zero_cl_weight_is_an_exact_zero():
    _, data, fns, arrays, params, _, _ = _setup("none", {"model.dccf.cl_weight": 0.0})
    batch = padded_batch(*_batch(data, 20, seed=3), 32)
    _, terms = fns.loss(params, arrays, batch, StepInputs())
    assert float(terms["cl"]) == 0.0
    assert float(terms["loss"]) == float(terms["bpr"] + terms["reg"])


def test_darec_trains_on_dccf_and_its_epoch_compiles_once():
    """Two epochs (a padded final batch each) of DaRec on DCCF: one compile, finite terms."""
    data = _data()
    cfg = config_lib.build_config(
        "synthetic",
        "dccf",
        "darec",
        {
            "model.layer_num": 1,
            "model.dccf.intent_num": INTENTS,
            "model.spmm_impl": "segment_sum",
            "train.batch_size": 64,
            "darec.num_clusters": 4,
            "darec.pair_sample": 20,
            "darec.lambda_or": 0.3,
            "darec.lambda_un": 0.2,
            "darec.lambda_gl": 0.4,
            "darec.lambda_lo": 0.5,
        },
    )
    fns, arrays, state = make_step_functions(cfg, data)
    assert fns.n_batches * 64 > fns.n_interactions
    before = np.array(state.params["backbone"]["user_intent"])
    for epoch in range(2):
        state, terms = fns.jit_epoch(state, arrays, epoch_key(cfg.train.seed, epoch))
    params = state.params
    assert fns.jit_epoch._cache_size() == 1
    assert {"bpr", "reg", "cl", "orth", "unif", "global", "local", "loss"} <= set(terms)
    for name, value in terms.items():
        assert np.isfinite(float(value)), name
    assert float(terms["cl"]) != 0.0
    assert not np.allclose(np.asarray(params["backbone"]["user_intent"]), before)


def test_train_and_evaluate_runs_dccf(tmp_path):
    from darec_jax.train.trainer import train_and_evaluate

    cfg = _config("none", {"train.epochs": 2, "train.batch_size": 64, "model.layer_num": 1})
    data = _data()
    res = train_and_evaluate(
        cfg, tmp_path / "dccf", data=data, progress=False, log=lambda _: None, plots=False
    )
    assert res["status"] == "finished"
    assert_reported_metrics_are_the_references(tmp_path / "dccf", data, res)
