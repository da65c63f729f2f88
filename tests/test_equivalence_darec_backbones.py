"""DaRec on GCCF, SGL, SimGCL and DCCF: the JAX code equals the PyTorch reference.

The reference is DaRec's mixin over each reference backbone (``darec_jax.reference.darec``):
same weights (backbone and the four heads), the same padded batch, the backbone's draws (SGL's
two edge-dropout vectors, SimGCL's noise) and DaRec's (cluster assignments, pair subsets)
injected into both. Every loss term, every gradient and one Adam step agree to 1e-5; the
reclustering from injected initial centres gives the same assignments. (LightGCN's case is in
tests/test_equivalence_methods.py, AutoCF's resampled graphs in tests/test_equivalence_autocf.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.graph import edge_permutation
from darec_jax.train.step import make_step_functions
from tests.equivalence import DAREC_K as K
from tests.equivalence import (
    DARECS,
    HEADS,
    assert_first_adam_step_close,
    assert_rel_close,
    darec_step_inputs,
    injected_uniforms,
    padded_batch,
)
from tests.test_equivalence_gccf_sgl_simgcl import (
    _config,
    _data,
    _mlp_pairs,
)

torch = pytest.importorskip("torch")
ref = pytest.importorskip("darec_jax.reference")
build_reference = pytest.importorskip("darec_jax.crosscheck.factory").build_reference


@pytest.fixture(autouse=True)
def _torch_precision():
    torch.set_float32_matmul_precision("highest")


def _reference(cfg, data):
    return build_reference(cfg, data)


def _pairs(model, cfg, tree):
    b = tree["backbone"]
    if cfg.model.backbone == "dccf":
        out = [
            (model.user_embeds.weight, b["user_emb"]),
            (model.item_embeds.weight, b["item_emb"]),
            (model.user_intent, b["user_intent"]),
            (model.item_intent, b["item_intent"]),
        ]
    else:
        out = [(model.user_embeds, b["user_emb"]), (model.item_embeds, b["item_emb"])]
    if cfg.model.backbone == "gccf":
        for layer in range(1, cfg.model.layer_num + 1):
            name = f"layer_weight_{layer}"
            out.append((getattr(model, name), b[name]))
    for head in HEADS:
        out += _mlp_pairs(getattr(model, head), tree["method"][head])
    return out


def _backbone_draws(cfg, data, arrays, adj):
    """The backbone's draws for both sides: (JAX draws, reference ``train_forward`` kwargs)."""
    draws, kwargs = {}, {}
    if cfg.model.backbone == "sgl":
        rows, cols, _ = ref.adjacency_edges(adj)
        perm = edge_permutation(arrays.graph, rows, cols)
        u1_ref, u1 = injected_uniforms(perm, seed=1)
        u2_ref, u2 = injected_uniforms(perm, seed=2)
        draws.update(uniforms_1=jnp.asarray(u1), uniforms_2=jnp.asarray(u2))
        kwargs.update(uniforms_1=u1_ref, uniforms_2=u2_ref)
    if cfg.model.backbone == "simgcl":
        shape = (2 * cfg.model.layer_num, data.n_users + data.n_items, cfg.model.embedding_size)
        noise = torch.rand(shape, generator=torch.Generator().manual_seed(5))
        draws["noise"] = jnp.asarray(noise.numpy())
        kwargs["noise"] = noise
    return draws, kwargs


def _setup(backbone, **overrides):
    data = _data()
    extra = {}
    if backbone == "dccf":  # a handful of intents keeps the test small
        extra = {
            "model.dccf.cl_weight": 0.5,
            "model.dccf.cl_temperature": 0.3,
            "model.dccf.intent_num": 8,
        }
    if backbone == "dccf":
        base = {
            "model.layer_num": 2,
            "model.reg_weight": 1e-2,
            "train.lr": 1e-2,
            "model.spmm_impl": "segment_sum",
        }
        cfg = config_lib.build_config("synthetic", "dccf", "darec", {**base, **DARECS, **extra})
        cfg = config_lib.apply_overrides(cfg, overrides)
    else:
        cfg = _config(backbone, "darec", **{**DARECS, **overrides})
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    model, adj = _reference(cfg, data)
    pairs = _pairs(model, cfg, params)
    assert len(pairs) == len(list(model.parameters())) == len(jax.tree.leaves(params))
    with torch.no_grad():
        for dst, src in pairs:
            dst.copy_(torch.from_numpy(np.array(src)))
    return cfg, data, fns, arrays, params, state, model, adj


