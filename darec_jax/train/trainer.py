"""The training loop: epochs, validation, early stopping, checkpoints, final test, artifacts.

docs/protocol.md. The loop is small; its parts live beside it: the run's folder
(:mod:`~darec_jax.train.run_dir`), the checkpoint slots (:mod:`~darec_jax.train.checkpoint`),
early stopping and the non-finite guard (:mod:`~darec_jax.train.guards`), and the jitted epoch
over one :class:`~darec_jax.train.step.TrainState` (:mod:`~darec_jax.train.step`).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from darec_jax import config as config_lib
from darec_jax.config import Config
from darec_jax.data.dataset import InteractionData
from darec_jax.data.registry import load_dataset
from darec_jax.errors import ConfigError, DarecError, RunInterrupted
from darec_jax.eval.ranking import RankingTask, evaluate_embeddings, prepare_split
from darec_jax.parallel import describe_placement, make_mesh
from darec_jax.train.checkpoint import CheckpointSlot, RunCheckpoints
from darec_jax.train.guards import (
    LoopState,
    NonFiniteError,
    diagnose,
    epoch_is_finite,
)
from darec_jax.train.run_dir import RunDirectory, has_checkpoint
from darec_jax.train.signals import stop_requests
from darec_jax.train.step import epoch_key, make_step_functions

__all__ = [
    "LoopState",
    "NonFiniteError",
    "has_checkpoint",
    "load_data",
    "restore_run",
    "train_and_evaluate",
]


def load_data(cfg: Config) -> InteractionData:
    """The dataset the config names (LLM embeddings required for alignment methods)."""
    return load_dataset(
        cfg.data.name,
        data_dir=cfg.data.data_dir,
        cache_dir=cfg.data.cache_dir,
        require_embeddings=cfg.method != "none",
        synthetic=cfg.data.synthetic,
        download=cfg.data.download,
    )


def format_metrics(metrics: dict[str, float], ks: tuple[int, ...]) -> str:
    names = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    return " ".join(f"{n} {metrics[n]:.4f}" for n in names if n in metrics)


def library_versions() -> dict[str, str]:
    import flax
    import optax
    import orbax.checkpoint

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax-checkpoint": orbax.checkpoint.__version__,
        "numpy": np.__version__,
    }


def _draw_plots(workdir: Path, cfg: Config, fns, params, arrays, log) -> list[str]:
    """The run's figures (file names in ``workdir``); none, with a note, without matplotlib."""
    from darec_jax import plots

    try:
        return plots.run_plots(workdir, cfg, fns, params, arrays)
    except ImportError as exc:
        log(f"no plots: {exc}")
        return []


def run_mesh(cfg: Config) -> jax.sharding.Mesh | None:
    """The mesh of ``cfg.mesh`` over every device of every process; None on a single device
    (one device keeps the native CPU kernels)."""
    if jax.device_count() == 1 and cfg.mesh.data in (0, 1) and cfg.mesh.model == 1:
        return None
    return make_mesh(cfg.mesh.data, cfg.mesh.model)


