"""Loss functions."""

from darec_jax.losses.core import bpr_loss, l2_reg, torch_softplus

__all__ = ["bpr_loss", "l2_reg", "torch_softplus"]
