"""The reference models' parameters under RLMRec's ``state_dict`` names (see
:mod:`darec_jax.crosscheck.interop` for the table).

Our reference modules keep a few attribute names of their own (``masker_token``,
``layer_weight_{l}``, the ``AlignMLP`` wrapper's inner ``mlp``); :func:`rlmrec_state_dict` and
:func:`load_rlmrec_state_dict` translate them, so a checkpoint saved in RLMRec's format loads into
both the reference and (through :func:`darec_jax.crosscheck.interop.from_state_dict`) our JAX
models.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import nn

__all__ = ["load_rlmrec_state_dict", "rlmrec_name", "rlmrec_state_dict"]

_HEAD = re.compile(
    r"^(mlp|cf_specific|cf_shared|llm_specific|llm_shared)\.mlp\.(\d+)\.(weight|bias)$"
)
_GCCF = re.compile(r"^layer_weight_(\d+)$")


def rlmrec_name(name: str) -> str:
    """Our reference parameter name → RLMRec's."""
    if name == "masker_token":
        return "masker.mask_token"
    if m := _GCCF.match(name):
        return f"gcnLayers.{int(m.group(1)) - 1}.W"
    if m := _HEAD.match(name):
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}"
    return name


def rlmrec_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters (not its buffers) under RLMRec's names, detached copies."""
    return {rlmrec_name(n): p.detach().clone() for n, p in model.named_parameters()}


@torch.no_grad()
def load_rlmrec_state_dict(model: nn.Module, state_dict: dict) -> None:
    """Copy an RLMRec-format state_dict into the model's parameters (exact; every parameter must
    be given, with its shape; buffers such as the LLM embeddings are left alone)."""
    params = dict(model.named_parameters())
    names = {rlmrec_name(n): n for n in params}
    given = {k for k in state_dict if k not in ("usr_emb", "itm_emb")}
    missing, unexpected = sorted(set(names) - given), sorted(given - set(names))
    if missing or unexpected:
        raise ValueError(f"state_dict mismatch: missing {missing}, unexpected {unexpected}")
    for key, ours in names.items():
        value = state_dict[key]
        value = value.detach() if hasattr(value, "detach") else torch.from_numpy(np.asarray(value))
        if tuple(value.shape) != tuple(params[ours].shape):
            raise ValueError(f"{key}: shape {tuple(value.shape)} != {tuple(params[ours].shape)}")
        params[ours].copy_(value.to(params[ours].dtype))
