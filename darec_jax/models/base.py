"""What the training step needs from a graph collaborative-filtering backbone.

A backbone is a Flax NNX module that owns its parameters (split once into a pure dict by the
training code) and its static hyper-parameters. Everything random in a step is an explicit input
(:meth:`Backbone.draw`), so equivalence tests can inject the reference's draws. The graph and any
backbone-specific static arrays arrive as call arguments (``arrays``: the
:class:`~darec_jax.inputs.TrainArrays` of the run, whose ``graph`` runs its products with the
implementation chosen when it was built), never as module state.

One training step computes, in this order (docs/backbones.md Q13):

    total = rec + reg + backbone terms (``term_names``) + method terms

where ``rec`` is :meth:`Backbone.rec_loss` on the rows a method chooses to score with (BPR for
every backbone but AutoCF) and ``reg`` is ``reg_weight`` times the squared L2 norm of every
parameter, the method's included.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from darec_jax.losses.core import bpr_loss

Draws = dict[str, jax.Array]


class Backbone(nnx.Module):
    """The interface. Subclasses set ``n_users``, ``n_items`` and implement the forwards."""

    n_users: int
    n_items: int
    #: the backbone's own weighted loss terms, in the order they are added after rec + reg.
    term_names: tuple[str, ...] = ()
    #: weighted terms added after the method's terms (AutoCF's infomax, Q13).
    late_term_names: tuple[str, ...] = ()
    #: the name under which the recommendation term is reported.
    rec_name: str = "bpr"

    @property
    def final_dim(self) -> int:
        """Width of the final embeddings (what scores a pair and what methods align)."""
        raise NotImplementedError

    def ego(self) -> jax.Array:
        """E0 = [E_u ; E_i], [N, d]."""
        raise NotImplementedError

    def draw(self, key: jax.Array, arrays: Any) -> Draws:
        """This step's random inputs of the backbone (e.g. edge-dropout uniforms)."""
        return {}

    def init_step_state(self, arrays: Any) -> dict[str, jax.Array]:
        """State carried from step to step within an epoch and reset at its start (AutoCF's
        resampled subgraphs); fixed shapes. None by default."""
        return {}

    def update_step_state(
        self, state: dict[str, jax.Array], step_index: jax.Array, draws: Draws, arrays: Any
    ) -> dict[str, jax.Array]:
        """The state for step ``step_index`` of the epoch (0-based), from the previous step's and
        this step's draws, with the current parameters, before the loss. It reaches
        :meth:`train_forward` merged into ``draws``."""
        return state

    def train_forward(
        self, ego: jax.Array, arrays: Any, draws: Draws, batch: Any
    ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """The training forward from a (possibly masked) ego matrix: (F_u, F_i) of the forward
        that feeds the recommendation loss, and the backbone's own weighted terms."""
        raise NotImplementedError

    def eval_forward(self, arrays: Any) -> tuple[jax.Array, jax.Array]:
        """The clean forward that ranking uses: (F_u, F_i)."""
        raise NotImplementedError

    def rec_loss(
        self, users: jax.Array, pos: jax.Array, neg: jax.Array, valid: jax.Array
    ) -> jax.Array:
        """BPR over the batch's real rows (§1.7); rows [B, D] of the scoring vectors."""
        return bpr_loss(users, pos, neg, valid)


def concat_ego(user_emb: nnx.Param, item_emb: nnx.Param) -> jax.Array:
    """[E_u ; E_i] (users first, item j at row U + j)."""
    return jnp.concatenate([user_emb[...], item_emb[...]], axis=0)
