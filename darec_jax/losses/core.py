"""Loss primitives in the reference's conventions (docs/backbones.md §1.7, Q12, Q25)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def torch_softplus(x: jax.Array, threshold: float = 20.0) -> jax.Array:
    """softplus(x) = log(1 + e^x), and exactly x above ``threshold`` (torch's default rule)."""
    safe = jnp.minimum(x, threshold)
    return jnp.where(x > threshold, x, jnp.log1p(jnp.exp(safe)))


def bpr_loss(
    user: jax.Array, pos: jax.Array, neg: jax.Array, valid: jax.Array | None = None
) -> jax.Array:
    """Sum-then-divide BPR: (1/B) Σ_b softplus(a_b·n_b − a_b·p_b).

    Args:
      user, pos, neg: [B, d] embeddings of the anchors, positives and negatives.
      valid: optional [B] 0/1 mask of real rows in a padded batch; B is then Σ valid, so a padded
        final batch is divided by its real size as the reference's partial batch is.
    """
    # Trace-time checks (free under jit): a [B, 1] mask or a [d] row would broadcast silently.
    chex.assert_rank([user, pos, neg], 2)
    chex.assert_equal_shape([user, pos, neg])
    if valid is not None:
        chex.assert_shape(valid, (user.shape[0],))
    diff = jnp.sum(user * neg, axis=-1) - jnp.sum(user * pos, axis=-1)
    per_row = torch_softplus(diff)
    if valid is None:
        return jnp.sum(per_row) / per_row.shape[0]
    valid = valid.astype(per_row.dtype)
    return jnp.sum(per_row * valid) / jnp.sum(valid)


def l2_reg(params) -> jax.Array:
    """Σ over every parameter array of its squared L2 norm (not divided by B)."""
    return sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(params))
