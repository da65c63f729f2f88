"""Tests of the reference GCCF / SGL / SimGCL backbones and their RLMRec variants.

Each check recomputes a spec equation (docs/backbones.md §2.1, §2.3, §2.4, §3, Q1–Q8) independently
with dense float64 numpy on a tiny hand-made graph (3 users, 4 items, item 3 isolated) and
compares it with the reference classes.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from darec_jax.reference.adjacency import normalized_adjacency  # noqa: E402
from darec_jax.reference.gccf import GCCFGeneRef, GCCFPlusRef, GCCFRef  # noqa: E402
from darec_jax.reference.sgl import SGLGeneRef, SGLPlusRef, SGLRef  # noqa: E402
from darec_jax.reference.simgcl import SimGCLGeneRef, SimGCLPlusRef, SimGCLRef  # noqa: E402

U, N_I, D, L, DS = 3, 4, 4, 2, 6
N = U + N_I
EDGES = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2)]  # (user, item); item 3 is isolated
ANC = torch.tensor([0, 2, 1, 0, 2])  # duplicates on purpose
POS = torch.tensor([0, 2, 1, 1, 0])
NEG = torch.tensor([3, 1, 0, 2, 3])
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(autouse=True)
def _highest_precision():
    torch.set_float32_matmul_precision("highest")


def _adj(self_loops: bool = False) -> torch.Tensor:
    users, items = np.array(EDGES).T
    return normalized_adjacency(U, N_I, users, items, self_loops=self_loops)


def _semantic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((U, DS)).astype(np.float32),
        rng.standard_normal((N_I, DS)).astype(np.float32),
    )


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ------------------------------------------------------------- independent dense float64 maths


def _dense_adj(self_loops: bool = False) -> np.ndarray:
    """Â (or Â_sl) of §1.2 from the edge list, dense float64."""
    a = np.zeros((N, N))
    for u, i in EDGES:
        a[u, U + i] = a[U + i, u] = 1.0
    if self_loops:
        a += np.eye(N)
    deg = a.sum(1)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return dinv[:, None] * a * dinv[None, :]


def _dense_dropped(adj: torch.Tensor, uniforms: torch.Tensor, keep: float) -> np.ndarray:
    """EdgeDrop (§1.3) per stored entry: keep iff floor(fl32(u + keep)) == 1, no rescaling."""
    idx = adj._indices().numpy()
    vals = adj._values().double().numpy()
    kept = np.floor(uniforms.numpy().astype(np.float32) + np.float32(keep)) == 1.0
    out = np.zeros((N, N))
    np.add.at(out, (idx[0][kept], idx[1][kept]), vals[kept])
    return out


def _sum_prop(a: np.ndarray, ego: np.ndarray, layers: int) -> np.ndarray:
    out, e = ego.copy(), ego
    for _ in range(layers):
        e = a @ e
        out = out + e
    return out


def _concat_prop(a: np.ndarray, ego: np.ndarray, layers: int) -> np.ndarray:
    parts = [ego]
    for _ in range(layers):
        parts.append(a @ parts[-1])
    return np.concatenate(parts, axis=1)


def _noisy_prop(a: np.ndarray, ego: np.ndarray, noise: list[np.ndarray], eps: float) -> np.ndarray:
    h, out = ego, ego.copy()
    for omega in noise:
        p = a @ h
        norm = np.maximum(np.linalg.norm(omega, axis=1, keepdims=True), 1e-12)
        h = p + eps * np.sign(p) * omega / norm
        out = out + h
    return out


def _tilde(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(1e-8 + (x**2).sum(1, keepdims=True))


def _infonce(x, y, z, tau) -> float:
    x, y, z = _tilde(x), _tilde(y), _tilde(z)
    return float((-(x * y).sum(1) / tau + np.log(np.exp(x @ z.T / tau).sum(1))).sum())


def _ssl_con(x, y, tau) -> float:
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    pos = np.exp((x * y).sum(1) / tau)
    tot = np.exp(x @ y.T / tau).sum(1)
    return float(-np.log(pos / (tot + 1e-8) + 1e-8).mean())


def _bpr(fu, fi) -> float:
    a, p, n = fu[ANC.numpy()], fi[POS.numpy()], fi[NEG.numpy()]
    return float(np.logaddexp(0.0, (a * n).sum(1) - (a * p).sum(1)).mean())


def _cl(f1, f2, tau, w, negative=True) -> float:
    a, p, n = ANC.numpy(), POS.numpy(), NEG.numpy()
    u1, i1, u2, i2 = f1[:U], f1[U:], f2[:U], f2[U:]
    s = _infonce(u1[a], u2[a], u2, tau) + _infonce(i1[p], i2[p], i2, tau)
    if negative:
        s += _infonce(i1[n], i2[n], i2, tau)
    return w * s / len(a)


def _mlp(mlp, x: np.ndarray) -> np.ndarray:
    w1, b1 = _np(mlp.mlp[0].weight), _np(mlp.mlp[0].bias)
    w2, b2 = _np(mlp.mlp[2].weight), _np(mlp.mlp[2].bias)
    h = x @ w1.T + b1
    h = np.where(h > 0, h, 0.01 * h)
    return h @ w2.T + b2


def _kd(model, fu, fi) -> float:
    a, p, n = ANC.numpy(), POS.numpy(), NEG.numpy()
    pu, pi = _mlp(model.mlp, _np(model.usr_emb)), _mlp(model.mlp, _np(model.itm_emb))
    s = _infonce(fu[a], pu[a], pu, model.kd_temperature)
    s += _infonce(fi[p], pi[p], pi[p], model.kd_temperature)
    s += _infonce(fi[n], pi[n], pi[n], model.kd_temperature)
    return model.kd_weight * s / len(a)


def _ego(model) -> np.ndarray:
    return np.concatenate([_np(model.user_embeds), _np(model.item_embeds)])


def _reg(model) -> float:
    return model.reg_weight * sum(float((_np(p) ** 2).sum()) for p in model.parameters())


# ----------------------------------------------------------------------------- model factories


def _uniforms(seed: int) -> torch.Tensor:
    return torch.rand(_adj()._values().shape[0], generator=torch.Generator().manual_seed(seed))


def _noise(seed: int, layers: int = L) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(N, D, generator=gen) for _ in range(2 * layers)]


def _gccf(**kw):
    torch.manual_seed(0)
    return GCCFRef(U, N_I, _adj(True), D, L, reg_weight=kw.pop("reg_weight", 1e-2), **kw)


def _sgl(**kw):
    torch.manual_seed(1)
    args = {"reg_weight": 1e-2, "keep_rate": 0.5, "cl_weight": 0.3, "cl_temperature": 0.4}
    return SGLRef(U, N_I, _adj(), D, L, **{**args, **kw})


def _simgcl(**kw):
    torch.manual_seed(2)
    args = {"reg_weight": 1e-2, "cl_weight": 0.3, "cl_temperature": 0.4, "eps": 0.5}
    return SimGCLRef(U, N_I, _adj(), D, L, **{**args, **kw})


def _variant(cls, **kw):
    torch.manual_seed(3)
    usr, itm = _semantic()
    base = {"embedding_size": D, "layer_num": L, "reg_weight": 1e-2}
    if cls in (SGLPlusRef, SGLGeneRef):
        base.update(keep_rate=0.5, cl_weight=0.3, cl_temperature=0.4)
    if cls in (SimGCLPlusRef, SimGCLGeneRef):
        base.update(cl_weight=0.3, cl_temperature=0.4, eps=0.5)
    if cls in (GCCFPlusRef, SGLPlusRef, SimGCLPlusRef):
        base.update(kd_weight=0.7, kd_temperature=0.3)
    else:
        base.update(mask_ratio=0.3, recon_weight=0.6, recon_temperature=0.5)
    return cls(U, N_I, _adj(), usr, itm, **{**base, **kw})


def _draws(model) -> tuple:
    if isinstance(model, SGLRef):
        return (_uniforms(10), _uniforms(11))
    if isinstance(model, SimGCLRef):
        return (_noise(12),)
    return ()


SEEDS = torch.tensor([5, 1, 3])  # global ids: item 2, user 1, item 0


# ---------------------------------------------------------------------------------------- GCCF


def test_gccf_forward_and_loss_match_dense_concat() -> None:
    model = _gccf()
    a_sl = _dense_adj(self_loops=True)
    assert np.allclose(model.adj.to_dense().double().numpy(), a_sl, rtol=1e-6, atol=1e-7)
    fu, fi = model.eval_embeddings()
    assert tuple(fu.shape) == (U, (L + 1) * D) and tuple(fi.shape) == (N_I, (L + 1) * D)
    f = _concat_prop(a_sl, _ego(model), L)
    np.testing.assert_allclose(_np(torch.cat([fu, fi])), f, **TOL)
    # The first d columns are E0 itself (concatenation, not a sum).
    assert torch.equal(fu[:, :D], model.user_embeds)
    total, terms = model.cal_loss(ANC, POS, NEG)
    assert list(terms) == ["bpr", "reg"]
    np.testing.assert_allclose(_f(terms["bpr"]), _bpr(f[:U], f[U:]), **TOL)
    np.testing.assert_allclose(_f(terms["reg"]), _reg(model), **TOL)
    assert torch.equal(total, terms["bpr"] + terms["reg"])
    out = model.train_forward(ANC, POS, NEG)
    assert torch.equal(out.user_final, fu) and out.terms == {}


def test_gccf_self_loops_only_for_bare_model() -> None:  # Q1
    usr, itm = _semantic()
    with pytest.raises(ValueError, match="self"):
        GCCFRef(U, N_I, _adj(False), D, L)
    for cls in (GCCFPlusRef, GCCFGeneRef):
        with pytest.raises(ValueError, match="self-loops"):
            cls(U, N_I, _adj(True), usr, itm, D, L)
    plus = _variant(GCCFPlusRef)
    fu, fi = plus.eval_embeddings()
    np.testing.assert_allclose(
        _np(torch.cat([fu, fi])), _concat_prop(_dense_adj(False), _ego(plus), L), **TOL
    )


def test_gccf_unused_weights_get_gradient_from_reg_only() -> None:  # Q2
    model = _gccf(reg_weight=0.25)
    before = model.eval_embeddings()
    with torch.no_grad():
        for w in model.layer_weights:
            w.mul_(3.0)
    after = model.eval_embeddings()
    assert all(torch.equal(x, y) for x, y in zip(before, after, strict=True))
    total, terms = model.cal_loss(ANC, POS, NEG)
    total.backward(retain_graph=True)
    for w in model.layer_weights:
        torch.testing.assert_close(w.grad, 2 * 0.25 * w.detach(), rtol=1e-6, atol=0)
    model.zero_grad()
    terms["bpr"].backward()
    assert all(w.grad is None or not w.grad.any() for w in model.layer_weights)


# ----------------------------------------------------------------------------------------- SGL


def test_sgl_views_and_cl_match_dense() -> None:
    model = _sgl()
    u1, u2 = _uniforms(10), _uniforms(11)
    ego = _ego(model)
    a1 = _dense_dropped(model.adj, u1, 0.5)
    a2 = _dense_dropped(model.adj, u2, 0.5)
    assert not np.allclose(a1, a1.T)  # per-direction drop (Q4): not symmetric
    expect = [_sum_prop(a, ego, L) for a in (a1, a2, _dense_adj())]
    views = model.views(u1, u2)
    for got, want in zip(views, expect, strict=True):
        np.testing.assert_allclose(_np(got), want, **TOL)
    total, terms = model.cal_loss(ANC, POS, NEG, u1, u2)
    assert list(terms) == ["bpr", "reg", "cl"]
    f1, f2, f3 = expect
    np.testing.assert_allclose(_f(terms["cl"]), _cl(f1, f2, 0.4, 0.3), **TOL)
    np.testing.assert_allclose(_f(terms["bpr"]), _bpr(f3[:U], f3[U:]), **TOL)
    np.testing.assert_allclose(_f(terms["reg"]), _reg(model), **TOL)
    assert torch.equal(total, terms["bpr"] + terms["reg"] + terms["cl"])
    # Views are not interchangeable: view 1 anchors, view 2 is the denominator set.
    _, swapped = model.cal_loss(ANC, POS, NEG, u2, u1)
    assert not torch.isclose(swapped["cl"], terms["cl"], rtol=1e-4)
    assert torch.equal(swapped["bpr"], terms["bpr"])


def test_sgl_draw_order_and_determinism() -> None:
    model = _sgl()
    torch.manual_seed(7)
    drawn, _ = model.cal_loss(ANC, POS, NEG)
    torch.manual_seed(7)
    u1, u2 = torch.rand(model.adj._values().shape[0]), torch.rand(model.adj._values().shape[0])
    injected, _ = model.cal_loss(ANC, POS, NEG, u1, u2)
    again, _ = model.cal_loss(ANC, POS, NEG, u1.clone(), u2.clone())
    assert torch.equal(drawn, injected) and torch.equal(injected, again)
    with pytest.raises(ValueError, match="uniforms"):
        model.cal_loss(ANC, POS, NEG, u1[:-1], u2)
    # keep_rate 1: nothing is drawn and all three views are the clean forward.
    clean = _sgl(keep_rate=1.0)
    state = torch.get_rng_state()
    v1, v2, v3 = clean.views()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(v1, v3) and torch.equal(v2, v3)


# -------------------------------------------------------------------------------------- SimGCL


def test_simgcl_noisy_propagation_matches_dense() -> None:  # Q5, Q6
    model = _simgcl()
    noise = _noise(12)
    ego, a = _ego(model), _dense_adj()
    om = [_np(o) for o in noise]
    v1, v2, v3 = model.views(noise)
    np.testing.assert_allclose(_np(v1), _noisy_prop(a, ego, om[:L], 0.5), **TOL)
    np.testing.assert_allclose(_np(v2), _noisy_prop(a, ego, om[L:], 0.5), **TOL)
    np.testing.assert_allclose(_np(v3), _sum_prop(a, ego, L), **TOL)
    # Isolated item: P = 0, sign 0, no noise; its row is E0 alone in every view.
    iso = U + 3
    assert torch.equal(v1[iso], model.item_embeds[3]) and torch.equal(v2[iso], v1[iso])
    # Same noise for both views → identical views; the views differ only through their draws.
    same = model.views([*noise[:L], *noise[:L]])
    assert torch.equal(same[0], v1) and torch.equal(same[1], v1)


def test_simgcl_eps_zero_views_equal_clean_forward() -> None:
    model = _simgcl(eps=0.0)
    v1, v2, v3 = model.views(_noise(3))
    assert torch.equal(v1, v3) and torch.equal(v2, v3)
    assert torch.equal(v3, torch.cat(model.eval_embeddings()))
    _, terms = model.cal_loss(ANC, POS, NEG, _noise(4))
    f = _np(v3)
    np.testing.assert_allclose(_f(terms["cl"]), _cl(f, f, 0.4, 0.3, negative=False), **TOL)


def test_simgcl_loss_matches_dense_and_has_no_negative_cl_term() -> None:
    model = _simgcl()
    noise = _noise(12)
    ego, a = _ego(model), _dense_adj()
    om = [_np(o) for o in noise]
    f1, f2 = _noisy_prop(a, ego, om[:L], 0.5), _noisy_prop(a, ego, om[L:], 0.5)
    f3 = _sum_prop(a, ego, L)
    total, terms = model.cal_loss(ANC, POS, NEG, noise)
    assert list(terms) == ["bpr", "reg", "cl"]
    np.testing.assert_allclose(_f(terms["cl"]), _cl(f1, f2, 0.4, 0.3, negative=False), **TOL)
    np.testing.assert_allclose(_f(terms["bpr"]), _bpr(f3[:U], f3[U:]), **TOL)
    assert torch.equal(total, terms["bpr"] + terms["reg"] + terms["cl"])
    _, other = model.cal_loss(ANC, POS, torch.tensor([1, 0, 3, 3, 2]), noise)
    assert torch.equal(other["cl"], terms["cl"]) and not torch.equal(other["bpr"], terms["bpr"])


def test_simgcl_draw_order() -> None:
    model = _simgcl()
    torch.manual_seed(9)
    drawn, _ = model.cal_loss(ANC, POS, NEG)
    torch.manual_seed(9)
    listed = [torch.rand(N, D) for _ in range(2 * L)]  # view 1 layers 1..L, then view 2
    injected, _ = model.cal_loss(ANC, POS, NEG, listed)
    stacked, _ = model.cal_loss(ANC, POS, NEG, torch.stack(listed))
    assert torch.equal(drawn, injected) and torch.equal(injected, stacked)
    with pytest.raises(ValueError, match="2·L"):
        model.cal_loss(ANC, POS, NEG, listed[:-1])


# ------------------------------------------------------------------------------------ variants


PLUS = (GCCFPlusRef, SGLPlusRef, SimGCLPlusRef)
GENE = (GCCFGeneRef, SGLGeneRef, SimGCLGeneRef)


def _bare_of(model):
    """The bare backbone with the variant's backbone weights (GCCF over the variant's Â)."""
    if isinstance(model, GCCFRef):
        bare = GCCFRef(U, N_I, model.adj, D, L, model.reg_weight, self_loops=False)
    elif isinstance(model, SGLRef):
        bare = SGLRef(U, N_I, model.adj, D, L, model.reg_weight, model.keep_rate,
                      model.cl_weight, model.cl_temperature)  # fmt: skip
    else:
        bare = SimGCLRef(U, N_I, model.adj, D, L, model.reg_weight, model.cl_weight,
                         model.cl_temperature, model.eps)  # fmt: skip
    names = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in bare.named_parameters():
            p.copy_(names[name])
    return bare


def _prop(model, ego: np.ndarray) -> np.ndarray:
    a = _dense_adj()
    return _concat_prop(a, ego, L) if isinstance(model, GCCFRef) else _sum_prop(a, ego, L)


@pytest.mark.parametrize("cls", PLUS)
def test_plus_kd_matches_formula(cls) -> None:
    model = _variant(cls)
    draws = _draws(model)
    total, terms = model.cal_loss(ANC, POS, NEG, *draws)
    keys = ["bpr", "reg", "kd"] if cls is GCCFPlusRef else ["bpr", "reg", "cl", "kd"]
    assert list(terms) == keys
    f = _prop(model, _ego(model))  # kd aligns the clean / BPR forward (view 3)
    np.testing.assert_allclose(_f(terms["kd"]), _kd(model, f[:U], f[U:]), **TOL)
    np.testing.assert_allclose(_f(terms["reg"]), _reg(model), **TOL)
    acc = terms["bpr"]
    for k in keys[1:]:
        acc = acc + terms[k]
    assert torch.equal(total, acc)
    _, bare_terms = _bare_of(model).cal_loss(ANC, POS, NEG, *draws)
    for k in bare_terms:
        if k != "reg":
            assert torch.equal(terms[k], bare_terms[k])


@pytest.mark.parametrize("cls", GENE)
def test_gene_recon_and_masked_forward_match_formula(cls) -> None:
    model = _variant(cls)
    with torch.no_grad():
        model.masker_token.copy_(torch.tensor([[0.3, -0.2, 0.1, 0.5]]))
    draws = _draws(model)
    total, terms = model.cal_loss(ANC, POS, NEG, *draws, seeds=SEEDS)
    keys = ["bpr", "reg", "recon"] if cls is GCCFGeneRef else ["bpr", "reg", "cl", "recon"]
    assert list(terms) == keys
    ego = _ego(model)
    ego[SEEDS.numpy()] = _np(model.masker_token)
    f = _prop(model, ego)
    s = SEEDS.numpy()
    sem = np.concatenate([_np(model.usr_emb), _np(model.itm_emb)])
    recon = model.recon_weight * _ssl_con(_mlp(model.mlp, f[s]), sem[s], model.recon_temperature)
    np.testing.assert_allclose(_f(terms["recon"]), recon, **TOL)
    np.testing.assert_allclose(_f(terms["bpr"]), _bpr(f[:U], f[U:]), **TOL)
    acc = terms["bpr"]
    for k in keys[1:]:
        acc = acc + terms[k]
    assert torch.equal(total, acc)
    # The same mask drives every view: the cl term is the bare backbone's on the masked ego.
    if "cl" in terms:
        out = _bare_of(model).train_forward(
            ANC, POS, NEG, *draws, ego_transform=model.masker(SEEDS)
        )
        assert torch.equal(out.terms["cl"], terms["cl"])
    with pytest.raises(ValueError, match="seeds"):
        model.cal_loss(ANC, POS, NEG, *draws)
    # Masked rows get no gradient through the forward (only reg's 2·w·E).
    total.backward()
    grad = torch.cat([model.user_embeds.grad, model.item_embeds.grad])[SEEDS]
    ego_t = torch.cat([model.user_embeds, model.item_embeds])[SEEDS].detach()
    torch.testing.assert_close(grad, 2 * model.reg_weight * ego_t, rtol=1e-6, atol=0)


def test_parameter_order_and_shapes() -> None:
    dout_gccf = (L + 1) * D
    emb = [("user_embeds", (U, D)), ("item_embeds", (N_I, D))]
    w = [(f"layer_weight_{k}", (D, D)) for k in range(1, L + 1)]

    def con(dout):
        h = (DS + dout) // 2
        return [("mlp.mlp.0.weight", (h, DS)), ("mlp.mlp.0.bias", (h,)),
                ("mlp.mlp.2.weight", (dout, h)), ("mlp.mlp.2.bias", (dout,))]  # fmt: skip

    def gen(din):
        h = (DS + din) // 2
        return [("masker_token", (1, D)), ("mlp.mlp.0.weight", (h, din)), ("mlp.mlp.0.bias", (h,)),
                ("mlp.mlp.2.weight", (DS, h)), ("mlp.mlp.2.bias", (DS,))]  # fmt: skip

    expected = {
        GCCFPlusRef: emb + w + con(dout_gccf),
        GCCFGeneRef: emb + w + gen(dout_gccf),
        SGLPlusRef: emb + con(D),
        SGLGeneRef: emb + gen(D),
        SimGCLPlusRef: emb + con(D),
        SimGCLGeneRef: emb + gen(D),
    }
    for model, want in [(_gccf(), emb + w), (_sgl(), emb), (_simgcl(), emb)] + [
        (_variant(cls), spec) for cls, spec in expected.items()
    ]:
        got = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
        assert got == want, type(model).__name__
        assert "usr_emb" not in dict(model.named_parameters())
    gene = _variant(SGLGeneRef)
    assert torch.equal(gene.masker_token, torch.zeros(1, D))
    assert gene.num_seeds() == int(N * 0.3)
    # The spec's sizes: d = 32, Ds = 1536, L = 2 → GCCF 1536 → 816 → 96 and 96 → 816 → 1536;
    # the d-wide backbones 1536 → 784 → 32.
    big_u, big_i = np.zeros((U, 1536), np.float32), np.zeros((N_I, 1536), np.float32)
    g_plus = GCCFPlusRef(U, N_I, _adj(), big_u, big_i)
    g_gene = GCCFGeneRef(U, N_I, _adj(), big_u, big_i)
    s_plus = SimGCLPlusRef(U, N_I, _adj(), big_u, big_i)
    assert tuple(g_plus.mlp.mlp[0].weight.shape) == (816, 1536)
    assert tuple(g_plus.mlp.mlp[2].weight.shape) == (96, 816)
    assert tuple(g_gene.mlp.mlp[0].weight.shape) == (816, 96)
    assert tuple(g_gene.mlp.mlp[2].weight.shape) == (1536, 816)
    assert tuple(s_plus.mlp.mlp[0].weight.shape) == (784, 1536)
    assert tuple(s_plus.mlp.mlp[2].weight.shape) == (32, 784)


def test_zero_weights_skip_terms_but_consume_draws() -> None:
    for model in (_sgl(cl_weight=0.0), _simgcl(cl_weight=0.0)):
        torch.manual_seed(5)
        total, terms = model.cal_loss(ANC, POS, NEG)
        after = torch.get_rng_state()
        torch.manual_seed(5)
        _draws_like = (
            [torch.rand(model.adj._values().shape[0]) for _ in range(2)]
            if isinstance(model, SGLRef)
            else [torch.rand(N, D) for _ in range(2 * L)]
        )
        assert torch.equal(torch.get_rng_state(), after)
        assert _f(terms["cl"]) == 0.0
        assert torch.equal(total, terms["bpr"] + terms["reg"])
        f3 = torch.cat(model.eval_embeddings())
        np.testing.assert_allclose(_f(terms["bpr"]), _bpr(_np(f3[:U]), _np(f3[U:])), **TOL)
    for cls in PLUS + GENE:
        weight = {"kd_weight": 0.0} if cls in PLUS else {"recon_weight": 0.0}
        model = _variant(cls, **weight)
        calls: list[int] = []
        model.mlp.register_forward_hook(lambda *a, _c=calls: _c.append(1))
        extra = {} if cls in PLUS else {"seeds": SEEDS}
        _, terms = model.cal_loss(ANC, POS, NEG, *_draws(model), **extra)
        assert calls == [] and _f(terms["kd" if cls in PLUS else "recon"]) == 0.0
