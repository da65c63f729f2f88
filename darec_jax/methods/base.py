"""The interface a method implements, and the bare backbone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

Params = dict[str, Any]


@dataclass(frozen=True)
class Method:
    """The bare backbone: no parameters, no randomness, no extra terms.

    Subclasses override what they need. All functions are pure and traced inside jit.
    """

    n_users: int
    n_items: int

    #: names of the terms :meth:`terms` returns, in the order they are added to the loss.
    term_names: tuple[str, ...] = ()

    def init_params(
        self, key: jax.Array, cf_dim: int, llm_dim: int, ego_dim: int | None = None
    ) -> Params:
        """The method's parameters. ``cf_dim``: width of the backbone's final embeddings;
        ``llm_dim``: of the LLM embeddings; ``ego_dim``: of the ego (ID) embeddings (default
        ``cf_dim``)."""
        return {}

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
