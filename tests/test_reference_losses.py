"""Hand-checked tests of the reference alignment losses (darec_jax.reference.losses).

Expected values are computed independently with numpy loops in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from darec_jax.reference.losses import (  # noqa: E402
    AlignMLP,
    cal_infonce,
    global_alignment,
    local_alignment,
    node_mask,
    orthogonality,
    rlmrec_con_kd,
    rlmrec_gen_recon,
    spherical_kmeans,
    ssl_con_loss,
    uniformity,
)

RTOL = 1e-5
ATOL = 1e-5


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def _np(a: np.ndarray) -> np.ndarray:
    """The float32 values as float64 (what the torch side actually sees)."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _norm_eps_row(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(1e-8 + float(np.dot(v, v)))


def _infonce_np(x, y, z, tau) -> float:
    x, y, z = _np(x), _np(y), _np(z)
    total = 0.0
    for b in range(x.shape[0]):
        xb = _norm_eps_row(x[b])
        pos = float(np.dot(xb, _norm_eps_row(y[b]))) / tau
        den = sum(math.exp(float(np.dot(xb, _norm_eps_row(zr))) / tau) for zr in z)
        total += -pos + math.log(den)
    return total


def _ssl_np(x, y, tau) -> float:
    x, y = _np(x), _np(y)
    xs = [r / max(np.linalg.norm(r), 1e-12) for r in x]
    ys = [r / max(np.linalg.norm(r), 1e-12) for r in y]
    m = len(xs)
    total = 0.0
    for i in range(m):
        num = math.exp(float(np.dot(xs[i], ys[i])) / tau)
        den = sum(math.exp(float(np.dot(xs[i], ys[j])) / tau) for j in range(m))
        total += math.log(num / (den + 1e-8) + 1e-8)
    return -total / m


def _mlp_np(mlp: AlignMLP, x: np.ndarray) -> np.ndarray:
    sd = {k: v.detach().numpy().astype(np.float64) for k, v in mlp.state_dict().items()}
    h = _np(x) @ sd["mlp.0.weight"].T + sd["mlp.0.bias"]
    h = np.where(h > 0, h, 0.01 * h)
    return h @ sd["mlp.2.weight"].T + sd["mlp.2.bias"]


# ------------------------------------------------------------------------------------------
# RLMRec primitives
# ------------------------------------------------------------------------------------------


def test_cal_infonce_matches_numpy_loop():
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(4, 5)), rng.normal(size=(4, 5)), rng.normal(size=(6, 5))
    got = cal_infonce(_t(x), _t(y), _t(z), 0.3).item()
    assert got == pytest.approx(_infonce_np(x, y, z, 0.3), rel=RTOL, abs=ATOL)


def test_cal_infonce_zero_row_and_hand_value():
    # A zero anchor row normalises to 0 (no NaN): its term is log(#rows of Z).
    x = np.zeros((1, 3))
    y = np.array([[1.0, 0.0, 0.0]])
    z = np.eye(3)[:2] * 5.0  # 2 rows
    got = cal_infonce(_t(x), _t(y), _t(z), 0.5).item()
    assert got == pytest.approx(math.log(2.0), rel=1e-6)
    # Parallel unit anchor and positive, Z = {y, −y}: −1/τ + log(e^{1/τ} + e^{−1/τ}).
    x = np.array([[2.0, 0.0]])
    y = np.array([[3.0, 0.0]])
    z = np.array([[1.0, 0.0], [-1.0, 0.0]])
    tau = 0.5
    expected = -1.0 / tau + math.log(math.exp(1.0 / tau) + math.exp(-1.0 / tau))
    assert cal_infonce(_t(x), _t(y), _t(z), tau).item() == pytest.approx(expected, rel=1e-5)


