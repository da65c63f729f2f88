"""SIGINT and SIGTERM stop a run cleanly at the end of an epoch: its state saved, one message
naming the epoch and the exact --resume command, exit status 130 / 143, no traceback; resuming
gives the same final metrics as a run never interrupted."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "--dataset", "synthetic", "--method", "none", "--no-progress", "--no-plots",
    "--set", "data.synthetic.n_users=150", "--set", "data.synthetic.n_items=100",
    "--set", "train.batch_size=128", "--set", "train.epochs=300",
    "--set", "train.patience=1000", "--set", "train.test_step=50",
]  # fmt: skip


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _epochs_logged(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _interrupt(args: list[str], workdir: Path, signum: int, after: int) -> tuple[int, str]:
    """Start the run, send ``signum`` once ``after`` more epochs are logged; (rc, stderr)."""
    start = _epochs_logged(workdir)
    proc = _start(args)
    deadline = time.monotonic() + 240
    while _epochs_logged(workdir) < start + after:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run logged no epochs"
        time.sleep(0.02)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    return proc.returncode, err


def _resume_args(stderr: str) -> list[str]:
    line = stderr.strip().splitlines()[-1].strip()
    assert line.startswith("python -m experiments.run ") and line.endswith("--resume"), stderr
    return shlex.split(line)[3:]


def test_sigint_then_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path):
    # The uninterrupted run, in this process (the same config as the command line's).
    from darec_jax.cli import config_from_args, run_parser
    from darec_jax.train.trainer import train_and_evaluate

    cfg = config_from_args(run_parser().parse_args(ARGS))
    expected = train_and_evaluate(
        cfg, tmp_path / "straight", progress=False, log=lambda _: None, plots=False
    )

    work = tmp_path / "interrupted"
    args = [*ARGS, "--workdir", str(work)]
    rc, err = _interrupt(args, work, signal.SIGINT, after=2)
    assert rc == 130, err
    assert "Traceback" not in err and "stopped by SIGINT; the state at the end of epoch" in err
    stopped_at = _epochs_logged(work)
    assert 2 <= stopped_at < 300
    assert f"end of epoch {stopped_at - 1} is saved" in err  # the epoch it names is the last run

    rc, err = _interrupt(_resume_args(err), work, signal.SIGTERM, after=2)
    assert rc == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    assert _epochs_logged(work) > stopped_at

    final = subprocess.run(
        [sys.executable, "-m", "experiments.run", *_resume_args(err)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr
    got = json.loads((work / "results.json").read_text())
    assert got["best_epoch"] == expected["best_epoch"]
    assert got["test"] == expected["test"] and got["val"] == expected["val"]
    lines = [json.loads(x)["epoch"] for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert lines == list(range(300))  # every epoch logged once
