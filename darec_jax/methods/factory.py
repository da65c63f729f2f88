"""Build the method a config names, its options taken from the config section of that method."""

from __future__ import annotations

import dataclasses

from darec_jax.config import Config
from darec_jax.errors import ConfigError
from darec_jax.methods.base import Method, NoMethod
from darec_jax.methods.darec import Darec
from darec_jax.methods.rlmrec import RlmrecCon, RlmrecGen
from darec_jax.models import spec

# method name -> (class, config section holding its options)
_METHODS = {
    "none": (NoMethod, None),
    "rlmrec-con": (RlmrecCon, "rlmrec"),
    "rlmrec-gen": (RlmrecGen, "rlmrec"),
    "darec": (Darec, "darec"),
}


def make_method(cfg: Config, n_users: int, n_items: int) -> Method:
    """The method ``cfg.method``; every option of its class that the section also has is
    copied from the config (e.g. ``darec.lambda_or`` -> ``Darec.lambda_or``)."""
    if cfg.method not in _METHODS:
        raise ConfigError(f"method {cfg.method!r} is not implemented yet")
    cls, section = _METHODS[cfg.method]
    options = {}
    if section is not None:
        accepted = {f.name for f in dataclasses.fields(cls)}
        values = dataclasses.asdict(getattr(cfg, section))
        options = {k: v for k, v in values.items() if k in accepted}
    if cls is RlmrecCon and not spec(cfg.model.backbone).rlmrec_con_negative:
        options["with_negative_term"] = False  # e.g. AutoCF_plus (docs/backbones.md §3.1)
    return cls(n_users, n_items, **options)