def test_cal_infonce_naive_agrees_with_logsumexp():
    rng = np.random.default_rng(1)
    x, y, z = rng.normal(size=(8, 6)), rng.normal(size=(8, 6)), rng.normal(size=(10, 6))
    xt, yt, zt = _t(x), _t(y), _t(z)
    tau = 0.2
    got = cal_infonce(xt, yt, zt, tau)

    def n(a):
        return a / torch.sqrt(1e-8 + a.square().sum(-1, keepdim=True))

    lse = torch.logsumexp(n(xt) @ n(zt).T / tau, dim=1)
    ref = (-(n(xt) * n(yt)).sum(-1) / tau + lse).sum()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_cal_infonce_is_differentiable():
    rng = np.random.default_rng(2)
    x = _t(rng.normal(size=(3, 4))).requires_grad_(True)
    loss = cal_infonce(x, _t(rng.normal(size=(3, 4))), _t(rng.normal(size=(5, 4))), 0.5)
    loss.backward()
    assert loss.dim() == 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_ssl_con_loss_matches_numpy_loop():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    got = ssl_con_loss(_t(x), _t(y), 0.4).item()
    assert got == pytest.approx(_ssl_np(x, y, 0.4), rel=RTOL, abs=ATOL)


def test_ssl_con_loss_single_row_hand_value():
    # M = 1, parallel rows: −log(e^{1/τ} / (e^{1/τ} + 1e-8) + 1e-8) ≈ −log(1 + 1e-8 − tiny) ≈ 0.
    x = np.array([[0.0, 2.0]])
    got = ssl_con_loss(_t(x), _t(x * 3.0), 1.0).item()
    assert abs(got) < 1e-6
    # Two orthogonal pairs, τ = 1: −log(e / (e + 1)) for each row.
    x = np.eye(2)
    expected = -math.log(math.e / (math.e + 1.0 + 1e-8) + 1e-8)
    assert ssl_con_loss(_t(x), _t(x), 1.0).item() == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------------------------
# MLP, kd, node mask, recon
# ------------------------------------------------------------------------------------------


