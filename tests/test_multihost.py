"""Two processes over loopback (jax.distributed, CPU backend with Gloo collectives) train as one
process does: the same losses, validation metrics, best epoch and test metrics.

Each process holds two fake CPU devices, so the two-process run trains on a 2 × 2 mesh (data ×
model: the tables split by rows across the processes); the single-process run uses one device.
Both go through the trainer (checkpoints included).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

WORKER = Path(__file__).with_name("multihost_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JAX_PLATFORMS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _launch(workdir: Path, port: int, n: int, rank: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(workdir), str(port), str(n), str(rank)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, what: str) -> str:
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{what} timed out:\n{out[-3000:]}")
    assert proc.returncode == 0, f"{what} failed:\n{out[-3000:]}"
    return out


def _losses(workdir: Path) -> np.ndarray:
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    return np.asarray([x["train"]["loss"] for x in lines])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multihost")
    single = root / "single"
    _finish(_launch(single, 0, 1, 0), "the single-process run")
    multi = root / "multi"
    port = _free_port()
    procs = [_launch(multi, port, 2, rank) for rank in range(2)]
    outputs = [_finish(p, f"process {rank}") for rank, p in enumerate(procs)]
    return single, multi, outputs


def test_two_processes_train_like_one(runs):
    single, multi, outputs = runs
    a = json.loads((single / "results.json").read_text())
    b = json.loads((multi / "results.json").read_text())
    assert b["status"] == "finished" and len(b["devices"]) == 4 and len(a["devices"]) == 1
    assert (a["best_epoch"], a["epochs_run"]) == (b["best_epoch"], b["epochs_run"])
    splits = ("val", "test")
    chex.assert_trees_all_close(
        {s: b[s] for s in splits}, {s: a[s] for s in splits}, rtol=0.0, atol=1e-6
    )
    np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
    assert len(_losses(single)) == 5


def test_every_process_follows_the_loop(runs):
    _, multi, outputs = runs
    # Both processes log the same evaluations (they compute them together); one writes files.
    marks = ("[epoch", "[best")
    logged = [[line for line in out.splitlines() if line.startswith(marks)] for out in outputs]
    assert logged[0] == logged[1] and len(logged[0]) == 4  # epochs 0, 2, 4 and the test
    # The start-up line names the mesh and where each table lives.
    mesh_line = [line for line in outputs[0].splitlines() if line.startswith("mesh ")]
    assert len(mesh_line) == 1 and "4 device(s), 2 process(es)" in mesh_line[0]
    for table in ("['user_emb'] (256, 16)", "['item_emb'] (192, 16)"):
        assert f"{table}: rows split over model" in mesh_line[0]
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["best", "latest"]
    assert not list(multi.glob(".write_test*"))
