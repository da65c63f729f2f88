"""GCCF, SGL and SimGCL, bare and with RLMRec-Con / RLMRec-Gen: the JAX code equals the PyTorch
reference (docs/backbones.md §2.1, §2.3, §2.4, §3, Q1–Q8).

Same weights (backbone and method parameters, GCCF's unused W_l included), the same padded batch,
the same injected draws (SGL's two edge-dropout vectors, SimGCL's 2·L noise matrices, the node-mask
seeds); the training forward's final embeddings, every loss term, every gradient, one Adam step
and the eval forward agree to 1e-5. Training runs (DaRec, end to end) are in
tests/test_train_gccf_sgl_simgcl.py.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.graph import edge_permutation
from darec_jax.models.gccf import SELF_LOOP_DIAG, SELF_LOOP_WEIGHTS
from darec_jax.train.step import StepInputs, make_step_functions
from tests.equivalence import (
    assert_first_adam_step_close,
    assert_rel_close,
    injected_uniforms,
    padded_batch,
)
from tests.toy import random_dataset, with_llm_embeddings

torch = pytest.importorskip("torch")
ref = pytest.importorskip("darec_jax.reference")
ref_gccf = pytest.importorskip("darec_jax.reference.gccf")
ref_sgl = pytest.importorskip("darec_jax.reference.sgl")
ref_simgcl = pytest.importorskip("darec_jax.reference.simgcl")
build_reference = pytest.importorskip("darec_jax.crosscheck.factory").build_reference

LLM_DIM = 12
DIM = 32
LAYERS = 2
REG = 1e-2
BACKBONES = ("gccf", "sgl", "simgcl")
METHODS = ("none", "rlmrec-con", "rlmrec-gen")

# Large enough weights that every term matters in the gradients.
BACKBONE_OPTIONS = {
    "gccf": {},
    "sgl": {
        "model.sgl.keep_rate": 0.8,
        "model.sgl.cl_weight": 0.5,
        "model.sgl.cl_temperature": 0.3,
    },
    "simgcl": {
        "model.simgcl.cl_weight": 0.5,
        "model.simgcl.cl_temperature": 0.3,
        "model.simgcl.eps": 0.5,
    },
}
METHOD_OPTIONS = {
    "none": {},
    "rlmrec-con": {"rlmrec.kd_weight": 0.5, "rlmrec.kd_temperature": 0.2},
    "rlmrec-gen": {
        "rlmrec.mask_ratio": 0.1,
        "rlmrec.recon_weight": 0.5,
        "rlmrec.recon_temperature": 0.3,
    },
}


@pytest.fixture(autouse=True)
def _torch_precision():
    torch.set_float32_matmul_precision("highest")


def _data():
    return with_llm_embeddings(random_dataset(n_users=40, n_items=30, per_user=6, seed=11), LLM_DIM)


def _config(backbone, method, **overrides):
    base = {
        "model.layer_num": LAYERS,
        "model.reg_weight": REG,
        "model.embedding_size": DIM,
        "train.lr": 1e-2,
        "model.spmm_impl": "segment_sum",
        **BACKBONE_OPTIONS[backbone],
        **METHOD_OPTIONS.get(method, {}),
        **overrides,
    }
    return config_lib.build_config("synthetic", backbone, method, base)


def _reference_model(cfg, data):
    """The reference class of (backbone, method) with cfg's hyper-parameters."""
    return build_reference(cfg, data)


def _mlp_pairs(torch_mlp, jax_mlp):
    seq = torch_mlp.mlp
    return [
        (seq[0].weight, jax_mlp["w1"]),
        (seq[0].bias, jax_mlp["b1"]),
        (seq[2].weight, jax_mlp["w2"]),
        (seq[2].bias, jax_mlp["b2"]),
    ]


def _tree_pairs(model, cfg, tree):
    """(torch parameter, JAX leaf) for every parameter of the model."""
    out = [
        (model.user_embeds, tree["backbone"]["user_emb"]),
        (model.item_embeds, tree["backbone"]["item_emb"]),
    ]
    if cfg.model.backbone == "gccf":  # the unused W_l (Q2)
        for layer in range(1, LAYERS + 1):
            name = f"layer_weight_{layer}"
            out.append((getattr(model, name), tree["backbone"][name]))
    if cfg.method != "none":
        out += _mlp_pairs(model.mlp, tree["method"]["mlp"])
    if cfg.method == "rlmrec-gen":
        out.append((model.masker_token, tree["method"]["mask_token"]))
    return out