@pytest.mark.parametrize(
    ("backbone", "overrides"),
    [
        ("gccf", {}),
        ("sgl", {}),
        ("simgcl", {"darec.score_on": "disentangled"}),
        ("dccf", {"darec.global_loss": "kl", "darec.global_temperature": 0.5}),
    ],
)
def test_darec_terms_gradients_and_adam_step(backbone, overrides):
    cfg, data, fns, arrays, params, state, model, adj = _setup(backbone, **overrides)
    rng = np.random.default_rng(2)
    n_real, size = 45, 64
    k = rng.integers(0, data.train.users.shape[0], n_real)
    anc = data.train.users[k].astype(np.int64)
    pos = data.train.items[k].astype(np.int64)
    neg = rng.integers(0, data.n_items, n_real).astype(np.int64)
    batch = padded_batch(anc, pos, neg, size)
    backbone_draws, kwargs = _backbone_draws(cfg, data, arrays, adj)
    user_assign = rng.integers(0, K, data.n_users)
    item_assign = rng.integers(0, K, data.n_items)
    user_subset = rng.choice(n_real, 20, replace=False)
    item_subset = rng.choice(2 * n_real, 20, replace=False)
    # Our item set is [pos (64 rows) ; neg (64 rows)]; the reference's is [pos (45) ; neg (45)].
    item_subset_jax = np.where(item_subset < n_real, item_subset, item_subset - n_real + size)
    draws = darec_step_inputs(
        backbone_draws, user_assign, item_assign, user_subset, item_subset_jax
    )
    (total, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
    model.zero_grad()
    rtotal, rterms = model.darec_loss(
        *(torch.from_numpy(x) for x in (anc, pos, neg)),
        backbone_draws=kwargs,
        user_assign=torch.from_numpy(user_assign),
        item_assign=torch.from_numpy(item_assign),
        user_subset=torch.from_numpy(user_subset),
        item_subset=torch.from_numpy(item_subset),
    )
    rtotal.backward()
    assert set(terms) == {*rterms, "loss"}
    for name, value in rterms.items():
        assert value.item() != 0.0, name
        assert_rel_close(terms[name], value.item(), name)
    assert_rel_close(total, rtotal.item(), "total")
    for idx, (t, g) in enumerate(_pairs(model, cfg, grads)):
        assert_rel_close(g, t.grad.numpy(), f"grad {idx}")
    new_params = fns.step(state, arrays, batch, draws)[0].params
    ref.make_optimizer(model, lr=cfg.train.lr).step()
    steps = zip(_pairs(model, cfg, new_params), _pairs(model, cfg, grads), strict=True)
    for idx, ((t, p), (_, g)) in enumerate(steps):
        assert_first_adam_step_close(p, t.detach().numpy(), g, t.grad.numpy(), cfg.train.lr, idx)
    # Ranking vectors after the step (F, or [f_sp(F) ‖ f_sh(F)] when disentangled).
    su, si = fns.scoring_embeddings(new_params, arrays)
    with torch.no_grad():
        ru, ri = model.eval_embeddings()
    assert_rel_close(su, ru.numpy(), "scoring users")
    assert_rel_close(si, ri.numpy(), "scoring items")


@pytest.mark.parametrize("backbone", ["gccf", "dccf"])
def test_darec_reclustering_on_the_clean_forward(backbone):
    cfg, data, fns, arrays, params, _, model, _ = _setup(backbone)
    user_init, item_init = np.array([0, 7, 19, 33]), np.array([2, 5, 11, 28])
    fu, fi = fns.eval_embeddings(params, arrays)
    state = fns.method.epoch_state(
        params["method"],
        fu,
        fi,
        (arrays.user_llm, arrays.item_llm),
        None,
        inits={"user": jnp.asarray(user_init), "item": jnp.asarray(item_init)},
    )
    ua, ia = model.recluster(
        cfg.darec.kmeans_iters, torch.from_numpy(user_init), torch.from_numpy(item_init)
    )
    np.testing.assert_array_equal(np.asarray(state["user_assign"]), ua.numpy())
    np.testing.assert_array_equal(np.asarray(state["item_assign"]), ia.numpy())
