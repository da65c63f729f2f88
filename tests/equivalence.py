"""Shared helpers of the JAX ↔ PyTorch-reference equivalence tests."""

from __future__ import annotations

import numpy as np

from darec_jax.crosscheck.harness import adam_allowance

# Relative error bound of the equivalence contract (float32, highest matmul precision).
RTOL = 1e-5

# DaRec options of the equivalence tests: every term weighted enough to matter in the gradients.
DAREC_K = 4
DARECS = {
    "darec.num_clusters": DAREC_K,
    "darec.pair_sample": 20,
    "darec.lambda_or": 0.3,
    "darec.lambda_un": 0.2,
    "darec.lambda_gl": 0.4,
    "darec.lambda_lo": 0.5,
}
HEADS = ("cf_specific", "cf_shared", "llm_specific", "llm_shared")


def assert_rel_close(actual, expected, name: str, rtol: float = RTOL) -> None:
    """max |a − e| ≤ rtol · max |e|: relative error measured against the reference's scale.

    Element-wise relative error is meaningless for entries that are (near) zero, e.g. gradient
    rows of nodes outside the batch, so the bound is relative to the largest reference magnitude.
    """
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != {e.shape}"
    scale = max(float(np.max(np.abs(e), initial=0.0)), 1e-30)
    err = float(np.max(np.abs(a - e), initial=0.0))
    assert err <= rtol * scale, f"{name}: max abs error {err:.3e} > {rtol:g} x scale {scale:.3e}"


def assert_first_adam_step_close(new, ref_new, grad, ref_grad, lr, idx, eps=1e-8):
    """Parameters after one Adam step from a fresh state agree to 1e-5, up to what the two
    gradients' own difference (checked to 1e-5 above) makes of Adam's per-element normalisation.

    The first step moves each entry by −lr·g/(|g| + eps): an entry whose gradient is near 0
    (|g| ~ 1e-7) turns a float32-rounding difference of g into a visible difference of the step
    (its derivative is lr·eps/(|g| + eps)²). That amplification, computed exactly from both
    gradients, is the only slack allowed beyond 1e-5 of the parameters' scale, and only for the
    entries whose gradient is below what the gradient check resolves (|g| ≤ 1e-5 · max|g|):
    elsewhere a parameter difference would come from a real gradient difference, and fails.
    """
    g, rg = np.asarray(grad, np.float64), np.asarray(ref_grad, np.float64)
    slack = np.abs(lr * g / (np.abs(g) + eps) - lr * rg / (np.abs(rg) + eps))
    slack = adam_allowance(slack, rg, 1e-5)
    a, e = np.asarray(new, np.float64), np.asarray(ref_new, np.float64)
    bound = 1e-5 * np.max(np.abs(e)) + slack
    worst = np.argmax(np.abs(a - e) - bound)
    assert np.all(np.abs(a - e) <= bound), (
        f"adam {idx}: error {np.abs(a - e).flat[worst]:.3e} > bound {bound.flat[worst]:.3e}"
    )


def darec_step_inputs(backbone: dict, user_assign, item_assign, user_subset, item_subset):
    """Our StepInputs of one DaRec step from injected draws: the backbone's, the pair subsets
    (per-step method draws) and the cluster assignments (the per-epoch state)."""
    import jax.numpy as jnp

    from darec_jax.train.step import StepInputs

    return StepInputs(
        backbone=backbone,
        method={
            "user_subset": jnp.asarray(user_subset, jnp.int32),
            "item_subset": jnp.asarray(item_subset, jnp.int32),
        },
        epoch_state={
            "user_assign": jnp.asarray(user_assign, jnp.int32),
            "item_assign": jnp.asarray(item_assign, jnp.int32),
        },
    )


def padded_batch(anc, pos, neg, size: int):
    """A ``Batch`` of the real triples followed by padding rows (masked out by ``valid``)."""
    import jax.numpy as jnp

    from darec_jax.train.step import Batch

    pad = size - len(anc)
    return Batch(
        users=jnp.asarray(np.r_[anc, np.zeros(pad, np.int64)], jnp.int32),
        pos=jnp.asarray(np.r_[pos, np.zeros(pad, np.int64)], jnp.int32),
        neg=jnp.asarray(np.r_[neg, np.ones(pad, np.int64)], jnp.int32),
        valid=jnp.asarray(np.r_[np.ones(len(anc)), np.zeros(pad)], jnp.float32),
    )


def injected_uniforms(perm: np.ndarray, seed: int):
    """One edge-dropout draw for both sides: (torch [E] in the reference's storage order,
    numpy [E] in our edge order), aligned by ``perm`` (reference entry k = our edge perm[k])."""
    import torch

    u_ref = torch.rand(perm.shape[0], generator=torch.Generator().manual_seed(seed))
    u_ours = np.empty(perm.shape[0], np.float32)
    u_ours[perm] = u_ref.numpy()
    return u_ref, u_ours