def _setup(backbone, method, **overrides):
    data = _data()
    cfg = _config(backbone, method, **overrides)
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    model, adj = _reference_model(cfg, data)
    # The JAX initialisation goes into torch.
    with torch.no_grad():
        for dst, src in _tree_pairs(model, cfg, params):
            dst.copy_(torch.from_numpy(np.array(src)))
    # The number of parameters agrees (nothing left out of reg or Adam on either side).
    assert len(list(model.parameters())) == len(jax.tree.leaves(params))
    return cfg, data, fns, arrays, params, state, model, adj


def _draws(cfg, data, fns, arrays, params, model, adj, rng):
    """The same draws for both sides: (JAX draws, reference keyword arguments)."""
    backbone = cfg.model.backbone
    draws, kwargs = StepInputs(), {}
    if backbone == "sgl":
        rows, cols, _ = ref.adjacency_edges(adj)
        perm = edge_permutation(arrays.graph, rows, cols)
        u1_ref, u1 = injected_uniforms(perm, seed=1)
        u2_ref, u2 = injected_uniforms(perm, seed=2)
        draws.backbone.update(uniforms_1=jnp.asarray(u1), uniforms_2=jnp.asarray(u2))
        kwargs.update(uniforms_1=u1_ref, uniforms_2=u2_ref)
    if backbone == "simgcl":
        shape = (2 * LAYERS, data.n_users + data.n_items, DIM)
        noise = torch.rand(shape, generator=torch.Generator().manual_seed(5))
        draws.backbone["noise"] = jnp.asarray(noise.numpy())
        kwargs["noise"] = noise
    if cfg.method == "rlmrec-gen":
        seeds = rng.choice(data.n_users + data.n_items, fns.method.n_seeds, replace=False)
        assert fns.method.n_seeds == model.num_seeds()
        draws.method["seeds"] = jnp.asarray(seeds, jnp.int32)
        kwargs["seeds"] = torch.from_numpy(seeds.astype(np.int64))
    # Our draw names and shapes are what the training step draws itself.
    own = fns.draw_step_inputs(params, jax.random.key(0), arrays)
    chex.assert_trees_all_equal_shapes(own, draws)
    return draws, kwargs


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_terms_gradients_adam_step_and_eval(backbone, method):
    cfg, data, fns, arrays, params, state, model, adj = _setup(backbone, method)
    rng = np.random.default_rng(0)
    n_real, size = 45, 64  # a padded final batch
    k = rng.integers(0, data.train.users.shape[0], n_real)
    anc = data.train.users[k].astype(np.int64)
    pos = data.train.items[k].astype(np.int64)
    neg = rng.integers(0, data.n_items, n_real).astype(np.int64)
    batch = padded_batch(anc, pos, neg, size)
    draws, kwargs = _draws(cfg, data, fns, arrays, params, model, adj, rng)
    anc_t, pos_t, neg_t = (torch.from_numpy(x) for x in (anc, pos, neg))

    # The training forward that feeds BPR and the method (view 3 for SGL / SimGCL).
    fu, fi, _ = fns.train_embeddings(params, arrays, draws, batch)
    forward_kwargs = {k: v for k, v in kwargs.items() if k != "seeds"}
    if "seeds" in kwargs:
        forward_kwargs["ego_transform"] = model.masker(kwargs["seeds"])
    out = model.train_forward(anc_t, pos_t, neg_t, **forward_kwargs)
    assert fu.shape == (data.n_users, model.final_dim) == out.user_final.shape
    assert_rel_close(fu, out.user_final.detach().numpy(), "train F_u")
    assert_rel_close(fi, out.item_final.detach().numpy(), "train F_i")

    # Every loss term, the total and every gradient.
    (total, terms), grads = jax.value_and_grad(fns.loss, has_aux=True)(params, arrays, batch, draws)
    model.zero_grad()
    rtotal, rterms = model.cal_loss(anc_t, pos_t, neg_t, **kwargs)
    rtotal.backward()
    assert set(terms) == {*rterms, "loss"}
    for name, value in rterms.items():
        assert value.item() != 0.0, name
        assert_rel_close(terms[name], value.item(), name)
    assert_rel_close(total, rtotal.item(), "total")
    for idx, (t, g) in enumerate(_tree_pairs(model, cfg, grads)):
        assert_rel_close(g, t.grad.numpy(), f"grad {idx}")

    # One Adam step.
    new_params = fns.step(state, arrays, batch, draws)[0].params
    optim = ref.make_optimizer(model, lr=cfg.train.lr)
    optim.step()
    steps = _tree_pairs(model, cfg, new_params)
    for idx, ((t, p), (_, g)) in enumerate(zip(steps, _tree_pairs(model, cfg, grads), strict=True)):
        assert_first_adam_step_close(p, t.detach().numpy(), g, t.grad.numpy(), cfg.train.lr, idx)

    # The clean eval forward (no dropout, no noise, no mask) on the weights after the step: ours
    # go into the reference first, so that entries Adam moved by its near-ε slack (bounded
    # above) do not count twice.
    eu, ei = fns.eval_embeddings(new_params, arrays)
    with torch.no_grad():
        for dst, src in _tree_pairs(model, cfg, new_params):
            dst.copy_(torch.from_numpy(np.array(src)))
        reu, rei = model.eval_embeddings()
    assert_rel_close(eu, reu.numpy(), "eval F_u")
    assert_rel_close(ei, rei.numpy(), "eval F_i")


