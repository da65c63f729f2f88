"""Backbone models (Flax NNX modules holding parameters only) and the registry that builds the
one a config names."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from darec_jax.errors import ConfigError
from darec_jax.graph import Graph
from darec_jax.models.autocf import AutoCF
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.dccf import DCCF, dccf_graph_weights
from darec_jax.models.gccf import GCCF, self_loop_arrays
from darec_jax.models.lightgcn import LightGCN
from darec_jax.models.sgl import SGL
from darec_jax.models.simgcl import SimGCL
from darec_jax.nn import xavier_uniform

__all__ = [
    "AutoCF",
    "Backbone",
    "DCCF",
    "GCCF",
    "LightGCN",
    "SGL",
    "SimGCL",
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
    if m.backbone == "dccf":
        return DCCF(
            n_users,
            n_items,
            m.embedding_size,
            m.layer_num,
            rngs=rngs,
            intent_num=m.intent_num,
            cl_weight=m.cl_weight,
            cl_temperature=m.cl_temperature,
        )
    if m.backbone == "gccf":
        # Self-loops only for the bare model; the variants (and DaRec) use Â (Q1).
        self_loops = cfg.method == "none"
        return GCCF(
            n_users, n_items, m.embedding_size, m.layer_num, rngs=rngs, self_loops=self_loops
        )
    if m.backbone == "sgl":
        return SGL(
            n_users,
            n_items,
            m.embedding_size,
            m.layer_num,
            rngs=rngs,
            keep_rate=m.keep_rate,
            cl_weight=m.cl_weight,
            cl_temperature=m.cl_temperature,
        )
    if m.backbone == "simgcl":
        return SimGCL(
            n_users,
            n_items,
            m.embedding_size,
            m.layer_num,
            rngs=rngs,
            cl_weight=m.cl_weight,
            cl_temperature=m.cl_temperature,
            eps=m.eps,
        )
    if m.backbone == "autocf":
        return AutoCF(
            n_users,
            n_items,
            m.embedding_size,
            m.layer_num,
            rngs=rngs,
            gt_layer=m.gt_layer,
            head_num=m.head_num,
            seed_num=m.seed_num,
            mask_depth=m.mask_depth,
            keep_rate=m.keep_rate,
            fix_steps=m.fix_steps,
            ssl_reg=m.ssl_reg,
        )
    raise ConfigError(
        f"unknown backbone {m.backbone!r}; valid: gccf, lightgcn, sgl, simgcl, dccf, autocf"
    )


def static_arrays(cfg, data, graph: Graph) -> dict:
    """Device arrays the backbone ``cfg.model.backbone`` needs besides the interaction graph
    (``TrainArrays.extra``): built once per run from the training data and the interaction
    graph (a :class:`~darec_jax.graph.Graph`)."""
    if cfg.model.backbone == "dccf":
        return {"dccf_weights": jnp.asarray(dccf_graph_weights(graph))}
    if cfg.model.backbone == "gccf" and cfg.method == "none":
        return self_loop_arrays(graph)  # Â_sl of the bare GCCF (Q1)
    return {}
