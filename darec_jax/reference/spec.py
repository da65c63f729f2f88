"""What a backbone's PyTorch reference declares about itself, in its own file.

Every ``reference/<name>.py`` defines one :class:`ReferenceSpec` named ``REFERENCE``;
:func:`reference_spec` finds it by the backbone's name. The comparison package
(:mod:`darec_jax.crosscheck`: its factory builds models from it, its harness drives a step
through its :class:`StepRunner`) is the only code that reads it beside the reference's own.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ReferenceSpec", "StepRunner", "reference_spec"]


class StepRunner:
    """How the harness takes one reference step of a backbone: its draws, its loss call and
    what follows the optimiser step. This default serves every backbone whose draws are plain
    uniforms (``SPEC.draws`` of its model file) and whose loss is ``cal_loss`` (DaRec on a
    backbone without its own DaRec class: ``darec_loss``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, method: str):
        self.model, self.optimizer, self.method = model, optimizer, method

    def draws(
        self,
        rng: np.random.Generator,
        declared: Mapping[str, str],
        shapes: Mapping[str, tuple[int, ...]],
        edge_uniforms: Callable[[], tuple[torch.Tensor, np.ndarray]],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(our backbone draws as NumPy arrays, the reference's keyword draws): one draw per
        declared name our backbone draws this step (``shapes``: our draws' shapes), in the
        order declared."""
        ours: dict[str, Any] = {}
        theirs: dict[str, Any] = {}
        for name, kind in declared.items():
            if name not in shapes:
                continue
            if kind == "edge":
                theirs[name], ours[name] = edge_uniforms()
            else:
                value = rng.random(shapes[name], dtype=np.float32)
                theirs[name], ours[name] = torch.from_numpy(value), value
        return ours, theirs

    def loss(self, anc, pos, neg, backbone_draws: dict, method_draws: dict):
        """(total, {term: value}) of one step, gradients not yet taken."""
        if self.method == "darec" and _darec_by_mixin(self.model):
            return self.model.darec_loss(
                anc, pos, neg, backbone_draws=backbone_draws, **method_draws
            )
        return self.model.cal_loss(anc, pos, neg, **backbone_draws, **method_draws)

    def after_update(self) -> None:
        """Called after each optimiser step."""


def _darec_by_mixin(model: nn.Module) -> bool:
    """Whether DaRec was put on this backbone by the factory's generic mixin (its loss is
    ``darec_loss``), not by a DaRec class of the backbone's own (its loss is ``cal_loss``)."""
    return getattr(type(model), "_generic_darec", False)


@dataclasses.dataclass(frozen=True)
class ReferenceSpec:
    """One backbone's reference.

    Attributes:
        name: the backbone's name (``--backbone``).
        classes: ``() -> (bare, RLMRec-Con, RLMRec-Gen)`` classes (a function, so that a file
            may name classes defined in files that import it).
        darec: ``(sizes, semantic, options, darec_options) -> model`` for a backbone with a
            DaRec class of its own; None puts DaRec's mixin on the bare class.
        renamed: ``{our option name: the reference constructor's}`` where they differ.
        runner: the :class:`StepRunner` the harness drives a step with.
    """

    name: str
    classes: Callable[[], tuple[type, type, type]]
    darec: Callable[..., nn.Module] | None = None
    renamed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    runner: type[StepRunner] = StepRunner


def reference_spec(name: str) -> ReferenceSpec:
    """The ``REFERENCE`` of ``darec_jax/reference/<name>.py``."""
    try:
        module = importlib.import_module(f"darec_jax.reference.{name}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"backbone {name!r} has no reference (reference/{name}.py)") from exc
    declared = getattr(module, "REFERENCE", None)
    if not isinstance(declared, ReferenceSpec):
        raise ValueError(f"darec_jax/reference/{name}.py declares no REFERENCE")
    return declared
