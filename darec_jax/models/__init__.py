"""Backbone models (Flax NNX modules holding parameters only) and the registry that builds the
one a config names."""

from __future__ import annotations

from flax import nnx

from darec_jax.errors import ConfigError
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.lightgcn import LightGCN, xavier_uniform

__all__ = [
    "Backbone",
    "LightGCN",
    "concat_ego",
    "make_backbone",
    "static_arrays",
    "xavier_uniform",
]


def make_backbone(cfg, n_users: int, n_items: int, *, rngs: nnx.Rngs) -> Backbone:
    """The backbone ``cfg.model.backbone`` with its hyper-parameters from ``cfg.model``."""
    m = cfg.model
    if m.backbone == "lightgcn":
        return LightGCN(
            n_users, n_items, m.embedding_size, m.layer_num, rngs=rngs, keep_rate=m.keep_rate
        )
    raise ConfigError(
        f"backbone {m.backbone!r} is not implemented yet in this version; implemented: lightgcn"
    )


def static_arrays(cfg, data, graph) -> dict:
    """Device arrays the backbone ``cfg.model.backbone`` needs besides the interaction graph
    (``TrainArrays.extra``): built once per run from the training data and the jraph graph."""
    return {}
