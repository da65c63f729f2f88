"""The training loop: epochs, validation, early stopping, checkpoints, final test, artifacts.

PROTOCOL.md §2–4. A run's work directory holds

    config.json      the resolved config
    metrics.jsonl    one JSON line per evaluation (and per epoch's mean losses)
    checkpoints/latest, checkpoints/best   Orbax checkpoints
    results.json     validation and test metrics of the best state, best epoch, wall time, ...
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
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
from darec_jax.errors import ConfigError, DarecError
from darec_jax.eval.ranking import RankingTask, evaluate_embeddings, prepare_split
from darec_jax.parallel import describe_placement, make_mesh
from darec_jax.train.checkpoint import CheckpointSlot
from darec_jax.train.step import all_finite, epoch_key, make_step_functions


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


class NonFiniteError(DarecError):
    """A loss term or parameter became NaN or Inf during training."""


def _diagnose(fns, before, arrays, key, method_state, epoch: int) -> str:
    """Which terms (or the parameters) went bad first, at which step: the epoch replayed step by
    step from its starting state ``before`` = (params, opt_state)."""
    step_terms, finite = fns.jit_epoch_trace(*before, arrays, key, method_state)
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


def _truncate_log(path: Path, keep_before_epoch: int) -> None:
    """Drop log lines of epochs not covered by the checkpoint we resume from."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("epoch", -1) < keep_before_epoch
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _check_same_config(cfg: Config, saved_path: Path) -> None:
    """A resumed run must use the config it was started with."""
    if not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    try:  # keys added since the run started compare as their defaults
        saved = json.loads(config_lib.to_json(config_lib.from_dict(saved)))
    except DarecError:
        pass
    current = json.loads(config_lib.to_json(cfg))

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(saved), flat(current)
    # The mesh changes where arrays live, not what is computed: a run may resume on another one.
    diff = sorted(
        k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not k.startswith("mesh.")
    )
    if diff:
        details = "; ".join(f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in diff)
        raise ConfigError(
            f"--resume with a different config than the run in {saved_path.parent}: {details}. "
            "Resume with the same options, or start a new --workdir."
        )


# Folded into the epoch key after a rollback (with the rollback count), far from any epoch index.
ROLLBACK_SALT = 1 << 20
_all_finite = jax.jit(all_finite)


def _restore_best(best: CheckpointSlot, loop: LoopState, params):
    """The best validation state the loop state names (``params``: the restored latest state,
    also the template)."""
    if loop.best_epoch < 0:
        return params
    if loop.best_epoch in best.all_steps():
        return best.restore(params, step=loop.best_epoch)[0]
    if loop.best_epoch == loop.next_epoch - 1:  # the latest checkpoint is that state
        return params
    raise DarecError(
        f"the best checkpoint (epoch {loop.best_epoch}) is missing from {best.directory}; "
        "the run cannot be resumed with its early-stopping state"
    )


def has_checkpoint(slot_dir: Path) -> bool:
    """Whether ``slot_dir`` holds a complete checkpoint, as Orbax counts them (a write that was
    interrupted leaves a temporary or unfinalised folder, which does not count and is never
    restored)."""
    if not slot_dir.is_dir():
        return False
    slot = CheckpointSlot(slot_dir)
    try:
        return slot.latest_step() is not None
    finally:
        slot.close()


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
    with contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh):
        return _train_and_evaluate(
            cfg, workdir, resume, data, progress, log, max_epochs_this_process, plots, mesh
        )


