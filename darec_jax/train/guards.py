"""The loop's two stopping rules: early stopping on validation, and the non-finite guard."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from darec_jax.errors import DarecError
from darec_jax.train.step import all_finite


@dataclass
class LoopState:
    """Host-side bookkeeping of the loop, saved beside each checkpoint."""

    next_epoch: int = 0
    best_value: float = -1e9
    best_epoch: int = -1
    patience: int = 0
    stopped: bool = False
    train_seconds: float = 0.0
    rollbacks: int = 0  # non-finite epochs rolled back so far (they change later epochs' keys)

    def record_validation(self, value: float, epoch: int, patience: int) -> bool:
        """Early stopping (docs/protocol.md): a strict improvement of the criterion resets the
        patience; ``patience`` evaluations without one stop the run. True if ``epoch`` is the
        new best."""
        improved = value > self.best_value
        if improved:
            self.best_value, self.best_epoch, self.patience = value, epoch, 0
        else:
            self.patience += 1
        self.stopped = self.patience >= patience
        return improved


class NonFiniteError(DarecError):
    """A loss term or parameter became NaN or Inf during training."""


_all_finite = jax.jit(all_finite)


def epoch_is_finite(terms: dict[str, float], params) -> bool:
    """Whether every mean loss term and every parameter after the epoch is finite."""
    return all(np.isfinite(v) for v in terms.values()) and bool(_all_finite(params))


def diagnose(fns, before, arrays, key, epoch: int) -> str:
    """Which terms (or the parameters) went bad first, at which step: the epoch replayed step by
    step from its starting state ``before`` (a :class:`~darec_jax.train.step.TrainState`)."""
    step_terms, finite = fns.jit_epoch_trace(before, arrays, key)
    values = {k: np.asarray(v) for k, v in step_terms.items()}
    finite = np.asarray(finite)
    n = finite.shape[0]
    for step in range(n):
        bad = [k for k, v in values.items() if k != "loss" and not np.isfinite(v[step])]
        if not bad and "loss" in values and not np.isfinite(values["loss"][step]):
            bad = ["loss"]
        if bad:
            kinds = ", ".join(
                f"'{k}' ({'NaN' if np.isnan(values[k][step]) else 'Inf'})" for k in sorted(bad)
            )
            return f"loss term {kinds} became non-finite at epoch {epoch}, step {step + 1} of {n}"
        if not finite[step]:
            return (
                f"the parameters became non-finite at epoch {epoch}, step {step + 1} of {n} "
                "(the loss terms were finite: the update overflowed)"
            )
    return f"the parameters became non-finite during epoch {epoch} (not reproduced step by step)"
