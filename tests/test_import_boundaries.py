"""Import boundaries: the PyTorch reference never imports JAX or the rest of the package, the
JAX side never imports torch, and ``darec_jax.crosscheck`` is the only place both meet.

Each check imports every module of one side in a fresh interpreter and lists what got loaded,
so a function-level import executed at import time is caught as well as a top-level one."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import darec_jax

pytest.importorskip("torch")

_LOADED = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def _modules(prefix: str) -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(darec_jax.__path__, "darec_jax.")
        if m.name == prefix or m.name.startswith(prefix + ".")
    ]


def _loaded_after_importing(names: list[str]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", _LOADED, *names], capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout))


def test_the_reference_imports_neither_jax_nor_the_jax_package():
    names = _modules("darec_jax.reference")
    assert len(names) > 10  # every reference file, not an empty walk
    loaded = _loaded_after_importing(names)
    assert "torch" in loaded
    foreign = {
        m
        for m in loaded
        if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax", "jraph", "chex")
        or (m.startswith("darec_jax.") and not m.startswith("darec_jax.reference"))
    }
    assert not foreign, sorted(foreign)


def test_the_jax_side_never_imports_torch():
    names = [
        m
        for m in _modules("darec_jax")
        if not m.startswith(("darec_jax.reference", "darec_jax.crosscheck"))
    ]
    assert "darec_jax.train.trainer" in names and "darec_jax.cli" in names
    loaded = _loaded_after_importing(names)
    assert "jax" in loaded
    assert "torch" not in loaded
