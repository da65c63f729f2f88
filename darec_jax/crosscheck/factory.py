"""The reference model of any (backbone, method) from a :class:`darec_jax.config.Config`.

:func:`build_reference` maps the config's hyper-parameters onto the reference classes'
arguments, so that a benchmark or a comparison builds the PyTorch side of exactly the run the JAX
side trains. The classes come from the backbone's reference file (``reference/<name>.py``,
``REFERENCE``); the adjacency has self-loops where the backbone's declaration says so
(``SPEC.self_loops``: GCCF's bare model, docs/backbones.md Q1).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from darec_jax.models import spec as backbone_spec
from darec_jax.reference.adjacency import normalized_adjacency
from darec_jax.reference.darec import DaRecMixin
from darec_jax.reference.spec import reference_spec

__all__ = ["build_reference", "darec_options"]


def _backbone_options(cfg, renamed) -> dict[str, Any]:
    """The backbone's keyword arguments: the common sizes and weights, then its section
    ``cfg.model.<backbone>`` (the same names as the reference constructor's, except
    ``renamed``)."""
    m = cfg.model
    out: dict[str, Any] = dict(
        embedding_size=m.embedding_size, layer_num=m.layer_num, reg_weight=m.reg_weight
    )
    out.update(dataclasses.asdict(getattr(m, m.backbone)))
    return {renamed.get(k, k): v for k, v in out.items()}


def darec_options(cfg) -> dict[str, Any]:
    """:meth:`DaRecMixin._init_darec`'s keyword arguments from ``cfg.darec``."""
    d = cfg.darec
    return dict(
        head_dim=d.head_dim or None,
        lambda_or=d.lambda_or,
        lambda_un=d.lambda_un,
        lambda_gl=d.lambda_gl,
        lambda_lo=d.lambda_lo,
        global_kind=d.global_loss,
        global_temperature=d.global_temperature,
        local_temperature=d.local_temperature,
        num_clusters=d.num_clusters,
        local_assign=d.local_assign,
        score_on=d.score_on,
    )


def build_reference(cfg, data) -> tuple[nn.Module, torch.Tensor]:
    """(model, Â): the reference model of ``cfg``'s backbone and method with its hyper-parameters.

    Args:
        cfg: a :class:`darec_jax.config.Config`.
        data: a :class:`darec_jax.data.Dataset` (training interactions; LLM embeddings for the
            alignment methods).

    Returns:
        The model (its parameters freshly initialised by the reference; copy ours in to compare)
        and the normalised adjacency it propagates over.
    """
    backbone, method = cfg.model.backbone, cfg.method
    if method not in ("none", "rlmrec-con", "rlmrec-gen", "darec"):
        raise ValueError(f"unknown method {method!r}; valid: none, rlmrec-con, rlmrec-gen, darec")
    declared, ref = backbone_spec(backbone), reference_spec(backbone)
    self_loops = declared.self_loops(method)
    adj = normalized_adjacency(
        data.n_users, data.n_items, data.train.users, data.train.items, self_loops=self_loops
    )
    options = _backbone_options(cfg, ref.renamed)
    # Method-dependent options of the bare class (GCCF's self_loops); the variant classes set
    # their own.
    on_bare = {} if declared.build_options is None else declared.build_options(method)
    bare, con, gen = ref.classes()
    sizes = (data.n_users, data.n_items, adj)
    if method == "none":
        return bare(*sizes, **options, **on_bare), adj
    if data.user_emb is None or data.item_emb is None:
        raise ValueError(f"--method {method} needs the dataset's LLM embeddings")
    semantic = (data.user_emb, data.item_emb)
    r = cfg.rlmrec
    if method == "rlmrec-con":
        options.update(kd_weight=r.kd_weight, kd_temperature=r.kd_temperature)
        return con(*sizes, *semantic, **options), adj
    if method == "rlmrec-gen":
        options.update(
            mask_ratio=r.mask_ratio,
            recon_weight=r.recon_weight,
            recon_temperature=r.recon_temperature,
        )
        return gen(*sizes, *semantic, **options), adj
    if ref.darec is not None:
        return ref.darec(sizes, semantic, options, darec_options(cfg)), adj
    cls = type(f"{bare.__name__}DaRec", (DaRecMixin, bare), {"_generic_darec": True})
    model = cls(*sizes, **options, **on_bare)
    model._init_darec(*semantic, **darec_options(cfg))
    return model, adj
