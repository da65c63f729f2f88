"""What every benchmark or reproduction artifact records about how it was made: the commit (and
whether the working tree had uncommitted changes), the command line, and the machine."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """HEAD's hash, ``+dirty`` when tracked files outside ``benchmarks/`` differ from it;
    ``unknown`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            # Artifacts written under benchmarks/ by earlier runs are not code changes.
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks"],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def provenance(module: str, args: list[str]) -> dict[str, Any]:
    """{commit, command, machine} for an artifact made by ``python -m module args...``."""
    return {
        "commit": git_commit(),
        "command": f"python -m {module} {shlex.join(args)}".strip(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
    }


def made_by(made: dict[str, Any]) -> str:
    """The sentence an artifact opens with: its command, commit and machine."""
    m = made["machine"]
    return (
        f"Made by `{made['command']}` at commit `{made['commit']}` "
        f"({m['cpu_count']} CPU cores, {m['processor']})"
    )
