"""Tests of the reference RLMRec-Con / RLMRec-Gen / DaRec LightGCN models
(reference/lightgcn.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from darec_jax.reference.adjacency import normalized_adjacency  # noqa: E402
from darec_jax.reference.lightgcn import (  # noqa: E402
    LightGCNDaRecRef,
    LightGCNGeneRef,
    LightGCNPlusRef,
    LightGCNRef,
)
from darec_jax.reference.losses import (  # noqa: E402
    global_alignment,
    local_alignment,
    orthogonality,
    uniformity,
)

U, N_I, DS, D, B, K = 30, 20, 12, 8, 10, 4


def _setup(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(U), 3)
    items = np.concatenate([rng.choice(N_I, 3, replace=False) for _ in range(U)])
    adj = normalized_adjacency(U, N_I, users, items)
    gen = torch.Generator().manual_seed(seed)
    return {
        "adj": adj,
        "usr": rng.standard_normal((U, DS)).astype(np.float32),
        "itm": rng.standard_normal((N_I, DS)).astype(np.float32),
        "anc": torch.as_tensor(rng.integers(0, U, B), dtype=torch.int64),
        "pos": torch.as_tensor(rng.integers(0, N_I, B), dtype=torch.int64),
        "neg": torch.as_tensor(rng.integers(0, N_I, B), dtype=torch.int64),
        "uniforms": torch.rand(adj._values().shape[0], generator=gen),
        "user_assign": torch.as_tensor(rng.integers(0, K, U), dtype=torch.int64),
        "item_assign": torch.as_tensor(rng.integers(0, K, N_I), dtype=torch.int64),
        "seeds": torch.as_tensor(rng.choice(U + N_I, 7, replace=False), dtype=torch.int64),
    }


def _plus(s: dict, **kw) -> LightGCNPlusRef:
    args = {"embedding_size": D, "layer_num": 2, "reg_weight": 1e-3, "kd_weight": 0.5}
    args.update(kw)
    return LightGCNPlusRef(U, N_I, s["adj"], s["usr"], s["itm"], kd_temperature=0.2, **args)


def _gene(s: dict, **kw) -> LightGCNGeneRef:
    args = {"embedding_size": D, "layer_num": 2, "reg_weight": 1e-3, "recon_weight": 0.5}
    args.update(kw)
    return LightGCNGeneRef(U, N_I, s["adj"], s["usr"], s["itm"], mask_ratio=0.15, **args)


def _darec(s: dict, **kw) -> LightGCNDaRecRef:
    args = {"embedding_size": D, "layer_num": 2, "reg_weight": 1e-3, "num_clusters": K}
    args.update(kw)
    return LightGCNDaRecRef(U, N_I, s["adj"], s["usr"], s["itm"], **args)


def _loss(model, s: dict, **extra):
    base = (s["anc"], s["pos"], s["neg"], s["uniforms"])
    if isinstance(model, LightGCNGeneRef):
        return model.cal_loss(*base, s["seeds"], **extra)
    if isinstance(model, LightGCNDaRecRef):
        return model.cal_loss(*base, s["user_assign"], s["item_assign"], **extra)
    return model.cal_loss(*base, **extra)


def _bare_like(model, s: dict, reg_weight: float) -> LightGCNRef:
    bare = LightGCNRef(U, N_I, s["adj"], D, model.layer_num, reg_weight, model.keep_rate)
    with torch.no_grad():
        bare.user_embeds.copy_(model.user_embeds)
        bare.item_embeds.copy_(model.item_embeds)
    return bare


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _manual_reg(params) -> torch.Tensor:
    return sum(float((p.detach().double() ** 2).sum()) for p in params)


# ---------------------------------------------------------------------------------------------


def test_term_keys_and_total_is_sum_in_order() -> None:
    torch.manual_seed(0)
    s = _setup()
    cases = [
        (_plus(s), ["bpr", "reg", "kd"]),
        (_gene(s), ["bpr", "reg", "recon"]),
        (_darec(s), ["bpr", "reg", "orth", "unif", "global", "local"]),
    ]
    for model, keys in cases:
        total, terms = _loss(model, s)
        assert list(terms) == keys
        acc = terms[keys[0]]
        for k in keys[1:]:
            acc = acc + terms[k]
        assert torch.equal(total, acc)
        assert all(torch.isfinite(v) and v.ndim == 0 for v in terms.values())
        assert all(_f(terms[k].detach()) != 0.0 for k in keys)


def test_semantic_embeddings_are_buffers_not_parameters() -> None:
    s = _setup()
    for model in (_plus(s), _gene(s), _darec(s)):
        names = [n for n, _ in model.named_parameters()]
        assert names[:2] == ["user_embeds", "item_embeds"]
        assert "usr_emb" not in names and "itm_emb" not in names
        assert model.usr_emb.dtype == torch.float32 and tuple(model.usr_emb.shape) == (U, DS)
    gene = _gene(s)
    assert [n for n, _ in gene.named_parameters()][2] == "masker_token"
    assert torch.equal(gene.masker_token, torch.zeros(1, D))
    assert gene.num_seeds() == int((U + N_I) * 0.15)


def test_zero_weights_reduce_to_bare_lightgcn() -> None:
    torch.manual_seed(1)
    s = _setup(1)
    plus = _plus(s, kd_weight=0.0, reg_weight=0.0)
    darec = _darec(s, lambda_or=0.0, lambda_un=0.0, lambda_gl=0.0, lambda_lo=0.0, reg_weight=0.0)
    for model in (plus, darec):
        bare = _bare_like(model, s, 0.0)
        calls: list[str] = []
        for name, sub in model.named_children():  # the MLP / heads are not even evaluated
            sub.register_forward_hook(lambda *a, _n=name, _c=calls: _c.append(_n))
        total, terms = _loss(model, s)
        assert calls == []
        bare_total, bare_terms = bare.cal_loss(s["anc"], s["pos"], s["neg"], s["uniforms"])
        assert torch.equal(total, bare_total)
        for k, v in terms.items():
            if k not in ("bpr", "reg"):
                assert _f(v) == 0.0
        total.backward()
        bare_total.backward()
        assert torch.equal(model.user_embeds.grad, bare.user_embeds.grad)
        assert torch.equal(model.item_embeds.grad, bare.item_embeds.grad)
        # The heads / MLP get only reg's (here zero) gradient from a zero-weight term.
        other = [p for n, p in model.named_parameters() if n not in ("user_embeds", "item_embeds")]
        assert other and all(p.grad is None or not p.grad.any() for p in other)

    # Gene with recon_weight = 0 and a zero token: zeroing the seed rows of the bare model gives
    # the same masked ego, hence the same loss; seed rows get no gradient from the gene model.
    gene = _gene(s, recon_weight=0.0, reg_weight=0.0)
    bare = _bare_like(gene, s, 0.0)
    seeds = s["seeds"]
    with torch.no_grad():
        for n in seeds.tolist():
            (bare.user_embeds[n] if n < U else bare.item_embeds[n - U]).zero_()
    total, _ = _loss(gene, s)
    bare_total, _ = bare.cal_loss(s["anc"], s["pos"], s["neg"], s["uniforms"])
    assert torch.equal(total, bare_total)
    total.backward()
    bare_total.backward()
    g_gene = torch.cat([gene.user_embeds.grad, gene.item_embeds.grad])
    g_bare = torch.cat([bare.user_embeds.grad, bare.item_embeds.grad])
    keep = torch.ones(U + N_I, dtype=torch.bool)
    keep[seeds] = False
    assert torch.equal(g_gene[keep], g_bare[keep])


def test_nonzero_reg_keeps_bpr_equal_to_bare() -> None:
    torch.manual_seed(2)
    s = _setup(2)
    for model in (_plus(s), _darec(s)):
        bare = _bare_like(model, s, model.reg_weight)
        _, terms = _loss(model, s)
        _, bare_terms = bare.cal_loss(s["anc"], s["pos"], s["neg"], s["uniforms"])
        assert torch.equal(terms["bpr"], bare_terms["bpr"])
        assert _f(terms["reg"].detach()) > float(bare_terms["reg"].detach())


def test_reg_covers_mlp_heads_and_token() -> None:
    torch.manual_seed(3)
    s = _setup(3)
    w = 1e-3
    plus = _plus(s, reg_weight=w)
    gene = _gene(s, reg_weight=w)
    with torch.no_grad():
        gene.masker_token.fill_(0.5)
    darec = _darec(s, reg_weight=w)

    def mlp_params(m):
        return [m.mlp[0].weight, m.mlp[0].bias, m.mlp[2].weight, m.mlp[2].bias]

    expected = {
        "plus": [plus.user_embeds, plus.item_embeds, *mlp_params(plus.mlp)],
        "gene": [gene.user_embeds, gene.item_embeds, gene.masker_token, *mlp_params(gene.mlp)],
        "darec": [darec.user_embeds, darec.item_embeds]
        + [
            p
            for h in (darec.cf_specific, darec.cf_shared, darec.llm_specific, darec.llm_shared)
            for p in mlp_params(h)
        ],
    }
    for name, model in (("plus", plus), ("gene", gene), ("darec", darec)):
        _, terms = _loss(model, s)
        manual = w * _manual_reg(expected[name])
        emb_only = w * _manual_reg([model.user_embeds, model.item_embeds])
        assert _f(terms["reg"].detach()) == pytest.approx(manual, rel=1e-5)
        assert manual > emb_only * 1.01
    # The token's ‖t‖² = D · 0.25 is part of gene's reg.
    _, terms = _loss(gene, s)
    with torch.no_grad():
        gene.masker_token.zero_()
    _, terms0 = _loss(gene, s)
    assert float((terms["reg"] - terms0["reg"]).detach()) == pytest.approx(w * D * 0.25, rel=1e-4)


def test_gene_masked_rows_get_no_gradient_token_does() -> None:
    torch.manual_seed(4)
    s = _setup(4)
    for recon_weight in (0.0, 0.5):
        gene = _gene(s, reg_weight=0.0, recon_weight=recon_weight)
        seeds = s["seeds"].clone()
        seeds[0] = int(s["anc"][0])  # a batch anchor is masked: the token reaches bpr directly
        total, _ = gene.cal_loss(s["anc"], s["pos"], s["neg"], s["uniforms"], seeds)
        total.backward()
        grad = torch.cat([gene.user_embeds.grad, gene.item_embeds.grad])
        assert torch.all(grad[seeds] == 0)
        keep = torch.ones(U + N_I, dtype=torch.bool)
        keep[seeds] = False
        assert float(grad[keep].abs().sum()) > 0
        assert float(gene.masker_token.grad.abs().sum()) > 0
        if recon_weight:
            assert float(gene.mlp.mlp[0].weight.grad.abs().sum()) > 0


def test_darec_terms_match_manual_and_subsets() -> None:
    torch.manual_seed(5)
    s = _setup(5)
    lam = {"lambda_or": 0.3, "lambda_un": 0.2, "lambda_gl": 0.7, "lambda_lo": 0.05}
    model = _darec(s, keep_rate=1.0, **lam)
    usub = torch.tensor([0, 2, 3, 5, 7])
    isub = torch.tensor([1, 4, 6, 9, 12, 15, 19])
    _, terms = _loss(model, s, user_subset=usub, item_subset=isub)
    with torch.no_grad():
        fu, fi = model.forward(model.adj)
        items = torch.cat([s["pos"], s["neg"]])
        sets = [
            (fu[s["anc"]], model.usr_emb[s["anc"]], s["user_assign"][s["anc"]], usub),
            (fi[items], model.itm_emb[items], s["item_assign"][items], isub),
        ]
        orth = unif = glob = local = 0.0
        for ec, el, a, sub in sets:
            spc, shc = model.cf_specific(ec), model.cf_shared(ec)
            spl, shl = model.llm_specific(el), model.llm_shared(el)
            orth += float(orthogonality(spl, shl) + orthogonality(spc, shc))
            unif += float(uniformity(spc[sub]) + uniformity(spl[sub]))
            glob += float(global_alignment(shc[sub], shl[sub], "mse"))
            local += float(local_alignment(shc, shl, a, K, 0.2))
    assert _f(terms["orth"]) == pytest.approx(0.3 * orth, rel=1e-5)
    assert _f(terms["unif"]) == pytest.approx(0.2 * unif, rel=1e-5)
    assert _f(terms["global"]) == pytest.approx(0.7 * glob, rel=1e-5)
    assert _f(terms["local"]) == pytest.approx(0.05 * local, rel=1e-5)

    # None == all rows; a strict subset changes the pairwise terms but not orth / local.
    _, t_none = _loss(model, s)
    _, t_all = _loss(model, s, user_subset=torch.arange(B), item_subset=torch.arange(2 * B))
    for k in t_none:
        assert torch.equal(t_none[k], t_all[k])
    assert _f(t_none["unif"]) != _f(terms["unif"])
    assert _f(t_none["global"]) != _f(terms["global"])
    assert torch.equal(t_none["orth"], terms["orth"])
    assert torch.equal(t_none["local"], terms["local"])

    # One λ at 0: that term is an exact 0 and the others are unchanged.
    m2 = _darec(s, keep_rate=1.0, **{**lam, "lambda_gl": 0.0})
    m2.load_state_dict(model.state_dict())
    total2, t2 = _loss(m2, s, user_subset=usub, item_subset=isub)
    assert _f(t2["global"]) == 0.0
    for k in ("bpr", "reg", "orth", "unif", "local"):
        assert torch.equal(t2[k], terms[k])
    assert torch.equal(total2, t2["bpr"] + t2["reg"] + t2["orth"] + t2["unif"] + t2["local"])

    with pytest.raises(ValueError):
        _darec(s, global_kind="cosine")
    _, tkl = _loss(_darec(s, global_kind="kl", global_temperature=0.5), s)
    assert torch.isfinite(tkl["global"]) and _f(tkl["global"]) >= 0


@pytest.mark.parametrize("kind", ["plus", "gene", "darec"])
def test_adam_reduces_loss(kind: str) -> None:
    torch.manual_seed(6)
    s = _setup(6)
    model = {"plus": _plus, "gene": _gene, "darec": _darec}[kind](s)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        total, _ = _loss(model, s)
        total.backward()
        opt.step()
        losses.append(_f(total))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_recluster_assignments_in_range_and_clean() -> None:
    torch.manual_seed(7)
    s = _setup(7)
    model = _darec(s)
    model.train()
    ua, ia = model.recluster(5, torch.arange(K), torch.arange(K) * 2)
    assert ua.dtype == torch.int64 and tuple(ua.shape) == (U,)
    assert ia.dtype == torch.int64 and tuple(ia.shape) == (N_I,)
    assert int(ua.min()) >= 0 and int(ua.max()) < K
    assert int(ia.min()) >= 0 and int(ia.max()) < K
    assert len(torch.unique(ua)) > 1
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())
    # Deterministic given the init; zero iterations assigns each init row to its own cluster.
    ua2, ia2 = model.recluster(5, torch.arange(K), torch.arange(K) * 2)
    assert torch.equal(ua, ua2) and torch.equal(ia, ia2)
    ua0, _ = model.recluster(0, torch.arange(K), torch.arange(K) * 2)
    assert torch.equal(ua0[:K], torch.arange(K))
