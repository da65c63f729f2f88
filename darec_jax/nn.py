"""Shared NNX building blocks: torch-style initialisers, the two-layer LeakyReLU head, and the
bridge between a parameter module and its pure dict.

Parameters travel (through the train state, checkpoints and the reference's state_dict names) as
a pure nested dict, :func:`param_dict`: a module's ``nnx.Param`` leaves keyed by attribute name.
Inside the pure functions they are put back into their module with ``nnx.merge`` and applied
through it, e.g. :meth:`LeakyMLP.from_params`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

Params = dict[str, Any]
M = TypeVar("M", bound=nnx.Module)

__all__ = [
    "LeakyMLP",
    "Params",
    "abstract_graphdef",
    "param_dict",
    "uniform_bias",
    "xavier_uniform",
]

# Xavier-uniform for a [rows, cols] table: U(-b, b), b = sqrt(6 / (rows + cols)) (docs/backbones.md
# §1.6).
xavier_uniform = jax.nn.initializers.glorot_uniform(in_axis=-2, out_axis=-1)


def uniform_bias(key: jax.Array, fan_in: int, size: int) -> jax.Array:
    """torch.nn.Linear's bias initialisation: [size] drawn from U(±1/sqrt(fan_in))."""
    bound = 1.0 / jnp.sqrt(fan_in)
    return jax.random.uniform(key, (size,), jnp.float32, -bound, bound)


def param_dict(module: nnx.Module) -> Params:
    """The module's ``nnx.Param`` leaves as a pure nested dict keyed by attribute names."""
    return nnx.to_pure_dict(nnx.state(module, nnx.Param))


def abstract_graphdef(build: Callable[[nnx.Rngs], M]) -> nnx.GraphDef[M]:
    """The graph definition of the module ``build(rngs)`` makes, traced abstractly
    (``nnx.eval_shape``: no array is made). It holds the module's classes and attribute names,
    not its shapes, so ``nnx.merge`` of it with any :func:`param_dict` of such a module rebuilds
    that module, whatever the widths ``build`` used."""
    return nnx.graphdef(nnx.eval_shape(lambda: build(nnx.Rngs(0))))


class LeakyMLP(nnx.Module):
    """Linear → LeakyReLU(0.01) → Linear, in torch's layout and initialisation:

        y = LeakyReLU_0.01(x W1ᵀ + b1) W2ᵀ + b2

    Parameters: ``w1`` [h, in], ``b1`` [h], ``w2`` [out, h], ``b2`` [out]; weights
    Xavier-uniform, biases U(±1/sqrt(fan_in)).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, rngs: nnx.Rngs):
        self.w1 = nnx.Param(xavier_uniform(rngs.params(), (hidden, in_dim)))
        self.b1 = nnx.Param(uniform_bias(rngs.params(), in_dim, hidden))
        self.w2 = nnx.Param(xavier_uniform(rngs.params(), (out_dim, hidden)))
        self.b2 = nnx.Param(uniform_bias(rngs.params(), hidden, out_dim))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [n, in] -> y [n, out]."""
        hidden = jax.nn.leaky_relu(x @ self.w1[...].T + self.b1[...], negative_slope=0.01)
        return hidden @ self.w2[...].T + self.b2[...]

    @staticmethod
    def from_params(params: Params) -> LeakyMLP:
        """The head holding ``params`` (``w1``, ``b1``, ``w2``, ``b2``; inside jit a pure
        function of them)."""
        return nnx.merge(_leaky_mlp_graphdef(), params)


@functools.cache
def _leaky_mlp_graphdef() -> nnx.GraphDef[LeakyMLP]:
    return abstract_graphdef(lambda rngs: LeakyMLP(1, 1, 1, rngs=rngs))