def train_and_evaluate(
    cfg: Config,
    workdir: str | os.PathLike,
    resume: bool = False,
    data: InteractionData | None = None,
    progress: bool = True,
    log=None,
    max_epochs_this_process: int | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Train with early stopping, test the best validation state, write the artifacts.

    Args:
      cfg: the resolved config.
      workdir: the run's folder (created if needed).
      resume: continue from ``workdir/checkpoints/latest``; the final results equal an
        uninterrupted run's.
      data: an already loaded dataset (else loaded from ``cfg.data``).
      progress: show a progress bar over epochs.
      log: a ``print``-like callable for the per-evaluation lines (default: tqdm.write).
      max_epochs_this_process: train at most this many epochs, save the latest checkpoint and
        return ``{"status": "paused", ...}`` (for time-limited jobs; continue with ``resume``).
      plots: draw the run's figures (:mod:`darec_jax.plots`; skipped with a note when matplotlib
        is not installed) and list them in the results under ``plots``.
    Returns:
      The results dict also written to ``workdir/results.json`` (``status`` = ``finished``).

    With several devices (or processes, see ``darec_jax.parallel``) the run uses the mesh of
    ``cfg.mesh``; process 0 writes the logs and results, every process takes part in the
    checkpoints.
    """
    config_lib.validate(cfg)
    mesh = run_mesh(cfg)
    log = log or (lambda msg: tqdm.write(msg, file=sys.stdout))
    jax.config.update("jax_default_matmul_precision", cfg.train.matmul_precision)
    run_dir = RunDirectory(workdir, resume, jax.process_index() == 0, jax.process_index())
    if resume:
        run_dir.check_same_config(cfg)
    with contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh):
        return _Run(cfg, run_dir, data, log, mesh).train(
            resume, progress, max_epochs_this_process, plots
        )


class _Run:
    """One run's loop over epochs, around the jitted epoch of a TrainState."""

    def __init__(self, cfg: Config, run_dir: RunDirectory, data, log, mesh) -> None:
        self.cfg, self.dir, self.log = cfg, run_dir, log
        self.wall_start = time.perf_counter()
        self.data = data if data is not None else load_data(cfg)
        self.fns, self.arrays, self.state = make_step_functions(cfg, self.data, mesh)
        if mesh is not None:
            log(
                f"mesh {dict(mesh.shape)} over {jax.device_count()} device(s), "
                f"{jax.process_count()} process(es); "
                + "; ".join(describe_placement({"state": self.state, "data": self.arrays}))
            )
        self.ks = tuple(cfg.eval.ks)
        self.val_task = prepare_split(self.data, "val", cfg.eval.user_chunk)
        self.test_task = prepare_split(self.data, "test", cfg.eval.user_chunk)
        self.checkpoints = RunCheckpoints(run_dir.checkpoints)
        self.loop = LoopState()
        self.best_params = self.state.params

    def evaluate(self, params, task: RankingTask) -> dict[str, float]:
        fu, fi = self.fns.jit_scoring_embeddings(params, self.arrays)
        return evaluate_embeddings(fu, fi, task, self.ks, self.cfg.eval.recall_denominator)

    def restore(self) -> None:
        """The latest checkpoint's state and loop record, and the best parameters it names."""
        self.state, loop = self.checkpoints.restore_latest(self.state)
        self.loop = LoopState(**loop)
        self.best_params = self.checkpoints.restore_best(
            self.loop.best_epoch, self.loop.next_epoch, self.state.params
        )
        self.dir.start_log(self.loop.next_epoch)

    def train(self, resume, progress, max_epochs_this_process, plots) -> dict[str, Any]:
        cfg = self.cfg
        self.dir.write_config(cfg)
        if resume:
            self.restore()
            loop = self.loop
            self.log(f"resumed from epoch {loop.next_epoch - 1} (best epoch {loop.best_epoch})")
        else:
            self.dir.start_log(0)
        bar = tqdm(
            total=cfg.train.epochs,
            initial=self.loop.next_epoch,
            desc="epochs",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        first_epoch = self.loop.next_epoch
        paused = False
        with stop_requests() as stop:
            try:
                while not self.loop.stopped and self.loop.next_epoch < cfg.train.epochs:
                    epoch = self.loop.next_epoch
                    if not self.run_epoch(epoch, bar):
                        continue  # rolled back: the loop state names the epoch to run again
                    done = epoch + 1 - first_epoch
                    paused = (
                        max_epochs_this_process is not None
                        and done >= max_epochs_this_process
                        and not self.loop.stopped
                        and epoch + 1 < cfg.train.epochs
                    ) or (stop.requested and not self.loop.stopped)
                    if epoch % cfg.train.test_step == 0 or self.loop.stopped or paused:
                        best = self.best_params if self.loop.best_epoch == epoch else None
                        self.checkpoints.save(epoch, self.state, self.loop.__dict__, best)
                    if paused:
                        break
            finally:
                bar.close()
            if stop.requested and paused:
                self.checkpoints.close()
                self.log(
                    f"{stop.name}: stopped after epoch {self.loop.next_epoch - 1}, its state "
                    "saved; --resume continues from there"
                )
                raise RunInterrupted(
                    stop.name, stop.exit_code, self.loop.next_epoch, str(self.dir.path)
                )
        if paused:
            self.checkpoints.close()
            self.log(f"paused after epoch {self.loop.next_epoch - 1}; continue with --resume")
            return {"status": "paused", "next_epoch": self.loop.next_epoch}
        results = self.results(plots)
        self.checkpoints.close()
        return results

    def run_epoch(self, epoch: int, bar) -> bool:
        """Train one epoch, guard it, evaluate it when due; False if it was rolled back."""
        cfg = self.cfg
        t0 = time.perf_counter()
        key = epoch_key(cfg.train.seed, epoch, self.loop.rollbacks)
        before = jax.tree.map(jnp.copy, self.state)  # the epoch donates its input state
        self.state, terms = self.fns.jit_epoch(self.state, self.arrays, key)
        terms = {k: float(v) for k, v in terms.items()}
        self.loop.train_seconds += time.perf_counter() - t0
        if not epoch_is_finite(terms, self.state.params):
            self.handle_nonfinite(diagnose(self.fns, before, self.arrays, key, epoch))
            return False
        record: dict[str, Any] = {"epoch": epoch, "train": terms}
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss']:.4f}")
        if epoch % cfg.train.test_step == 0:
            t1 = time.perf_counter()
            val = self.evaluate(self.state.params, self.val_task)
            record["val"] = val
            record["eval_seconds"] = time.perf_counter() - t1
            value = val[cfg.train.criterion]
            if self.loop.record_validation(value, epoch, cfg.train.patience):
                self.best_params = jax.tree.map(lambda x: x.copy(), self.state.params)
            self.log(
                f"[epoch {epoch:4d}] train loss {terms['loss']:.4f} | validation "
                f"{format_metrics(val, self.ks)}" + (" *" if self.loop.best_epoch == epoch else "")
            )
        self.loop.next_epoch = epoch + 1
        self.dir.log(record)
        return True

    def handle_nonfinite(self, problem: str) -> None:
        """Stop with a clear error, or (``train.on_nonfinite=rollback``) restore the last good
        checkpoint and retry from there with fresh batches and draws."""
        cfg = self.cfg
        good = self.checkpoints.latest.latest_step()
        where = (
            "no checkpoint was saved yet"
            if good is None
            else f"the last good checkpoint (epoch {good}) is kept in "
            f"{self.checkpoints.latest.directory}"
        )
        rollback = cfg.train.on_nonfinite == "rollback"
        if not rollback or good is None or self.loop.rollbacks >= cfg.train.max_rollbacks:
            tried = f" after {self.loop.rollbacks} rollback(s)" if rollback else ""
            again = "start again" if good is None else "--resume"
            raise NonFiniteError(
                f"{problem}{tried}; nothing from that epoch was saved and {where}. Lower "
                f"train.lr (or check the data and embeddings for NaN) and {again}, or set "
                "train.on_nonfinite=rollback to restart from the last good checkpoint "
                "with fresh batches."
            )
        count = self.loop.rollbacks + 1
        self.restore()
        self.loop.rollbacks = count
        self.log(
            f"{problem}; rolled back to the checkpoint of epoch {good} "
            f"(rollback {count} of at most {cfg.train.max_rollbacks})"
        )

    def results(self, plots: bool) -> dict[str, Any]:
        """Validation and test metrics of the best state, and the run's record."""
        cfg, data = self.cfg, self.data
        val = self.evaluate(self.best_params, self.val_task)
        test = self.evaluate(self.best_params, self.test_task)
        self.log(f"[best epoch {self.loop.best_epoch}] test {format_metrics(test, self.ks)}")
        results = {
            "status": "finished",
            "dataset": cfg.data.name,
            "backbone": cfg.model.backbone,
            "method": cfg.method,
            "best_epoch": self.loop.best_epoch,
            "epochs_run": self.loop.next_epoch,
            "stopped_early": self.loop.stopped,
            "rollbacks": self.loop.rollbacks,
            "val": val,
            "test": test,
            "recall_denominator": cfg.eval.recall_denominator,
            "train_seconds": self.loop.train_seconds,
            "wall_seconds_this_process": time.perf_counter() - self.wall_start,
            "seed": cfg.train.seed,
            "devices": [str(d) for d in jax.devices()],
            "versions": library_versions(),
            "data": {
                "source": data.source,
                "n_users": data.n_users,
                "n_items": data.n_items,
                "n_train": int(data.train.users.shape[0]),
                "n_val": int(data.val.users.shape[0]),
                "n_test": int(data.test.users.shape[0]),
            },
        }
        if plots and jax.process_count() == 1:
            results["plots"] = _draw_plots(
                self.dir.path, cfg, self.fns, self.best_params, self.arrays, self.log
            )
        self.dir.write_results(results)
        return results


def restore_run(workdir: str | os.PathLike, which: str = "best"):
    """A run's model from its folder: (cfg, data, fns, arrays, params) with the parameters of
    the ``best`` (best validation state) or ``latest`` checkpoint. The dataset is loaded again
    from the run's config."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise DarecError(f"{workdir} is not a run folder (no config.json)")
    if which not in ("best", "latest"):
        raise ConfigError(f"checkpoint must be 'best' or 'latest', got {which!r}")
    cfg = config_lib.from_dict(json.loads(config_path.read_text()))
    slot_dir = workdir / "checkpoints" / which
    if not slot_dir.is_dir():
        raise DarecError(f"no {which!r} checkpoint in {workdir}/checkpoints")
    data = load_data(cfg)
    fns, arrays, state = make_step_functions(cfg, data)
    slot = CheckpointSlot(slot_dir)
    try:
        if which == "best":
            params, _ = slot.restore(state.params)
        else:
            params = slot.restore(state)[0].params
    finally:
        slot.close()
    return cfg, data, fns, arrays, params
