"""A run's folder: what may be started or resumed there, and the files written into it.

    config.json      the resolved config
    metrics.jsonl    one JSON line per epoch (mean loss terms; validation metrics when evaluated)
    checkpoints/     Orbax checkpoints (:mod:`darec_jax.train.checkpoint`)
    results.json     validation and test metrics of the best state, best epoch, times, ...

Only process 0 writes the files; every process reads the same checks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from darec_jax import config as config_lib
from darec_jax.config import Config
from darec_jax.errors import ConfigError, DarecError
from darec_jax.train.checkpoint import CheckpointSlot


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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class RunDirectory:
    """The folder of one run, checked for ``resume`` before anything is loaded or written."""

    def __init__(self, workdir: str | os.PathLike, resume: bool, primary: bool, process: int = 0):
        self.path = Path(workdir)
        self.primary = primary
        self.checkpoints = self.path / "checkpoints"
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        latest = self.checkpoints / "latest"
        if not resume and has_checkpoint(latest):
            raise ConfigError(
                f"{self.path} already holds a run's checkpoints; pass --resume to continue it, "
                "or choose another --workdir (nothing was changed)"
            )
        if resume and not has_checkpoint(latest):
            raise ConfigError(f"--resume: no checkpoint to resume from in {latest}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write_test.{process}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise DarecError(
                f"cannot write to the work directory {self.path}: {exc}; choose another --workdir"
            ) from exc

    def check_same_config(self, cfg: Config) -> None:
        """A resumed run must use the config it was started with (the mesh aside: it changes
        where arrays live, not what is computed, so a run may resume on another one)."""
        if not self.config_path.exists():
            return
        saved = json.loads(self.config_path.read_text())
        try:  # keys added since the run started compare as their defaults
            saved = json.loads(config_lib.to_json(config_lib.from_dict(saved)))
        except DarecError:
            pass
        a, b = _flat(saved), _flat(json.loads(config_lib.to_json(cfg)))
        diff = sorted(
            k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and not k.startswith("mesh.")
        )
        if diff:
            details = "; ".join(f"{k}: saved {a.get(k)!r}, now {b.get(k)!r}" for k in diff)
            raise ConfigError(
                f"--resume with a different config than the run in {self.path}: {details}. "
                "Resume with the same options, or start a new --workdir."
            )

    def write_config(self, cfg: Config) -> None:
        if self.primary:
            self.config_path.write_text(config_lib.to_json(cfg) + "\n")

    def start_log(self, keep_before_epoch: int) -> None:
        """Keep the log lines of epochs before ``keep_before_epoch`` (those the checkpoint we
        continue from covers); 0 starts a new log."""
        if not self.primary or not self.metrics_path.exists():
            return
        kept = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", -1) < keep_before_epoch
        ]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict[str, Any]) -> None:
        """Append one line to ``metrics.jsonl`` (process 0)."""
        if self.primary:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def write_results(self, results: dict[str, Any]) -> None:
        if self.primary:
            (self.path / "results.json").write_text(json.dumps(results, indent=2) + "\n")
