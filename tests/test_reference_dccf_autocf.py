"""Tests of the reference DCCF and AutoCF backbones and their RLMRec variants
(reference/dccf.py, reference/autocf.py), checked against dense float64 numpy versions of the
equations of docs/backbones.md §2.5, §2.6 and §3 on a tiny hand-made graph."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from darec_jax.reference import dccf as dccf_mod  # noqa: E402
from darec_jax.reference.adjacency import normalized_adjacency  # noqa: E402
from darec_jax.reference.autocf import (  # noqa: E402
    AutoCFDraws,
    AutoCFGeneRef,
    AutoCFPlusRef,
    AutoCFRef,
    AutoCFTrainer,
    GTLayer,
    decode_edge_hashes,
    is_resample_step,
)
from darec_jax.reference.dccf import (  # noqa: E402
    DCCFGeneRef,
    DCCFPlusRef,
    DCCFRef,
    adaptive_weights,
    dccf_edges,
    edge_propagate,
)
from darec_jax.reference.losses import rlmrec_con_kd  # noqa: E402
from darec_jax.reference.variants import BackboneOutput  # noqa: E402

torch.set_float32_matmul_precision("highest")

# Tiny graph: 5 users, 5 items (N = 10); user 4 and item 4 (node 9) are isolated.
U, N_I, D, DS = 5, 5, 8, 6
N = U + N_I
USERS = np.array([0, 0, 1, 1, 2, 2, 3])
ITEMS = np.array([0, 1, 1, 2, 0, 3, 2])
ANC = torch.tensor([0, 1, 1, 3, 2, 0])
POS = torch.tensor([0, 2, 1, 2, 3, 1])
NEG = torch.tensor([3, 0, 4, 1, 1, 2])
RTOL, ATOL = 2e-5, 2e-5


def _adj() -> torch.Tensor:
    return normalized_adjacency(U, N_I, USERS, ITEMS)


def _semantic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((U, DS)).astype(np.float32),
        rng.standard_normal((N_I, DS)).astype(np.float32),
    )


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _close(actual: torch.Tensor, expected: np.ndarray, rtol: float = RTOL, atol: float = ATOL):
    np.testing.assert_allclose(_np(actual), expected, rtol=rtol, atol=atol)


def _dense_ones() -> np.ndarray:
    a = np.zeros((N, N))
    a[USERS, U + ITEMS] = 1.0
    a[U + ITEMS, USERS] = 1.0
    return a


def _np_infonce(x, y, z, tau):
    def nrm(v):
        return v / np.sqrt(1e-8 + (v * v).sum(-1, keepdims=True))

    x, y, z = nrm(x), nrm(y), nrm(z)
    return float((-(x * y).sum(-1) / tau + np.log(np.exp(x @ z.T / tau).sum(-1))).sum())


def _np_ssl_con(x, y, tau):
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    pos = np.exp((x * y).sum(-1) / tau)
    tot = np.exp(x @ y.T / tau).sum(-1)
    return float(-np.log(pos / (tot + 1e-8) + 1e-8).mean())


def _softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


# ============================================================================================
# DCCF
# ============================================================================================


def _dccf(**kw) -> DCCFRef:
    torch.manual_seed(kw.pop("seed", 0))
    args = {"embedding_size": D, "layer_num": 2, "intent_num": 4, "reg_weight": 1e-3}
    args.update(kw)
    return DCCFRef(U, N_I, _adj(), cl_weight=0.5, cl_temperature=0.3, **args)


def _np_dccf_layer(x, wu, wi):
    """One DCCF layer, dense float64, straight from §2.5."""
    a = _dense_ones()
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        dis = np.where(deg > 0, deg**-0.5, 0.0)
    g = dis[:, None] * a * dis[None, :]
    z = g @ x

    def softmax(v):
        e = np.exp(v - v.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    r = np.concatenate([softmax(x[:U] @ wu) @ wu.T, softmax(x[U:] @ wi) @ wi.T])

    def adaptive(y):
        yn = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        alpha = (yn @ yn.T + 1.0) / 2.0 * a
        s = alpha.sum(1, keepdims=True)
        return np.divide(alpha, s, out=np.zeros_like(alpha), where=s > 0)

    aga = adaptive(z) @ x
    aia = adaptive(r) @ x
    return z + r + aga + aia + x, (z, r, aga, aia)


def _np_dccf_forward(model: DCCFRef, ego: np.ndarray):
    wu, wi = _np(model.user_intent), _np(model.item_intent)
    layers, views = [ego], []
    for _ in range(model.layer_num):
        nxt, parts = _np_dccf_layer(layers[-1], wu, wi)
        layers.append(nxt)
        views.append(parts)
    return np.sum(layers, axis=0), views


def test_dccf_edges_are_row_major_with_symmetric_weights() -> None:
    heads, tails, g = dccf_edges(_adj())
    pairs = list(zip(heads.tolist(), tails.tolist(), strict=True))
    expected = sorted(
        [(u, U + i) for u, i in zip(USERS, ITEMS, strict=True)]
        + [(U + i, u) for u, i in zip(USERS, ITEMS, strict=True)]
    )
    assert pairs == expected
    assert g.dtype == torch.float32
    deg = _dense_ones().sum(1)
    _close(g, 1.0 / np.sqrt(deg[heads.numpy()] * deg[tails.numpy()]), rtol=1e-6, atol=0)


def test_dccf_adaptive_weights_are_row_stochastic_and_isolated_rows_zero() -> None:
    heads, tails, _ = dccf_edges(_adj())
    y = torch.randn(N, D, generator=torch.Generator().manual_seed(1))
    w = adaptive_weights(y, heads, tails)
    row_sum = torch.zeros(N).index_add(0, heads, w)
    has_edges = torch.bincount(heads, minlength=N) > 0
    _close(row_sum[has_edges], np.ones(int(has_edges.sum())), rtol=1e-6, atol=1e-6)
    assert not has_edges[4] and not has_edges[9]
    out = edge_propagate(w, heads, tails, torch.randn(N, 3))
    assert torch.isfinite(out).all() and not out[[4, 9]].any()


def test_dccf_layers_and_final_match_dense_numpy() -> None:
    model = _dccf()
    ego = _np(model.ego())
    final, views = model.propagate(model.ego())
    np_final, np_views = _np_dccf_forward(model, ego)
    for parts, np_parts in zip(views, np_views, strict=True):
        for t, e in zip(parts, np_parts, strict=True):
            _close(t, e)
    _close(final, np_final)
    user_final, item_final = model.eval_embeddings()
    assert torch.equal(torch.cat([user_final, item_final]), final)


def test_dccf_cal_loss_terms_match_spec_and_are_deterministic() -> None:
    model = _dccf(seed=1)
    total, terms = model.cal_loss(ANC, POS, NEG)
    assert list(terms) == ["bpr", "reg", "cl"]
    assert torch.equal(total, terms["bpr"] + terms["reg"] + terms["cl"])
    total2, _ = model.cal_loss(ANC, POS, NEG)
    assert torch.equal(total, total2)  # DCCF draws nothing

    final, views = _np_dccf_forward(model, _np(model.ego()))
    fu, fi = final[:U], final[U:]
    a, p, n = ANC.numpy(), POS.numpy(), NEG.numpy()
    bpr = _softplus((fu[a] * fi[n]).sum(-1) - (fu[a] * fi[p]).sum(-1)).sum() / len(a)
    ub, ib = np.unique(a), U + np.unique(p)
    cl = 0.0
    for z, r, aga, aia in views:
        for rows in (ub, ib):
            for other in (r, aga, aia):
                cl += _np_infonce(z[rows], other[rows], other[rows], 0.3) / len(ub)
    reg = sum(float((_np(q) ** 2).sum()) for q in model.parameters())
    _close(terms["bpr"], bpr)
    _close(terms["cl"], 0.5 * cl)
    _close(terms["reg"], 1e-3 * reg, rtol=1e-6)


def test_dccf_gradients_flow_through_adaptive_weights(monkeypatch) -> None:
    heads, tails, _ = dccf_edges(_adj())
    x = torch.randn(N, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.randn(N, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: edge_propagate(adaptive_weights(v, heads, tails), heads, tails, x), (y,)
    )

    # Model level: detaching α changes the embedding and intent gradients.
    def grads(model):
        total, _ = model.cal_loss(ANC, POS, NEG)
        total.backward()
        return [q.grad.clone() for q in model.parameters()]

    live = grads(_dccf(seed=4))
    orig = dccf_mod.adaptive_weights
    monkeypatch.setattr(dccf_mod, "adaptive_weights", lambda v, h, t: orig(v.detach(), h, t))
    detached = grads(_dccf(seed=4))
    assert all(
        not torch.allclose(g1, g2, rtol=1e-4, atol=0) for g1, g2 in zip(live, detached, strict=True)
    )


def test_dccf_parameter_names_and_shapes() -> None:
    usr, itm = _semantic()
    hid_con, hid_gen = (DS + D) // 2, (DS + D) // 2
    base = {
        "user_intent": (D, 4),
        "item_intent": (D, 4),
        "user_embeds.weight": (U, D),
        "item_embeds.weight": (N_I, D),
    }
    mlp_con = {
        "mlp.mlp.0.weight": (hid_con, DS),
        "mlp.mlp.0.bias": (hid_con,),
        "mlp.mlp.2.weight": (D, hid_con),
        "mlp.mlp.2.bias": (D,),
    }
    mlp_gen = {
        "mlp.mlp.0.weight": (hid_gen, D),
        "mlp.mlp.0.bias": (hid_gen,),
        "mlp.mlp.2.weight": (DS, hid_gen),
        "mlp.mlp.2.bias": (DS,),
    }
    kw = {"embedding_size": D, "intent_num": 4}
    cases = [
        (DCCFRef(U, N_I, _adj(), **kw), base),
        (DCCFPlusRef(U, N_I, _adj(), usr, itm, **kw), {**base, **mlp_con}),
        (DCCFGeneRef(U, N_I, _adj(), usr, itm, **kw), {**base, **mlp_gen}),
    ]
    # torch lists a module's own parameters (intents, token) before its submodules' (the two
    # nn.Embedding tables, the MLP), whatever the order of assignment.
    intents = ["user_intent", "item_intent"]
    tables = ["user_embeds.weight", "item_embeds.weight"]
    mlp = ["mlp.mlp.0.weight", "mlp.mlp.0.bias", "mlp.mlp.2.weight", "mlp.mlp.2.bias"]
    orders = [intents + tables, intents + tables + mlp, intents + ["masker_token"] + tables + mlp]
    cases[2][1]["masker_token"] = (1, D)
    for (model, expected), order in zip(cases, orders, strict=True):
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        assert shapes == expected
        assert list(shapes) == order
    gene = cases[2][0]
    assert not gene.masker_token.any() and gene.num_seeds() == max(int(N * 0.05), 1)
    bound = np.sqrt(6.0 / (D + 4))
    assert float(cases[0][0].user_intent.detach().abs().max()) <= bound


def _copy(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Copy the parameters the two models share (same names), e.g. a variant's backbone."""
    shared = {k: v for k, v in src.state_dict().items() if k in dst.state_dict()}
    assert shared
    dst.load_state_dict(shared, strict=False)