def test_align_mlp_names_init_and_forward():
    torch.manual_seed(0)
    mlp = AlignMLP(40, 20, 8)
    sd = mlp.state_dict()
    assert list(sd) == ["mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    assert sd["mlp.0.weight"].shape == (20, 40) and sd["mlp.2.weight"].shape == (8, 20)
    assert sd["mlp.0.weight"].abs().max() <= math.sqrt(6 / 60)
    assert sd["mlp.2.weight"].abs().max() <= math.sqrt(6 / 28)
    # Xavier range is much wider than the default kaiming bound for mlp.0 would give at ~1/sqrt(40)
    assert sd["mlp.0.weight"].abs().max() > 1.0 / math.sqrt(40)
    assert sd["mlp.0.bias"].abs().max() <= 1.0 / math.sqrt(40)
    assert sd["mlp.2.bias"].abs().max() <= 1.0 / math.sqrt(20)
    x = np.random.default_rng(4).normal(size=(3, 40))
    np.testing.assert_allclose(mlp(_t(x)).detach().numpy(), _mlp_np(mlp, x), rtol=1e-5, atol=1e-5)


def _kd_case(seed: int = 5):
    rng = np.random.default_rng(seed)
    n_users, n_items, d = 6, 7, 4
    fu, fi = rng.normal(size=(n_users, d)), rng.normal(size=(n_items, d))
    pu, pi = rng.normal(size=(n_users, d)), rng.normal(size=(n_items, d))
    anc = np.array([0, 2, 2, 5])
    pos = np.array([1, 3, 3, 6])  # duplicates included
    neg = np.array([0, 4, 2, 5])
    return fu, fi, pu, pi, anc, pos, neg


def test_rlmrec_con_kd_matches_numpy():
    fu, fi, pu, pi, anc, pos, neg = _kd_case()
    tau, w, batch = 0.2, 0.01, len(anc)
    args = (_t(fu), _t(fi), _t(pu), _t(pi), torch.tensor(anc), torch.tensor(pos))
    user = _infonce_np(fu[anc], pu[anc], pu, tau)
    pos_term = _infonce_np(fi[pos], pi[pos], pi[pos], tau)
    neg_term = _infonce_np(fi[neg], pi[neg], pi[neg], tau)
    got = rlmrec_con_kd(*args, torch.tensor(neg), w, tau).item()
    assert got == pytest.approx(w * (user + pos_term + neg_term) / batch, rel=RTOL)
    got2 = rlmrec_con_kd(*args, torch.tensor(neg), w, tau, with_negative_term=False).item()
    assert got2 == pytest.approx(w * (user + pos_term) / batch, rel=RTOL)
    assert got2 != pytest.approx(got, rel=1e-3)


def test_rlmrec_con_kd_zero_weight_is_exactly_zero():
    fu, fi, pu, pi, anc, pos, neg = _kd_case(6)
    ts = [torch.tensor(a) for a in (anc, pos, neg)]
    got = rlmrec_con_kd(_t(fu), _t(fi), _t(pu), _t(pi), *ts, 0.0, 0.5)
    assert got.item() == 0.0


def test_node_mask_rows_and_gradient():
    rng = np.random.default_rng(7)
    ego = _t(rng.normal(size=(6, 3))).requires_grad_(True)
    token = _t(rng.normal(size=(1, 3))).requires_grad_(True)
    seeds = torch.tensor([4, 1])
    out = node_mask(ego, seeds, token)
    masked = np.zeros(6, dtype=bool)
    masked[[1, 4]] = True
    assert torch.equal(out[torch.tensor(masked)], token.detach().expand(2, 3))
    assert torch.equal(out[torch.tensor(~masked)], ego.detach()[torch.tensor(~masked)])
    weights = _t(rng.normal(size=(6, 3)))
    (out * weights).sum().backward()
    assert torch.all(ego.grad[torch.tensor(masked)] == 0)
    assert torch.equal(ego.grad[torch.tensor(~masked)], weights[torch.tensor(~masked)])
    torch.testing.assert_close(token.grad, weights[torch.tensor(masked)].sum(0, keepdim=True))


def test_rlmrec_gen_recon_matches_numpy():
    torch.manual_seed(1)
    rng = np.random.default_rng(8)
    final_all, semantic = rng.normal(size=(9, 4)), rng.normal(size=(9, 12))
    seeds = np.array([7, 0, 3, 5])
    mlp = AlignMLP(4, 8, 12)
    w, tau = 0.1, 0.5
    got = rlmrec_gen_recon(_t(final_all), _t(semantic), torch.tensor(seeds), mlp, w, tau)
    expected = w * _ssl_np(_mlp_np(mlp, final_all[seeds]), semantic[seeds], tau)
    assert got.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    got.backward()
    assert mlp.mlp[0].weight.grad is not None and mlp.mlp[0].weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------
# DaRec terms
# ------------------------------------------------------------------------------------------


def test_orthogonality_orthogonal_parallel_and_diagonal():
    sp = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    sh_orth = np.array([[0.0, 3.0, 0.0], [0.0, 0.0, -1.0]])
    assert orthogonality(_t(sp), _t(sh_orth)).item() == pytest.approx(0.0, abs=1e-7)
    sh_par = np.array([[5.0, 0.0, 0.0], [0.0, -0.5, 0.0]])  # anti-parallel also gives cos² = 1
    assert orthogonality(_t(sp), _t(sh_par)).item() == pytest.approx(1.0, rel=1e-6)
    sh_mixed = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # cos² = 0.5 and 0
    assert orthogonality(_t(sp), _t(sh_mixed)).item() == pytest.approx(0.25, rel=1e-6)


def test_uniformity_matches_numpy_double_loop():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(7, 4))
    x[2] *= 1e-3  # small-norm row: the 1e-8 epsilon matters a little
    xs = [_norm_eps_row(r) for r in _np(x)]
    vals = []
    for j in range(7):
        for k in range(j + 1, 7):
            diff = xs[j] - xs[k]
            vals.append(math.exp(-2.0 * float(np.dot(diff, diff))))
    expected = math.log(sum(vals) / len(vals))
    assert uniformity(_t(x)).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # All rows equal (up to scale): every distance 0 → log 1 = 0.
    same = np.tile(np.array([[1.0, 2.0, 3.0]]), (4, 1)) * np.array([[1.0], [2.0], [3.0], [4.0]])
    assert uniformity(_t(same)).item() == pytest.approx(0.0, abs=1e-6)


