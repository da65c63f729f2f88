"""The reference model of any (backbone, method) from a :class:`darec_jax.config.Config`.

:func:`build_reference` maps the config's hyper-parameters onto the reference classes'
arguments, so that a benchmark or a comparison builds the PyTorch side of exactly the run the JAX
side trains. The adjacency is the one the variant uses: GCCF's bare model propagates over the graph
with self-loops, every other case over Â without them (BACKBONES.md Q1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from darec_jax.reference.adjacency import normalized_adjacency
from darec_jax.reference.autocf import AutoCFDaRecRef, AutoCFGeneRef, AutoCFPlusRef, AutoCFRef
from darec_jax.reference.darec import DaRecMixin
from darec_jax.reference.dccf import DCCFGeneRef, DCCFPlusRef, DCCFRef
from darec_jax.reference.gccf import GCCFGeneRef, GCCFPlusRef, GCCFRef
from darec_jax.reference.lightgcn import LightGCNRef
from darec_jax.reference.methods import LightGCNDaRecRef, LightGCNGeneRef, LightGCNPlusRef
from darec_jax.reference.sgl import SGLGeneRef, SGLPlusRef, SGLRef
from darec_jax.reference.simgcl import SimGCLGeneRef, SimGCLPlusRef, SimGCLRef

__all__ = ["build_reference", "darec_options"]

# backbone -> (bare, RLMRec-Con, RLMRec-Gen) classes.
_CLASSES = {
    "lightgcn": (LightGCNRef, LightGCNPlusRef, LightGCNGeneRef),
    "gccf": (GCCFRef, GCCFPlusRef, GCCFGeneRef),
    "sgl": (SGLRef, SGLPlusRef, SGLGeneRef),
    "simgcl": (SimGCLRef, SimGCLPlusRef, SimGCLGeneRef),
    "dccf": (DCCFRef, DCCFPlusRef, DCCFGeneRef),
    "autocf": (AutoCFRef, AutoCFPlusRef, AutoCFGeneRef),
}


def _backbone_options(cfg) -> dict[str, Any]:
    """The backbone's keyword arguments (its reference constructor's names)."""
    m = cfg.model
    name = m.backbone
    if name == "autocf":
        return dict(
            embedding_size=m.embedding_size,
            gcn_layer=m.layer_num,
            gt_layer=m.gt_layer,
            head_num=m.head_num,
            seed_num=m.seed_num,
            mask_depth=m.mask_depth,
            keep_rate=m.keep_rate,
            fix_steps=m.fix_steps,
            reg_weight=m.reg_weight,
            ssl_reg=m.ssl_reg,
        )
    out: dict[str, Any] = dict(
        embedding_size=m.embedding_size, layer_num=m.layer_num, reg_weight=m.reg_weight
    )
    if name in ("lightgcn", "sgl"):
        out["keep_rate"] = m.keep_rate
    if name in ("sgl", "simgcl", "dccf"):
        out.update(cl_weight=m.cl_weight, cl_temperature=m.cl_temperature)
    if name == "simgcl":
        out["eps"] = m.eps
    if name == "dccf":
        out["intent_num"] = m.intent_num
    return out


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
    if backbone not in _CLASSES:
        raise ValueError(f"unknown backbone {backbone!r}; valid: {', '.join(_CLASSES)}")
    if method not in ("none", "rlmrec-con", "rlmrec-gen", "darec"):
        raise ValueError(f"unknown method {method!r}; valid: none, rlmrec-con, rlmrec-gen, darec")
    self_loops = backbone == "gccf" and method == "none"
    adj = normalized_adjacency(
        data.n_users, data.n_items, data.train.users, data.train.items, self_loops=self_loops
    )
    options = _backbone_options(cfg)
    if backbone == "gccf" and method == "darec":
        options["self_loops"] = False
    bare, con, gen = _CLASSES[backbone]
    sizes = (data.n_users, data.n_items, adj)
    if method == "none":
        return bare(*sizes, **options), adj
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
    if backbone == "lightgcn":
        return LightGCNDaRecRef(*sizes, *semantic, **options, **darec_options(cfg)), adj
    if backbone == "autocf":
        return AutoCFDaRecRef(*sizes, *semantic, darec=darec_options(cfg), **options), adj
    cls = type(f"{bare.__name__}DaRec", (DaRecMixin, bare), {})
    model = cls(*sizes, **options)
    model._init_darec(*semantic, **darec_options(cfg))
    return model, adj