def test_dccf_plus_adds_kd_on_the_final_embeddings() -> None:
    usr, itm = _semantic(1)
    bare = _dccf(seed=5)
    plus = DCCFPlusRef(
        U, N_I, _adj(), usr, itm, D, 2, 4, 1e-3, 0.5, 0.3, kd_weight=0.7, kd_temperature=0.4
    )
    _copy(plus, bare)
    total, terms = plus.cal_loss(ANC, POS, NEG)
    _, bare_terms = bare.cal_loss(ANC, POS, NEG)
    assert list(terms) == ["bpr", "reg", "cl", "kd"]
    assert torch.equal(terms["bpr"], bare_terms["bpr"]) and torch.equal(
        terms["cl"], bare_terms["cl"]
    )
    assert torch.equal(total, terms["bpr"] + terms["reg"] + terms["cl"] + terms["kd"])
    fu, fi = (_np(t) for t in bare.eval_embeddings())
    pu, pi = _np(plus.mlp(plus.usr_emb)), _np(plus.mlp(plus.itm_emb))
    a, p, n = ANC.numpy(), POS.numpy(), NEG.numpy()
    kd = (
        _np_infonce(fu[a], pu[a], pu, 0.4)
        + _np_infonce(fi[p], pi[p], pi[p], 0.4)
        + _np_infonce(fi[n], pi[n], pi[n], 0.4)
    )
    _close(terms["kd"], 0.7 * kd / len(a))


