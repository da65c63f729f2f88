"""Backbone models (Flax NNX modules holding parameters only)."""

from darec_jax.models.lightgcn import LightGCN, xavier_uniform

__all__ = ["LightGCN", "xavier_uniform"]