def test_global_alignment_mse_zero_under_rotation_and_matches_numpy():
    rng = np.random.default_rng(10)
    a = rng.normal(size=(5, 4))
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    scales = np.array([[0.5], [2.0], [3.0], [1.0], [7.0]])
    b = (a @ q) * scales  # same normalised Gram matrix
    assert global_alignment(_t(a), _t(b)).item() == pytest.approx(0.0, abs=1e-6)
    c = rng.normal(size=(5, 4))
    an = np.stack([_norm_eps_row(r) for r in _np(a)])
    cn = np.stack([_norm_eps_row(r) for r in _np(c)])
    expected = 0.0
    for j in range(5):
        for k in range(5):
            expected += (float(an[j] @ an[k]) - float(cn[j] @ cn[k])) ** 2
    expected /= 25
    got = global_alignment(_t(a), _t(c), kind="mse").item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got > 1e-3


def test_global_alignment_kl_matches_numpy():
    rng = np.random.default_rng(11)
    sc, sl = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    tau = 0.5
    cn = np.stack([_norm_eps_row(r) for r in _np(sc)])
    ln = np.stack([_norm_eps_row(r) for r in _np(sl)])
    expected = 0.0
    for j in range(4):
        pc = np.array([math.exp(float(cn[j] @ cn[k]) / tau) for k in range(4)])
        pl = np.array([math.exp(float(ln[j] @ ln[k]) / tau) for k in range(4)])
        pc, pl = pc / pc.sum(), pl / pl.sum()
        expected += sum(pl[k] * (math.log(pl[k]) - math.log(pc[k])) for k in range(4))
    expected /= 4
    got = global_alignment(_t(sc), _t(sl), kind="kl", temperature=tau).item()
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert global_alignment(_t(sc), _t(sc), kind="kl").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        global_alignment(_t(sc), _t(sl), kind="cosine")


def _local_np(sh_c, sh_l, assign, k, tau) -> float:
    cn = [_norm_eps_row(r) for r in _np(sh_c)]
    ln = [_norm_eps_row(r) for r in _np(sh_l)]
    present = [c for c in range(k) if any(a == c for a in assign)]
    cen_c, cen_l = [], []
    for c in present:
        sc = sum(cn[n] for n in range(len(assign)) if assign[n] == c)
        sl = sum(ln[n] for n in range(len(assign)) if assign[n] == c)
        cen_c.append(_norm_eps_row(sc))
        cen_l.append(_norm_eps_row(sl))
    p = len(present)

    def direction(a, b):
        tot = 0.0
        for i in range(p):
            logits = [float(a[i] @ b[j]) / tau for j in range(p)]
            tot += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
        return tot / p

    return 0.5 * (direction(cen_c, cen_l) + direction(cen_l, cen_c))


def test_local_alignment_matches_numpy_and_skips_absent_clusters():
    rng = np.random.default_rng(12)
    sh_c, sh_l = rng.normal(size=(9, 4)), rng.normal(size=(9, 4))
    assign = np.array([0, 3, 3, 5, 0, 5, 3, 0, 5])  # clusters 1, 2, 4, 6, 7 absent (K = 8)
    tau = 0.2
    got = local_alignment(_t(sh_c), _t(sh_l), torch.tensor(assign), 8, tau).item()
    assert got == pytest.approx(_local_np(sh_c, sh_l, assign, 8, tau), rel=1e-5)
    # Relabelling to compact ids 0..2 (same order) gives the same value.
    compact = np.array([{0: 0, 3: 1, 5: 2}[a] for a in assign])
    got2 = local_alignment(_t(sh_c), _t(sh_l), torch.tensor(compact), 3, tau).item()
    assert got2 == pytest.approx(got, rel=1e-6)