def test_dccf_gene_masks_every_forward_and_reconstructs_the_seeds() -> None:
    usr, itm = _semantic(2)
    gene = DCCFGeneRef(
        U, N_I, _adj(), usr, itm, D, 2, 4, 1e-3, 0.5, 0.3, recon_weight=0.6, recon_temperature=0.5
    )
    with torch.no_grad():
        gene.masker_token.fill_(0.3)
    seeds = torch.tensor([0, 6, 9])
    total, terms = gene.cal_loss(ANC, POS, NEG, seeds)
    assert list(terms) == ["bpr", "reg", "cl", "recon"]
    assert torch.equal(total, terms["bpr"] + terms["reg"] + terms["cl"] + terms["recon"])
    ego = _np(gene.ego())
    ego[seeds.numpy()] = 0.3
    final, views = _np_dccf_forward(gene, ego)
    fu, fi = final[:U], final[U:]
    a, p, n = ANC.numpy(), POS.numpy(), NEG.numpy()
    bpr = _softplus((fu[a] * fi[n]).sum(-1) - (fu[a] * fi[p]).sum(-1)).sum() / len(a)
    _close(terms["bpr"], bpr)
    pred = _np(gene.mlp(torch.as_tensor(final[seeds.numpy()], dtype=torch.float32)))
    sem = np.concatenate([usr, itm])[seeds.numpy()]
    _close(terms["recon"], 0.6 * _np_ssl_con(pred, sem, 0.5), rtol=1e-4)
    # The masked rows of E_u / E_i get no gradient from any term except reg.
    gene.reg_weight = 0.0
    total, _ = gene.cal_loss(ANC, POS, NEG, seeds)
    total.backward()
    assert not gene.user_embeds.weight.grad[0].any() and not gene.item_embeds.weight.grad[1].any()
    assert gene.masker_token.grad.any()