def _train_and_evaluate(
    cfg: Config,
    workdir: str | os.PathLike,
    resume: bool,
    data: InteractionData | None,
    progress: bool,
    log,
    max_epochs_this_process: int | None,
    plots: bool,
    mesh: jax.sharding.Mesh | None,
) -> dict[str, Any]:
    log = log or (lambda msg: tqdm.write(msg, file=sys.stdout))
    jax.config.update("jax_default_matmul_precision", cfg.train.matmul_precision)
    workdir = Path(workdir)
    latest_dir = workdir / "checkpoints" / "latest"
    if not resume and has_checkpoint(latest_dir):
        raise ConfigError(
            f"{workdir} already holds a run's checkpoints; pass --resume to continue it, "
            "or choose another --workdir (nothing was changed)"
        )
    if resume and not has_checkpoint(latest_dir):
        raise ConfigError(f"--resume: no checkpoint to resume from in {latest_dir}")
    if resume:
        _check_same_config(cfg, workdir / "config.json")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{jax.process_index()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise DarecError(
            f"cannot write to the work directory {workdir}: {exc}; choose another --workdir"
        ) from exc

    wall_start = time.perf_counter()
    data = data if data is not None else load_data(cfg)
    fns, arrays, params, opt_state = make_step_functions(cfg, data, mesh)
    primary = jax.process_index() == 0
    if mesh is not None:
        log(
            f"mesh {dict(mesh.shape)} over {jax.device_count()} device(s), "
            f"{jax.process_count()} process(es); "
            + "; ".join(describe_placement({"params": params, "data": arrays}))
        )
    ks = tuple(cfg.eval.ks)
    val_task = prepare_split(data, "val", cfg.eval.user_chunk)
    test_task = prepare_split(data, "test", cfg.eval.user_chunk)

    def evaluate(p, task: RankingTask) -> dict[str, float]:
        fu, fi = fns.jit_scoring_embeddings(p, arrays)
        return evaluate_embeddings(fu, fi, task, ks, cfg.eval.recall_denominator)

    if primary:
        (workdir / "config.json").write_text(config_lib.to_json(cfg) + "\n")
    metrics_log = workdir / "metrics.jsonl"
    latest = CheckpointSlot(latest_dir)
    # Two kept: a process killed between writing a new best and the latest checkpoint leaves a
    # best ahead of the loop state it resumes from; the one before it is still there.
    best = CheckpointSlot(workdir / "checkpoints" / "best", keep=2)
    loop = LoopState()
    best_params = params
    # The method's per-epoch inputs (DaRec's cluster assignments): recomputed every
    # `recluster_every` epochs, kept in between, and checkpointed with the train state.
    state_shapes = jax.eval_shape(fns.method_epoch_state, params, arrays, jax.random.key(0))
    method_state = None
    every = max(1, int(getattr(fns.method, "recluster_every", 1)))

    def train_state():
        return (params, opt_state, method_state) if state_shapes else (params, opt_state)

    if resume:
        if state_shapes:
            method_state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state_shapes)
        restored, meta = latest.restore(train_state())
        params, opt_state = restored[:2]
        method_state = restored[2] if state_shapes else None
        loop = LoopState(**meta["loop"])
        best_params = _restore_best(best, loop, params)
        if primary:
            _truncate_log(metrics_log, loop.next_epoch)
        log(f"resumed from epoch {loop.next_epoch - 1} (best epoch {loop.best_epoch})")
    elif primary and metrics_log.exists():
        metrics_log.unlink()

    bar = tqdm(
        total=cfg.train.epochs,
        initial=loop.next_epoch,
        desc="epochs",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    paused = False
    # Only process 0 writes the log; the others follow the same loop.
    with (metrics_log if primary else Path(os.devnull)).open("a") as log_file:
        epoch = loop.next_epoch
        first_epoch = epoch
        while not loop.stopped and epoch < cfg.train.epochs:
            t0 = time.perf_counter()
            key = epoch_key(cfg.train.seed, epoch)
            if loop.rollbacks:  # fresh batches and draws after a rollback
                key = jax.random.fold_in(key, ROLLBACK_SALT + loop.rollbacks)
            if state_shapes and (method_state is None or epoch % every == 0):
                method_state = fns.jit_method_epoch_state(
                    params, arrays, jax.random.fold_in(key, 1)
                )
            before = jax.tree.map(jnp.copy, (params, opt_state))  # the epoch donates its inputs
            params, opt_state, terms = fns.jit_epoch(params, opt_state, arrays, key, method_state)
            terms = {k: float(v) for k, v in terms.items()}
            loop.train_seconds += time.perf_counter() - t0
            if not (all(np.isfinite(v) for v in terms.values()) and bool(_all_finite(params))):
                problem = _diagnose(fns, before, arrays, key, method_state, epoch)
                good = latest.latest_step()
                where = (
                    "no checkpoint was saved yet"
                    if good is None
                    else f"the last good checkpoint (epoch {good}) is kept in {latest_dir}"
                )
                rollback = cfg.train.on_nonfinite == "rollback"
                if not rollback or good is None or loop.rollbacks >= cfg.train.max_rollbacks:
                    tried = f" after {loop.rollbacks} rollback(s)" if rollback else ""
                    again = "start again" if good is None else "--resume"
                    raise NonFiniteError(
                        f"{problem}{tried}; nothing from that epoch was saved and {where}. Lower "
                        f"train.lr (or check the data and embeddings for NaN) and {again}, or set "
                        "train.on_nonfinite=rollback to restart from the last good checkpoint "
                        "with fresh batches."
                    )
                restored, meta = latest.restore(train_state())
                params, opt_state = restored[:2]
                method_state = restored[2] if state_shapes else None
                count = loop.rollbacks + 1
                loop = LoopState(**meta["loop"])
                loop.rollbacks = count
                best_params = _restore_best(best, loop, params)
                if primary:
                    _truncate_log(metrics_log, loop.next_epoch)
                log(
                    f"{problem}; rolled back to the checkpoint of epoch {good} "
                    f"(rollback {count} of at most {cfg.train.max_rollbacks})"
                )
                epoch = loop.next_epoch
                continue
            record: dict[str, Any] = {"epoch": epoch, "train": terms}
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.4f}")
            if epoch % cfg.train.test_step == 0:
                t1 = time.perf_counter()
                val = evaluate(params, val_task)
                record["val"] = val
                record["eval_seconds"] = time.perf_counter() - t1
                value = val[cfg.train.criterion]
                if value > loop.best_value:  # strict improvement (§1.11)
                    loop.best_value, loop.best_epoch, loop.patience = value, epoch, 0
                    best_params = jax.tree.map(lambda x: x.copy(), params)
                else:
                    loop.patience += 1
                loop.stopped = loop.patience >= cfg.train.patience
                log(
                    f"[epoch {epoch:4d}] train loss {terms['loss']:.4f} | validation "
                    f"{format_metrics(val, ks)}" + (" *" if loop.best_epoch == epoch else "")
                )
            loop.next_epoch = epoch + 1
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            paused = (
                max_epochs_this_process is not None
                and epoch + 1 - first_epoch >= max_epochs_this_process
                and not loop.stopped
                and epoch + 1 < cfg.train.epochs
            )
            if epoch % cfg.train.test_step == 0 or loop.stopped or paused:
                meta = {"loop": loop.__dict__}
                if loop.best_epoch == epoch:
                    best.save(epoch, best_params, meta)
                latest.save(epoch, train_state(), meta)
            epoch += 1
            if paused:
                break
    bar.close()
    if paused:
        latest.close()
        best.close()
        log(f"paused after epoch {loop.next_epoch - 1}; continue with --resume")
        return {"status": "paused", "next_epoch": loop.next_epoch}

    val = evaluate(best_params, val_task)
    test = evaluate(best_params, test_task)
    log(f"[best epoch {loop.best_epoch}] test {format_metrics(test, ks)}")
    results = {
        "status": "finished",
        "dataset": cfg.data.name,
        "backbone": cfg.model.backbone,
        "method": cfg.method,
        "best_epoch": loop.best_epoch,
        "epochs_run": loop.next_epoch,
        "stopped_early": loop.stopped,
        "rollbacks": loop.rollbacks,
        "val": val,
        "test": test,
        "recall_denominator": cfg.eval.recall_denominator,
        "train_seconds": loop.train_seconds,
        "wall_seconds_this_process": time.perf_counter() - wall_start,
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
        results["plots"] = _draw_plots(workdir, cfg, fns, best_params, arrays, log)
    if primary:
        (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    latest.close()
    best.close()
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
    fns, arrays, params, opt_state = make_step_functions(cfg, data)
    slot = CheckpointSlot(slot_dir)
    try:
        if which == "best":
            params, _ = slot.restore(params)
        else:
            shapes = jax.eval_shape(fns.method_epoch_state, params, arrays, jax.random.key(0))
            template = (params, opt_state)
            if shapes:
                method_state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
                template = (params, opt_state, method_state)
            params = slot.restore(template)[0][0]
    finally:
        slot.close()
    return cfg, data, fns, arrays, params
