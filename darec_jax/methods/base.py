"""The interface a method implements, and the bare backbone."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
from flax import nnx

from darec_jax.nn import Params, abstract_graphdef, param_dict

__all__ = ["Method", "NoMethod", "NoParams", "Params"]


class NoParams(nnx.Module):
    """The parameters of a method that has none."""


@dataclass(frozen=True)
class Method:
    """The bare backbone: no parameters, no randomness, no extra terms.

    Subclasses override what they need. All functions are pure and traced inside jit. A method's
    parameters are an NNX module (:meth:`make_module`); they travel as its pure dict
    (:meth:`init_params`) and the pure functions apply them through :meth:`module`.
    """

    n_users: int
    n_items: int

    #: names of the terms :meth:`terms` returns, in the order they are added to the loss.
    term_names: tuple[str, ...] = ()

    def make_module(self, cf_dim: int, llm_dim: int, ego_dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """The method's parameters as a fresh NNX module (widths as for :meth:`init_params`)."""
        return NoParams()

    def init_params(
        self, key: jax.Array, cf_dim: int, llm_dim: int, ego_dim: int | None = None
    ) -> Params:
        """The method's parameters as a pure dict (:func:`~darec_jax.nn.param_dict` of
        :meth:`make_module`, seeded by ``key``). ``cf_dim``: width of the backbone's final
        embeddings; ``llm_dim``: of the LLM embeddings; ``ego_dim``: of the ego (ID) embeddings
        (default ``cf_dim``)."""
        module = self.make_module(cf_dim, llm_dim, ego_dim or cf_dim, rngs=nnx.Rngs(params=key))
        return param_dict(module)

    def module(self, params: Params) -> nnx.Module:
        """``params`` (a tree :meth:`init_params` gives) as the method's module; inside jit a
        pure function of them."""
        return nnx.merge(self._module_graphdef, params)

    @functools.cached_property
    def _module_graphdef(self) -> nnx.GraphDef:
        # The structure only (no shapes): any widths will do.
        return abstract_graphdef(lambda rngs: self.make_module(1, 1, 1, rngs=rngs))

    def draw(self, key: jax.Array) -> dict[str, jax.Array]:
        """This step's random inputs of the method (injected in equivalence tests)."""
        return {}

    def draw_for_batch(
        self, key: jax.Array, batch_size: int, valid: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """This step's random inputs that depend on the batch (e.g. row subsets); ``valid``
        [batch_size] marks the real rows of a padded batch (None: all real)."""
        return {}

    def epoch_state(
        self,
        params: Params,
        user_final: jax.Array,
        item_final: jax.Array,
        llm: tuple[jax.Array, jax.Array] | None,
        key: jax.Array,
    ) -> dict[str, jax.Array]:
        """Inputs computed once before an epoch's steps from the clean forward (e.g. DaRec's
        cluster assignments); constant, without gradient, during the epoch."""
        return {}

    def score_rows(self, params: Params, rows: jax.Array) -> jax.Array:
        """The vectors whose inner product scores a user–item pair (BPR and ranking), from the
        backbone's final embedding rows [n, d]. The backbone's rows themselves by default."""
        return rows

    def transform_ego(self, params: Params, ego: jax.Array, draws: dict) -> jax.Array:
        """The ego matrix [N, d] that feeds the backbone's forward."""
        return ego

    def terms(
        self,
        params: Params,
        user_final: jax.Array,
        item_final: jax.Array,
        batch: Any,
        llm: tuple[jax.Array, jax.Array] | None,
        draws: dict,
    ) -> dict[str, jax.Array]:
        """Weighted loss terms, keyed by :attr:`term_names`."""
        return {}


class NoMethod(Method):
    """``--method none``."""