def test_gccf_self_loop_graph_equals_reference():
    """Q1: Â_sl (edge weights and diagonal) for the bare GCCF; no static arrays otherwise."""
    data = _data()
    _, _, fns, arrays, *_ = _setup("gccf", "none")
    adj = ref.normalized_adjacency(
        data.n_users, data.n_items, data.train.users, data.train.items, self_loops=True
    )
    rows, cols, values = ref.adjacency_edges(adj)
    diag = rows == cols
    assert diag.sum() == data.n_users + data.n_items
    perm = edge_permutation(arrays.graph, rows[~diag], cols[~diag])
    weights = np.asarray(arrays.extra[SELF_LOOP_WEIGHTS])
    assert_rel_close(weights[perm], values[~diag], "Â_sl edges", rtol=1e-7)
    diagonal = np.asarray(arrays.extra[SELF_LOOP_DIAG])
    assert_rel_close(diagonal[rows[diag]], values[diag], "Â_sl diagonal", rtol=1e-7)
    for method in ("rlmrec-con", "rlmrec-gen", "darec"):
        _, other, _ = make_step_functions(_config("gccf", method), data)
        assert other.extra == {}


@pytest.mark.parametrize("spmm_impl", ["blocked", "native"])
def test_gccf_self_loops_with_planned_products(spmm_impl):
    """Â_sl runs on the plan of Â (same edges, its own weights, the diagonal apart)."""
    cfg, data, fns, arrays, params, _, model, _ = _setup(
        "gccf", "none", **{"model.spmm_impl": spmm_impl, "model.spmm_block_edges": 100}
    )
    assert arrays.graph.impl == spmm_impl
    rng = np.random.default_rng(3)
    k = rng.integers(0, data.train.users.shape[0], 30)
    anc = data.train.users[k].astype(np.int64)
    pos = data.train.items[k].astype(np.int64)
    neg = rng.integers(0, data.n_items, 30).astype(np.int64)
    batch = padded_batch(anc, pos, neg, 32)
    (total, _), grads = jax.value_and_grad(fns.loss, has_aux=True)(
        params, arrays, batch, StepInputs()
    )
    model.zero_grad()
    rtotal, _ = model.cal_loss(*(torch.from_numpy(x) for x in (anc, pos, neg)))
    rtotal.backward()
    assert_rel_close(total, rtotal.item(), "total")
    for idx, (t, g) in enumerate(_tree_pairs(model, cfg, grads)):
        assert_rel_close(g, t.grad.numpy(), f"grad {idx}")
