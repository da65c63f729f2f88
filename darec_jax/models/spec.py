"""What a backbone declares about itself, in its own file, for the registries to read.

Every ``models/<name>.py`` ends with one :class:`BackboneSpec` named ``SPEC``. The registry
(:mod:`darec_jax.models`) finds the specs and everything else reads them:

* the config gets the section ``model.<name>`` from :attr:`BackboneSpec.config` (a frozen
  dataclass whose field names are the module's keyword arguments), and the reference
  hyper-parameters from :attr:`BackboneSpec.presets`;
* :func:`darec_jax.models.make_backbone` builds :attr:`BackboneSpec.module` from the common
  ``model.*`` fields and the section;
* :attr:`BackboneSpec.static_arrays` are built once per run beside the graph;
* :mod:`darec_jax.crosscheck.interop` maps parameters to the PyTorch reference's ``state_dict``
names with
  :attr:`BackboneSpec.state_dict`;
* the equivalence harness injects the draws :attr:`BackboneSpec.draws` names into both sides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

#: The datasets a preset names values for, in the order of :func:`per_dataset`'s triples.
PRESET_DATASETS = ("amazon", "yelp", "steam")

#: Draw kinds the harness knows: "edge" = one U[0, 1) per directed edge of Â (the reference
#: stores its edges in another order; the harness aligns them), "dense" = U[0, 1) of our
#: draw's shape, the same layout on both sides, "runner" = drawn by the backbone's reference
#: step runner (its ranges depend on the reference's state), which returns them in the order
#: declared.
DRAW_KINDS = ("edge", "dense", "runner")

StateDictPairs = list[tuple[str, str, int | None]]


def per_dataset(columns: Mapping[str, tuple]) -> dict[str, dict[str, Any]]:
    """``{dataset: {dotted key: value}}`` from ``{dotted key: (amazon, yelp, steam)}``."""
    return {
        name: {key: values[i] for key, values in columns.items()}
        for i, name in enumerate(PRESET_DATASETS)
    }


def rate_problems(key: str, value: float) -> list[str]:
    """``[message]`` when a probability option ``key`` is outside (0, 1], else ``[]`` (for a
    section's ``problems``)."""
    return [] if 0.0 < value <= 1.0 else [f"{key} must be in (0, 1]"]


def embedding_names(params: Mapping[str, Any], suffix: str = "") -> StateDictPairs:
    """The ID tables every backbone has: ``user_emb`` / ``item_emb`` as the reference's
    ``user_embeds`` / ``item_embeds`` (+ ``suffix``, e.g. ``.weight`` for ``nn.Embedding``)."""
    del params
    return [("user_emb", "user_embeds" + suffix, None), ("item_emb", "item_embeds" + suffix, None)]


def _never(method: str) -> bool:
    del method
    return False


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """A backbone without options of its own."""


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One backbone's declarations.

    Attributes:
        name: the ``--backbone`` name and the config section ``model.<name>``.
        order: its place in listings (LightGCN, the default, first).
        module: the Flax NNX module; built as ``module(n_users, n_items, embedding_size,
            layer_num, rngs=..., **section fields, **build_options(method))``.
        config: the section's frozen dataclass (defaults = the reference's yelp values).
        presets: ``{method: {dataset: {dotted key: value}}}``, the reference hyper-parameters
            on top of the defaults (:func:`per_dataset`). Every method starts from the ``none``
            preset and applies its own on top (DaRec has none: it takes the bare backbone's
            values); the synthetic worlds take yelp's.
        state_dict: backbone parameter tree → ``[(our name, reference name, index along a
            stacked leading axis or None)]``.
        draws: ``{draw name: kind}`` of the random step inputs the harness injects (the names
            are our ``Backbone.draw`` keys and the reference's keyword arguments); draws that
            are not plain uniforms are of kind ``runner``, made by the reference's step runner.
        static_arrays: ``(cfg, graph) -> {name: array}`` built once per run
            (``TrainArrays.extra``), or None.
        build_options: ``method -> {keyword: value}`` module arguments that depend on the
            method (GCCF's self-loops), or None.
        self_loops: ``method -> bool``: whether the propagation graph has self-loops (the
            reference builds its adjacency with them).
        mask_token: the reference name of RLMRec-Gen's mask token on this backbone.
        rlmrec_con_negative: whether RLMRec-Con adds its negative-item term on this backbone.
    """

    name: str
    order: int
    module: type[nnx.Module]
    config: type = NoOptions
    presets: Mapping[str, Mapping[str, Mapping[str, Any]]] = dataclasses.field(default_factory=dict)
    state_dict: Callable[[Mapping[str, Any]], StateDictPairs] = embedding_names
    draws: Mapping[str, str] = dataclasses.field(default_factory=dict)
    static_arrays: Callable[[Any, Any], dict] | None = None
    build_options: Callable[[str], dict] | None = None
    self_loops: Callable[[str], bool] = _never
    mask_token: str = "masker.mask_token"
    rlmrec_con_negative: bool = True

    def __post_init__(self):
        if not dataclasses.is_dataclass(self.config):
            raise TypeError(f"{self.name}: config must be a dataclass")
        for name, kind in self.draws.items():
            if kind not in DRAW_KINDS:
                raise ValueError(f"{self.name}: draw {name!r} has unknown kind {kind!r}")

    def preset(self, dataset: str, method: str) -> dict[str, Any]:
        """The dotted overrides of (dataset, method); synthetic worlds take yelp's."""
        dataset = "yelp" if dataset not in PRESET_DATASETS else dataset
        out = dict(self.presets.get("none", {}).get(dataset, {}))
        if method != "none":
            out.update(self.presets.get(method, {}).get(dataset, {}))
        return out

    def build(self, cfg, n_users: int, n_items: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """The module of ``cfg`` (its common ``model.*`` fields and its section)."""
        m = cfg.model
        options = dataclasses.asdict(getattr(m, self.name))
        if self.build_options is not None:
            options.update(self.build_options(cfg.method))
        return self.module(n_users, n_items, m.embedding_size, m.layer_num, rngs=rngs, **options)
