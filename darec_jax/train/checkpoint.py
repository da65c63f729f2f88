"""Orbax checkpoints: ``latest`` (to resume) and ``best`` (best validation state).

Each checkpoint holds the array state (params, optimiser state) and a JSON record of the loop's
bookkeeping (epoch, early-stopping counters). Orbax writes into a temporary folder and renames it
when complete, so a checkpoint interrupted mid-write is never restored.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from darec_jax.errors import DarecError


class CheckpointSlot:
    """One named slot (e.g. ``latest``) keeping only its newest checkpoint."""

    def __init__(self, directory: Path, keep: int = 1):
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        """Save and block until the write is complete (so a kill after this returns is safe).

        A checkpoint of this step already there (or a folder of it that Orbax does not count,
        left by a process killed while finalising it) is removed first: it was written by a
        process killed before its loop state recorded it, and the resumed run writes it again."""
        if step in self._manager.all_steps():
            # Written by a process that was killed before its run recorded it (the resumed run
            # computes this step again): replace it.
            self._manager.delete(step)
        stale = self.directory / str(step)
        if stale.exists():
            shutil.rmtree(stale)
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except OSError as exc:
            raise DarecError(
                f"could not write a checkpoint to {self.directory}: {exc}. The previous "
                "checkpoint there is kept; free space or choose another --workdir, then --resume."
            ) from exc

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restore (state, meta); ``template`` gives the pytree structure, shapes and dtypes."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise DarecError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self._manager.close()


class RunCheckpoints:
    """A run's two slots: ``latest`` (the whole train state, to resume) and ``best`` (the
    parameters of the best validation state, for the final test and for export).

    Two Orbax managers rather than one with Orbax's own best-checkpoint selection
    (``best_fn``): that keeps the top checkpoints by metric and drops the newest non-best one,
    which a resume needs. ``best`` keeps two steps: a process killed between writing a new best
    and the latest checkpoint leaves a best ahead of the loop state it resumes from; the one
    before it is still there, and :meth:`restore_best` takes the step the loop state names.
    """

    def __init__(self, directory: Path):
        self.latest = CheckpointSlot(Path(directory) / "latest")
        self.best = CheckpointSlot(Path(directory) / "best", keep=2)

    def save(self, epoch: int, state: Any, loop: dict[str, Any], best_params: Any = None) -> None:
        """The latest state (and first the best parameters, when ``best_params`` is given)."""
        meta = {"loop": loop}
        if best_params is not None:
            self.best.save(epoch, best_params, meta)
        self.latest.save(epoch, state, meta)

    def restore_latest(self, template: Any) -> tuple[Any, dict[str, Any]]:
        """(state, loop record) of the latest checkpoint."""
        state, meta = self.latest.restore(template)
        return state, meta["loop"]

    def restore_best(self, best_epoch: int, next_epoch: int, params: Any) -> Any:
        """The best validation parameters the loop state names (``params``: the restored latest
        state's, also the template)."""
        if best_epoch < 0:
            return params
        if best_epoch in self.best.all_steps():
            return self.best.restore(params, step=best_epoch)[0]
        if best_epoch == next_epoch - 1:  # the latest checkpoint is that state
            return params
        raise DarecError(
            f"the best checkpoint (epoch {best_epoch}) is missing from {self.best.directory}; "
            "the run cannot be resumed with its early-stopping state"
        )

    def close(self) -> None:
        self.latest.close()
        self.best.close()
