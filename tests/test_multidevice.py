"""Several devices give the results of one: fake CPU devices, meshes 8×1, 1×8 and 2×4 (and 2×4
with the transposed-graph backward of the graph products).

The work runs in a child process (``tests/multidevice_worker.py``, which starts with
``chex.set_n_cpu_devices(8)``) because the device count is fixed when JAX starts its backends,
and this pytest process has started them long before.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import chex
import numpy as np
import pytest

WORKER = Path(__file__).with_name("multidevice_worker.py")
# data x model; "t": with model.spmm_impl=transposed.
MESHES = ("8x1", "1x8", "2x4", "2x4t")
METHODS = ("none", "darec")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("multidevice") / "runs.npz"
    env = dict(os.environ)
    env.pop("JAX_PLATFORMS", None)
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def _saved(runs, method, layout, kind):
    """One run's saved ``param…`` or ``metric_…`` arrays, keyed by the rest of their names."""
    prefix = f"{method}/{layout}/{kind}"
    return {k[len(prefix) :]: v for k, v in runs.items() if k.startswith(prefix)}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mesh", MESHES)
def test_mesh_matches_one_device(runs, method, mesh):
    single = f"{method}/single"
    here = f"{method}/{mesh}"
    # Every loss term of every epoch.
    np.testing.assert_array_equal(runs[f"{single}/term_names"], runs[f"{here}/term_names"])
    np.testing.assert_allclose(runs[f"{here}/losses"], runs[f"{single}/losses"], rtol=1e-5)
    # Parameters after the epochs (each relative to its tensor's scale).
    ref, got = _saved(runs, method, "single", "param"), _saved(runs, method, mesh, "param")
    assert ref
    chex.assert_trees_all_equal_shapes(got, ref)  # no silent broadcast in the bound below
    for name in ref:
        scale = np.max(np.abs(ref[name])) + 1e-12
        err = np.max(np.abs(got[name] - ref[name])) / scale
        assert err < 1e-5, f"{name}: relative difference {err:.2e}"
    # Validation metrics of the trained state.
    metrics = _saved(runs, method, "single", "metric_")
    assert len(metrics) == 6
    chex.assert_trees_all_close(
        _saved(runs, method, mesh, "metric_"), metrics, rtol=1e-7, atol=1e-6
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mesh", MESHES)
def test_mesh_places_and_partitions(runs, method, mesh):
    data_axis, model_axis = (int(n) for n in mesh.rstrip("t").split("x"))
    here = f"{method}/{mesh}"
    # The model axis splits the 256-row user table into that many row blocks, before and after
    # the compiled epoch (the epoch keeps the placement it was given).
    assert int(runs[f"{here}/user_table_shards"]) == model_axis
    assert int(runs[f"{here}/user_table_shards_after"]) == model_axis
    assert int(runs[f"{method}/single/user_table_shards"]) == 1
    # A partitioned program reduces across devices; the one-device program has nothing to reduce.
    assert int(runs[f"{here}/all_reduces_epoch"]) > 0
    assert int(runs[f"{method}/single/all_reduces_epoch"]) == 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layout", ("single", *MESHES))
def test_each_function_compiles_once(runs, method, layout):
    for fn in ("epoch", "scoring"):  # the epoch computes the method's per-epoch state itself
        assert int(runs[f"{method}/{layout}/compiles_{fn}"]) == 1, fn


def test_evaluation_compiles_once_per_mesh(runs):
    # Called twice per run, for both methods (same embedding width): one program per mesh (the
    # two 2x4 layouts share theirs; the graph products are not part of the evaluation).
    assert int(runs["compiles_evaluate"]) == 1 + len({m.rstrip("t") for m in MESHES})
