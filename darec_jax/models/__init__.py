"""Backbone models (Flax NNX modules holding parameters only) and the registry of their
declarations.

Every module of this package that defines a ``SPEC`` (a :class:`~darec_jax.models.spec.
BackboneSpec`) is a backbone; :data:`SPECS` holds them in their declared order. Adding a backbone
is adding one file here (the module and its ``SPEC``); the config section, presets, builder,
static arrays and state_dict names all come from it.
"""

from __future__ import annotations

import importlib
import pkgutil

from flax import nnx

from darec_jax.errors import ConfigError
from darec_jax.models.autocf import AutoCF
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.dccf import DCCF
from darec_jax.models.gccf import GCCF
from darec_jax.models.lightgcn import LightGCN
from darec_jax.models.sgl import SGL
from darec_jax.models.simgcl import SimGCL
from darec_jax.models.spec import BackboneSpec

__all__ = [
    "SPECS",
    "AutoCF",
    "Backbone",
    "BackboneSpec",
    "DCCF",
    "GCCF",
    "LightGCN",
    "SGL",
    "SimGCL",
    "concat_ego",
    "make_backbone",
    "spec",
    "static_arrays",
]


def _discover() -> dict[str, BackboneSpec]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        declared = getattr(module, "SPEC", None)
        if isinstance(declared, BackboneSpec):
            found.append(declared)
    found.sort(key=lambda s: (s.order, s.name))
    names = [s.name for s in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two backbones declare the same name: {names}")
    return {s.name: s for s in found}


#: name -> declaration, in listing order.
SPECS: dict[str, BackboneSpec] = _discover()


def spec(name: str) -> BackboneSpec:
    """The declaration of backbone ``name``."""
    if name not in SPECS:
        raise ConfigError(f"unknown backbone {name!r}; valid: {', '.join(SPECS)}")
    return SPECS[name]


def make_backbone(cfg, n_users: int, n_items: int, *, rngs: nnx.Rngs) -> Backbone:
    """The backbone ``cfg.model.backbone`` with its hyper-parameters from ``cfg.model`` and its
    section ``cfg.model.<backbone>``."""
    return spec(cfg.model.backbone).build(cfg, n_users, n_items, rngs=rngs)


def static_arrays(cfg, graph) -> dict:
    """Device arrays the backbone ``cfg.model.backbone`` needs besides the interaction graph
    (``TrainArrays.extra``): built once per run from the interaction graph (a
    :class:`~darec_jax.graph.Graph`)."""
    build = spec(cfg.model.backbone).static_arrays
    return {} if build is None else build(cfg, graph)