def test_local_alignment_symmetric_under_view_swap():
    rng = np.random.default_rng(13)
    sh_c, sh_l = rng.normal(size=(10, 5)), rng.normal(size=(10, 5))
    assign = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 1, 1])
    one = local_alignment(_t(sh_c), _t(sh_l), assign, 4, 0.3)
    two = local_alignment(_t(sh_l), _t(sh_c), assign, 4, 0.3)
    torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)
    one_dir_c = _local_np(sh_c, sh_l, assign.numpy(), 4, 0.3)
    assert one.item() == pytest.approx(one_dir_c, rel=1e-5)


def test_local_alignment_is_zero_with_no_cluster_present():
    """``matched`` views whose rows share no cluster (one row: CF cluster 2, LLM cluster 5) and
    an empty set give L = 0 with a finite gradient, not the mean of an empty tensor (NaN)."""
    rng = np.random.default_rng(15)
    for n, a_c, a_l in ((1, [2], [5]), (0, [], [])):
        sh_c = _t(rng.normal(size=(n, 4))).requires_grad_()
        sh_l = _t(rng.normal(size=(n, 4))).requires_grad_()
        loss = local_alignment(
            sh_c,
            sh_l,
            torch.tensor(a_c, dtype=torch.int64),
            8,
            0.2,
            torch.tensor(a_l, dtype=torch.int64),
        )
        assert loss.item() == 0.0
        loss.backward()
        assert torch.all(sh_c.grad == 0) and torch.all(sh_l.grad == 0)


def test_spherical_kmeans_recovers_blobs():
    rng = np.random.default_rng(14)
    dirs = np.eye(3) * 1.0
    labels = np.repeat(np.arange(3), 20)
    x = dirs[labels] + 0.05 * rng.normal(size=(60, 3))
    x *= rng.uniform(0.5, 3.0, size=(60, 1))  # norms do not matter
    perm = rng.permutation(60)
    x, labels = x[perm], labels[perm]
    # Deliberately poor start: two centres from blob 0, one from blob 1.
    b0 = np.flatnonzero(labels == 0)
    b1 = np.flatnonzero(labels == 1)
    init = torch.tensor([b0[0], b0[1], b1[0]])
    assign, centres = spherical_kmeans(_t(x), 3, 10, init)
    assert assign.dtype == torch.int64 and assign.shape == (60,)
    torch.testing.assert_close(centres.norm(dim=1), torch.ones(3), rtol=1e-5, atol=1e-5)
    # A poor start can merge blobs; a start with one seed per blob must recover them exactly.
    init_good = torch.tensor([b0[0], b1[0], np.flatnonzero(labels == 2)[0]])
    assign, centres = spherical_kmeans(_t(x), 3, 10, init_good)
    np.testing.assert_array_equal(assign.numpy(), labels)
    np.testing.assert_allclose(centres.numpy(), np.eye(3), atol=0.05)


def test_spherical_kmeans_ties_and_empty_clusters():
    # Point 0 is equidistant from both centres → goes to the lowest k.
    x = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assign, _ = spherical_kmeans(_t(x), 2, 0, torch.tensor([1, 2]))
    np.testing.assert_array_equal(assign.numpy(), [0, 0, 1])
    # Duplicate initial centres: cluster 1 never wins (ties → 0), stays empty, keeps its centre.
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assign, centres = spherical_kmeans(_t(x), 2, 1, torch.tensor([0, 0]))
    np.testing.assert_allclose(centres[1].numpy(), [1.0, 0.0], atol=1e-6)
    xs = np.stack([_norm_eps_row(r) for r in _np(x)])
    mean = _norm_eps_row(xs.sum(0))
    np.testing.assert_allclose(centres[0].numpy(), mean, rtol=1e-5)
    # The returned assignment uses the final centres: row 0 now sits exactly on centre 1.
    expected = np.argmax(xs @ np.stack([mean, [1.0, 0.0]]).T, axis=1)
    np.testing.assert_array_equal(assign.numpy(), expected)
    assert assign[0].item() == 1