# ============================================================================================
# AutoCF
# ============================================================================================


def _autocf(cls=AutoCFRef, seed: int = 0, **kw):
    torch.manual_seed(seed)
    args = {
        "embedding_size": D,
        "gcn_layer": 2,
        "head_num": 2,
        "seed_num": 2,
        "reg_weight": 1e-3,
        "ssl_reg": 0.7,
        "fix_steps": 3,
    }
    args.update(kw)
    if cls is AutoCFRef:
        return cls(U, N_I, _adj(), **args)
    usr, itm = _semantic(seed)
    return cls(U, N_I, _adj(), usr, itm, **args)


# Hand-made resample: seeds u0 (node 0) and the isolated item 4 (node 9), Q = [3, 3].
SEEDS0 = torch.tensor([0, 9])
Q = torch.tensor([3, 3])


def _draws_j(n_mask: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    e = 2 * len(USERS)
    return torch.randint(0, n_mask, (e,), generator=gen), torch.randint(
        0, n_mask, (e,), generator=gen
    )


def test_autocf_two_hop_mask_and_renormalised_encoder() -> None:
    model = _autocf()
    assert model.samp_num() == 2 and model.n_edges == 14
    hops, keep, mask = model.mask_nodes(SEEDS0, Q)
    # u0's edges go at depth 0 → S1 = {u0, i0, i1} = {0, 5, 6}; depth 1 removes i0–u2, i1–u1.
    assert [h.tolist() for h in hops] == [[0, 5, 6]]
    assert mask.tolist() == [0, 3, 5, 6, 9]
    rows, cols = model.edge_rows, model.edge_cols
    gone = {0, 5, 6, 9}
    expected = [
        (r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if not {r, c} & gone
    ]
    got = list(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    assert got == expected  # original relative order
    assert set(got) == {(1, 7), (7, 1), (2, 8), (8, 2), (3, 7), (7, 3)}
    graph = model.build_graph(SEEDS0, Q, *_draws_j(len(mask)))
    deg = np.bincount(graph.enc_rows.numpy(), minlength=N).astype(np.float64)
    c = (deg + 1e-12) ** -0.5
    _close(graph.enc_values, c[graph.enc_rows.numpy()] * c[graph.enc_cols.numpy()], 1e-6, 0)
    value = dict(zip(got, graph.enc_values.tolist(), strict=True))
    assert value[(1, 7)] == pytest.approx(2**-0.5) and value[(2, 8)] == pytest.approx(1.0)


def test_autocf_decoder_edges_are_sorted_unique_pairs_loops_and_encoder() -> None:
    model = _autocf()
    _, _, mask = model.mask_nodes(SEEDS0, Q)
    j, j2 = _draws_j(len(mask), seed=7)
    graph = model.build_graph(SEEDS0, Q, j, j2)
    m = mask.numpy()
    a, b = m[j.numpy()], m[j2.numpy()]
    cand = set(zip(a.tolist(), b.tolist(), strict=True)) | set(
        zip(b.tolist(), a.tolist(), strict=True)
    )
    cand |= {(n, n) for n in range(N)}
    cand |= set(zip(graph.enc_rows.tolist(), graph.enc_cols.tolist(), strict=True))
    expected = sorted(cand, key=lambda e: e[0] * N + e[1])
    assert list(zip(graph.dec_rows.tolist(), graph.dec_cols.tolist(), strict=True)) == expected
    exact = _autocf(fp32_row_decode=True).build_graph(SEEDS0, Q, j, j2)
    assert torch.equal(exact.dec_rows, graph.dec_rows)  # no decode error for N = 10


def test_autocf_fp32_row_decode_emulates_the_reference_bug() -> None:
    for n_nodes, n_users, n_bad, n_bad_users in ((20332, 11000, 2182, 992), (22101, 11091, 0, 0)):
        r = torch.arange(n_nodes, dtype=torch.int64)
        hashes = r * n_nodes + (n_nodes - 1)
        rows, cols = decode_edge_hashes(hashes, n_nodes, fp32_row_decode=True)
        assert torch.equal(cols, torch.full_like(r, n_nodes - 1))
        bad = rows != r
        assert int(bad.sum()) == n_bad and int((r[bad] < n_users).sum()) == n_bad_users
        assert torch.equal(rows[bad], r[bad] - 1)
        exact, _ = decode_edge_hashes(hashes, n_nodes)
        assert torch.equal(exact, r)
    r = torch.arange(20332)
    bad = decode_edge_hashes(r * 20332, 20332, True)[0] != r
    assert int(bad[3303:4096].sum()) == 199 and int(bad[5819:8192].sum()) == 793


def test_autocf_local_graph_matches_numpy() -> None:
    model = _autocf(seed=1, seed_num=3)
    u = torch.rand(N, generator=torch.Generator().manual_seed(3))
    u[2] = 0.0  # exactly 0 → 1e-8
    seeds, noisy, infomax = model.local_graph(u)
    e0 = _np(model.ego())
    a = _dense_ones()
    deg = a.sum(1, keepdims=True)
    fst = a @ e0 - e0
    scd = (a @ fst - fst) - deg * e0
    scd_num = (a @ deg - deg) - deg
    sub = (fst + scd) / (deg + scd_num + 1e-8)

    def nrm(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    score = 1.0 / (1.0 + np.exp(-(nrm(sub) * nrm(e0)).sum(1)))
    uu = u.double().numpy()
    uu[2] = np.float32(1e-8)
    expected = np.log(score) - np.log(-np.log(uu))
    _close(noisy, expected, rtol=1e-5, atol=1e-5)
    _close(infomax, -expected.mean(), rtol=1e-5, atol=1e-6)
    assert sorted(seeds.tolist()) == sorted(np.argsort(-expected)[:3].tolist())
    infomax.backward()
    assert model.user_embeds.grad.any() and model.item_embeds.grad.any()
    assert all(p.grad is None for p in model.gtLayers.parameters())


def _np_gt(rows, cols, x, wq, wk, wv, heads):
    dh = x.shape[1] // heads
    q = (x[rows] @ wq).reshape(-1, heads, dh)
    k = (x[cols] @ wk).reshape(-1, heads, dh)
    v = (x[cols] @ wv).reshape(-1, heads, dh)
    e = np.exp(np.clip((q * k).sum(-1), -10, 10))
    denom = np.zeros((x.shape[0], heads))
    np.add.at(denom, rows, e)
    att = e / (denom[rows] + 1e-8)
    out = np.zeros((x.shape[0], heads, dh))
    np.add.at(out, rows, att[:, :, None] * v)
    return out.reshape(x.shape[0], -1)


def test_gt_layer_matches_numpy_with_clamp_and_empty_rows() -> None:
    torch.manual_seed(8)
    layer = GTLayer(D, 2)
    assert [n for n, _ in layer.named_parameters()] == ["qTrans", "kTrans", "vTrans"]
    x = 3.0 * torch.randn(6, D)
    rows = torch.tensor([0, 0, 0, 1, 2, 2, 5, 5])  # rows 3 and 4 have no edge
    cols = torch.tensor([0, 1, 2, 1, 3, 4, 5, 0])
    out = layer(rows, cols, x)
    w = [_np(p) for p in (layer.qTrans, layer.kTrans, layer.vTrans)]
    xs = _np(x)
    raw = ((xs[rows] @ w[0]).reshape(-1, 2, 4) * (xs[cols] @ w[1]).reshape(-1, 2, 4)).sum(-1)
    assert np.abs(raw).max() > 10  # the clamp is exercised
    _close(out, _np_gt(rows.numpy(), cols.numpy(), xs, *w, 2), rtol=1e-5, atol=1e-5)
    assert not out[[3, 4]].any()


def _np_autocf_final(model, ego, enc_rows, enc_cols, enc_values, gt_rows, gt_cols):
    enc = np.zeros((N, N))
    np.add.at(enc, (enc_rows, enc_cols), enc_values)
    layers = [ego]
    for _ in range(model.gcn_layer):
        layers.append(enc @ layers[-1])
    for gt in model.gtLayers:
        w = [_np(p) for p in (gt.qTrans, gt.kTrans, gt.vTrans)]
        layers.append(_np_gt(gt_rows, gt_cols, layers[-1], *w, model.head_num))
    return np.sum(layers, axis=0)


def _resample(model, seed: int = 0):
    u = torch.rand(N, generator=torch.Generator().manual_seed(seed))
    seeds, _, _ = model.local_graph(u)
    q = torch.randint(0, N, (model.samp_num(),), generator=torch.Generator().manual_seed(seed))
    _, _, mask = model.mask_nodes(seeds, q)
    return AutoCFDraws(u, q, *_draws_j(len(mask), seed))


def test_autocf_train_and_eval_forward_and_losses_match_numpy() -> None:
    model = _autocf(seed=2)
    with pytest.raises(RuntimeError):
        model.cal_loss(ANC, POS, NEG)
    draws = _resample(model, 2)
    _, graph = model.resample(*draws)
    total, terms = model.cal_loss(ANC, POS, NEG)
    assert list(terms) == ["rec", "reg", "cl"]
    assert torch.equal(total, terms["rec"] + terms["reg"] + terms["cl"])
    final = _np_autocf_final(
        model,
        _np(model.ego()),
        graph.enc_rows.numpy(),
        graph.enc_cols.numpy(),
        graph.enc_values.double().numpy(),
        graph.dec_rows.numpy(),
        graph.dec_cols.numpy(),
    )
    fu, fi = final[:U], final[U:]
    user_final, item_final, _ = model.train_forward(ANC, POS, NEG)
    _close(torch.cat([user_final, item_final]), final)
    a, p = ANC.numpy(), POS.numpy()

    def lse(x, z):
        return np.log(np.exp(x @ z.T).sum(-1))

    cl = 0.7 * (lse(fu[np.unique(a)], fu).mean() + lse(fi[np.unique(p)], fi).mean())
    cl += lse(fu[a], fi).mean()
    _close(terms["rec"], -(fu[a] * fi[p]).sum(-1).mean())
    _close(terms["cl"], cl)
    reg = sum(float((_np(q) ** 2).sum()) for q in model.parameters())
    _close(terms["reg"], 1e-3 * reg, rtol=1e-6)
    # Eval: encoder Â, GT on Â's own index list (no self-loops, no random pairs).
    adj = _adj()
    rows, cols = adj._indices().numpy()
    eval_final = _np_autocf_final(
        model, _np(model.ego()), rows, cols, _np(adj._values()), rows, cols
    )
    _close(torch.cat(model.eval_embeddings()), eval_final)


def test_autocf_injected_draws_are_deterministic_and_match_the_rng_order() -> None:
    model = _autocf(seed=3)
    draws = _resample(model, 4)
    inf1, g1 = model.resample(*draws)
    t1, _ = model.cal_loss(ANC, POS, NEG)
    inf2, g2 = model.resample(*draws)
    t2, _ = model.cal_loss(ANC, POS, NEG)
    assert torch.equal(inf1, inf2) and torch.equal(t1, t2)
    for f1, f2 in zip(g1, g2, strict=True):
        assert all(map(torch.equal, f1, f2)) if isinstance(f1, tuple) else torch.equal(f1, f2)
    # None draws come from the global generator as rand(N), randint(N), randint(|M|) twice.
    torch.manual_seed(11)
    _, g_auto = model.resample()
    torch.manual_seed(11)
    u = torch.rand(N)
    q = torch.randint(0, N, (model.samp_num(),))
    _, _, mask = model.mask_nodes(model.local_graph(u)[0], q)
    j = torch.randint(0, len(mask), (model.n_edges,))
    j2 = torch.randint(0, len(mask), (model.n_edges,))
    _, g_inj = model.resample(u, q, j, j2)
    assert torch.equal(g_auto.dec_rows, g_inj.dec_rows) and torch.equal(g_auto.mask_nodes, mask)


def test_autocf_trainer_resamples_every_fix_steps_and_adds_infomax_last() -> None:
    assert [is_resample_step(i, 3) for i in range(7)] == [1, 0, 0, 1, 0, 0, 1]
    model = _autocf(seed=4)
    trainer = AutoCFTrainer(model)
    calls: list[int] = []
    orig = model.resample

    def counting(*args):
        calls.append(trainer.step_in_epoch)
        return orig(*args)

    model.resample = counting
    rng = np.random.RandomState(0)
    for _ in range(2):  # 7 interactions, batch 1 → 7 steps per epoch; i resets every epoch
        trainer.train_epoch(USERS, ITEMS, N_I, rng, batch_size=1)
    assert calls == [0, 3, 6, 0, 3, 6]

    trainer.start_epoch()
    draws = _resample(model, 5)
    total, terms = trainer.loss(ANC, POS, NEG, draws)
    graph = model.graph
    cal_total, _ = model.cal_loss(ANC, POS, NEG)
    assert (
        torch.equal(total, cal_total + terms["infomax"]) and float(terms["infomax"].detach()) != 0.0
    )
    trainer.step_in_epoch = 1  # not a resample step: graph kept, infomax an exact 0
    total, terms = trainer.loss(ANC, POS, NEG, draws)
    assert model.graph is graph and float(terms["infomax"]) == 0.0
    assert torch.equal(total, cal_total)


def test_autocf_parameter_names_and_shapes() -> None:
    hid = (DS + D) // 2
    base = {
        "user_embeds": (U, D),
        "item_embeds": (N_I, D),
        "gtLayers.0.qTrans": (D, D),
        "gtLayers.0.kTrans": (D, D),
        "gtLayers.0.vTrans": (D, D),
    }
    con = {
        "mlp.mlp.0.weight": (hid, DS),
        "mlp.mlp.0.bias": (hid,),
        "mlp.mlp.2.weight": (D, hid),
        "mlp.mlp.2.bias": (D,),
    }
    gen = {
        "gene_masker.mask_token": (1, D),
        "mlp.mlp.0.weight": (hid, D),
        "mlp.mlp.0.bias": (hid,),
        "mlp.mlp.2.weight": (DS, hid),
        "mlp.mlp.2.bias": (DS,),
    }
    for cls, expected in (
        (AutoCFRef, base),
        (AutoCFPlusRef, {**base, **con}),
        (AutoCFGeneRef, {**base, **gen}),
    ):
        model = _autocf(cls)
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        assert shapes == expected and list(shapes) == list(expected)
    assert len(list(_autocf(gt_layer=2).gtLayers)) == 2


def test_autocf_plus_has_no_negative_term_and_ignores_negatives() -> None:
    plus = _autocf(AutoCFPlusRef, seed=6, kd_weight=0.3, kd_temperature=0.4)
    bare = _autocf(seed=6)
    _copy(bare, plus)
    draws = _resample(plus, 6)
    plus.resample(*draws)
    bare.resample(*draws)
    total, terms = plus.cal_loss(ANC, POS, NEG)
    _, bare_terms = bare.cal_loss(ANC, POS, NEG)
    assert list(terms) == ["rec", "reg", "cl", "kd"]
    assert torch.equal(terms["rec"], bare_terms["rec"]) and torch.equal(
        terms["cl"], bare_terms["cl"]
    )
    assert torch.equal(total, terms["rec"] + terms["reg"] + terms["cl"] + terms["kd"])
    other_neg, _ = plus.cal_loss(ANC, POS, torch.flip(NEG, [0]))
    assert torch.equal(total, other_neg)
    user_final, item_final, _ = plus.train_forward(ANC, POS, NEG)
    fu, fi = _np(user_final), _np(item_final)
    pu, pi = _np(plus.mlp(plus.usr_emb)), _np(plus.mlp(plus.itm_emb))
    a, p = ANC.numpy(), POS.numpy()
    kd = _np_infonce(fu[a], pu[a], pu, 0.4) + _np_infonce(fi[p], pi[p], pi[p], 0.4)
    _close(terms["kd"], 0.3 * kd / len(a))
    with_neg = rlmrec_con_kd(
        user_final, item_final, plus.mlp(plus.usr_emb), plus.mlp(plus.itm_emb),
        ANC, POS, NEG, 0.3, 0.4,
    )  # fmt: skip
    assert float(with_neg.detach()) != pytest.approx(float(terms["kd"].detach()))


def test_autocf_gene_masks_the_forward_but_not_the_seed_sampling() -> None:
    gene = _autocf(AutoCFGeneRef, seed=7, recon_weight=0.8, recon_temperature=0.5)
    bare = _autocf(seed=7)
    _copy(bare, gene)
    with torch.no_grad():
        gene.gene_masker.mask_token.fill_(-0.2)
    draws = _resample(gene, 7)
    inf_gene, g_gene = gene.resample(*draws)
    inf_bare, g_bare = bare.resample(*draws)
    assert torch.equal(inf_gene, inf_bare) and torch.equal(g_gene.dec_rows, g_bare.dec_rows)
    seeds = torch.tensor([1, 5, 9])
    total, terms = gene.cal_loss(ANC, POS, NEG, seeds)
    assert list(terms) == ["rec", "reg", "cl", "recon"]
    assert torch.equal(total, terms["rec"] + terms["reg"] + terms["cl"] + terms["recon"])
    ego = _np(gene.ego())
    ego[seeds.numpy()] = -0.2
    final = _np_autocf_final(
        gene,
        ego,
        g_gene.enc_rows.numpy(),
        g_gene.enc_cols.numpy(),
        g_gene.enc_values.double().numpy(),
        g_gene.dec_rows.numpy(),
        g_gene.dec_cols.numpy(),
    )
    a, p = ANC.numpy(), POS.numpy()
    _close(terms["rec"], -(final[:U][a] * final[U:][p]).sum(-1).mean())
    pred = _np(gene.mlp(torch.as_tensor(final[seeds.numpy()], dtype=torch.float32)))
    usr, itm = _semantic(7)
    sem = np.concatenate([usr, itm])[seeds.numpy()]
    _close(terms["recon"], 0.8 * _np_ssl_con(pred, sem, 0.5), rtol=1e-4)
    assert gene.num_seeds() == int(N * 0.2)


def test_generic_interface_and_zero_weights_skip_terms() -> None:
    dccf = DCCFRef(U, N_I, _adj(), D, 2, 4, 1e-3, cl_weight=0.0)
    out = dccf.train_forward(ANC, POS, NEG)
    assert isinstance(out, BackboneOutput) and list(out.terms) == ["cl"]
    assert dccf.final_dim == D and float(out.terms["cl"]) == 0.0
    total, terms = dccf.cal_loss(ANC, POS, NEG)
    assert torch.equal(total, terms["bpr"] + terms["reg"])

    usr, itm = _semantic(3)
    plus = DCCFPlusRef(U, N_I, _adj(), usr, itm, D, 2, 4, kd_weight=0.0)
    autocf_plus = _autocf(AutoCFPlusRef, seed=9, kd_weight=0.0)
    autocf_plus.resample(*_resample(autocf_plus, 9))
    for model in (plus, autocf_plus):
        calls: list[int] = []
        model.mlp.register_forward_hook(lambda *a, _c=calls: _c.append(1))
        total, terms = model.cal_loss(ANC, POS, NEG)
        assert calls == [] and float(terms["kd"]) == 0.0
        first = list(terms)[0]
        assert torch.equal(total, terms[first] + terms["reg"] + terms["cl"])
        assert isinstance(model.train_forward(ANC, POS, NEG), BackboneOutput)
