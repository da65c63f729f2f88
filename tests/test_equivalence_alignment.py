"""Alignment loss primitives and DaRec's terms: the JAX code equals the PyTorch reference.

Same inputs (and injected seeds, cluster assignments and k-means starting points) on both sides;
values and gradients agree to a relative error of 1e-5 (float32, highest matmul precision).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax.losses import alignment as jl
from darec_jax.losses import darec as jd
from tests.equivalence import assert_rel_close

torch = pytest.importorskip("torch")
tl = pytest.importorskip("darec_jax.reference.losses")


@pytest.fixture(autouse=True)
def _torch_precision():
    torch.set_float32_matmul_precision("highest")


def _pair(*shape, seed=0):
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    return jnp.asarray(x), torch.tensor(x, requires_grad=True)


def _check(jax_fn, torch_fn, *shapes, name):
    """Value and gradient of each array argument agree."""
    pairs = [_pair(*s, seed=i) for i, s in enumerate(shapes)]
    jargs = [p[0] for p in pairs]
    targs = [p[1] for p in pairs]
    value, grads = jax.value_and_grad(jax_fn, argnums=tuple(range(len(jargs))))(*jargs)
    tvalue = torch_fn(*targs)
    tvalue.backward()
    assert_rel_close(value, tvalue.item(), f"{name} value")
    for k, (g, t) in enumerate(zip(grads, targs, strict=True)):
        assert_rel_close(g, t.grad.numpy(), f"{name} grad {k}")


def test_infonce_forms():
    _check(
        lambda x, y, z: jl.cal_infonce(x, y, z, 0.2),
        lambda x, y, z: tl.cal_infonce(x, y, z, 0.2),
        (6, 4),
        (6, 4),
        (9, 4),
        name="infonce",
    )
    _check(
        lambda x, y: jl.ssl_con_loss(x, y, 0.5),
        lambda x, y: tl.ssl_con_loss(x, y, 0.5),
        (7, 5),
        (7, 5),
        name="ssl_con",
    )


def test_rlmrec_con_kd():
    anc, pos, neg = np.array([0, 3, 3, 5]), np.array([1, 1, 4, 2]), np.array([2, 0, 3, 3])
    for with_neg in (True, False):
        _check(
            lambda fu, fi, pu, pi, with_neg=with_neg: jl.rlmrec_con_kd(
                fu, fi, pu, pi, anc, pos, neg, 0.01, 0.2, with_neg
            ),
            lambda fu, fi, pu, pi, with_neg=with_neg: tl.rlmrec_con_kd(
                fu,
                fi,
                pu,
                pi,
                torch.from_numpy(anc),
                torch.from_numpy(pos),
                torch.from_numpy(neg),
                0.01,
                0.2,
                with_negative_term=with_neg,
            ),
            (6, 4),
            (5, 4),
            (6, 4),
            (5, 4),
            name=f"kd neg={with_neg}",
        )


def test_mlp_node_mask_and_recon():
    torch.manual_seed(0)
    mlp = tl.AlignMLP(4, 10, 12)
    params = {
        k: jnp.asarray(v.detach().numpy())
        for k, v in zip(("w1", "b1", "w2", "b2"), mlp.parameters(), strict=True)
    }
    seeds = np.array([0, 4, 7, 2])
    token = np.full((1, 4), 0.3, np.float32)

    def jax_fn(ego, sem):
        masked = jl.node_mask(ego, seeds, jnp.asarray(token))
        return jl.rlmrec_gen_recon(jnp.tanh(masked), sem, seeds, params, 0.1, 0.5)

    def torch_fn(ego, sem):
        masked = tl.node_mask(ego, torch.from_numpy(seeds), torch.from_numpy(token))
        return tl.rlmrec_gen_recon(torch.tanh(masked), sem, torch.from_numpy(seeds), mlp, 0.1, 0.5)

    _check(jax_fn, torch_fn, (9, 4), (9, 12), name="mask+recon")


def test_darec_terms():
    _check(jd.orthogonality, tl.orthogonality, (8, 5), (8, 5), name="orthogonality")
    _check(jd.uniformity, tl.uniformity, (11, 5), name="uniformity")
    for kind in ("mse", "kl"):
        _check(
            lambda a, b, kind=kind: jd.global_alignment(a, b, kind, 0.5),
            lambda a, b, kind=kind: tl.global_alignment(a, b, kind, 0.5),
            (10, 6),
            (10, 6),
            name=f"global {kind}",
        )
    assign = np.array([0, 0, 3, 3, 3, 6, 6, 0, 3, 6])
    _check(
        lambda a, b: jd.local_alignment(a, b, jnp.asarray(assign), 8, 0.2),
        lambda a, b: tl.local_alignment(a, b, torch.from_numpy(assign), 8, 0.2),
        (10, 6),
        (10, 6),
        name="local",
    )


def test_spherical_kmeans_same_assignment_from_same_start():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    init = np.array([3, 17, 42, 8])
    ja, jc = jd.spherical_kmeans_from(jnp.asarray(x), jnp.asarray(init), 10)
    ta, tc = tl.spherical_kmeans(torch.from_numpy(x), 4, 10, torch.from_numpy(init))
    np.testing.assert_array_equal(np.asarray(ja), ta.numpy())
    assert_rel_close(jc, tc.numpy(), "k-means centres")
