"""Device meshes, shardings and the multi-controller runtime.

One mesh with two axes, both of *Auto* type (XLA's partitioner propagates shardings from a few
annotations):

* ``data`` — the triples of each batch, the edge list of every graph product (each device
  gathers and weighs its slice of the edges; XLA all-reduces the partial sums), and the users of
  each evaluation chunk;
* ``model`` — embedding tables (and the LLM embeddings) split by rows, for tables larger than one
  device. A table is split only when its row count is a multiple of the axis size (JAX arrays
  need equal shards); the others stay replicated and :func:`describe_placement` says so.

Everything else (MLPs, optimiser scalars, the graph's index arrays) is replicated. The mesh is
entered with ``jax.set_mesh`` around tracing and calling, and the model code marks shardings with
:func:`constrain`, which does nothing when no mesh (or a one-device mesh) is active — the same
functions serve one device and many, and compile once per mesh.

Several processes (hosts) join one runtime through :func:`initialize_distributed`
(``jax.distributed``); each then holds its devices' shards of every array, built with
:func:`place` from host data that every process reads identically, and computes only its share of
every batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from darec_jax.errors import ConfigError

DATA = "data"
MODEL = "model"

__all__ = [
    "DATA",
    "MODEL",
    "P",
    "constrain",
    "describe_placement",
    "initialize_distributed",
    "make_mesh",
    "mesh_size",
    "place",
    "tree_shardings",
]


def make_mesh(data: int = 0, model: int = 1, devices: Iterable[jax.Device] | None = None) -> Mesh:
    """A (data × model) mesh over ``devices`` (default: every device of every process).

    Args:
      data: devices along the data axis; 0 = all devices left after the model axis.
      model: devices along the model axis (row-split tables).
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if model < 1 or data < 0:
        raise ConfigError("mesh.model must be >= 1 and mesh.data >= 0")
    if n % model:
        raise ConfigError(f"mesh.model={model} does not divide the {n} available device(s)")
    data = data or n // model
    if data * model > n:
        raise ConfigError(
            f"a {data}x{model} mesh needs {data * model} devices; {n} available "
            "(on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts)"
        )
    grid = np.asarray(devices[: data * model], dtype=object).reshape(data, model)
    return Mesh(grid, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def mesh_size(mesh: Mesh | None = None) -> int:
    """Devices in ``mesh``, or in the mesh active at trace time (1 when none is)."""
    if mesh is None:
        mesh = jax.sharding.get_abstract_mesh()
        if mesh.empty:
            return 1
    return int(np.prod(list(mesh.shape.values()), dtype=np.int64))


def constrain(x: jax.Array, *spec: Any) -> jax.Array:
    """``with_sharding_constraint(x, P(*spec))`` under an active multi-device mesh, else ``x``.

    An axis named in ``spec`` that the mesh lacks (or of size 1) is dropped, and so is one longer
    than the dimension it would split. Inside a computation a dimension need not be a multiple of
    the axis size (XLA pads the last shard), so edge lists of any length are split.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh_size(mesh) == 1:
        return x
    axes = []
    for dim, axis in enumerate(spec):
        size = mesh.shape.get(axis, 1) if axis is not None else 1
        axes.append(axis if axis is not None and 1 < size <= x.shape[dim] else None)
    if all(a is None for a in axes):
        return x  # nothing to split: leave the placement to XLA rather than force replication
    return jax.lax.with_sharding_constraint(x, P(*axes))


def replicate(x: jax.Array) -> jax.Array:
    """``x`` replicated on every device of an active multi-device mesh (as :func:`tree_shardings`
    places every array that is not a table), else ``x``. For state a jitted function returns to
    be called with again: an output placed otherwise would compile the function a second time."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh_size(mesh) == 1:
        return x
    return jax.lax.with_sharding_constraint(x, P())


def _leaf_spec(leaf: Any, mesh: Mesh, table_rows: frozenset[int]) -> P:
    shape = getattr(leaf, "shape", ())
    rows = mesh.shape[MODEL]
    if rows > 1 and len(shape) == 2 and shape[0] in table_rows and shape[0] % rows == 0:
        return P(MODEL, None)
    return P()


def tree_shardings(tree: Any, mesh: Mesh, table_rows: Iterable[int] = ()) -> Any:
    """A NamedSharding per leaf: 2-D arrays whose row count is in ``table_rows`` (the user,
    item and node counts) split by rows over ``model`` when it divides them; all else
    replicated."""
    rows = frozenset(int(r) for r in table_rows)
    return jax.tree.map(lambda x: NamedSharding(mesh, _leaf_spec(x, mesh, rows)), tree)


def place(tree: Any, shardings: Any) -> Any:
    """Each leaf as a global array with its sharding, built from this process's copy of the
    leaf (every process must hold the same values); works across processes, where
    ``device_put`` of a host array cannot address other hosts' devices."""

    def put(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)  # already a global array: reshard
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree, shardings)


def describe_placement(tree: Any) -> list[str]:
    """One line per 2-D array of ``tree`` (placed global arrays): its path, shape, and whether
    its rows are split over the model axis or it is replicated."""
    lines = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        shape = tuple(getattr(leaf, "shape", ()))
        if len(shape) != 2:
            continue
        spec = getattr(getattr(leaf, "sharding", None), "spec", P())
        split = len(spec) > 0 and spec[0] == MODEL
        where = "rows split over model" if split else "replicated"
        lines.append(f"{jax.tree_util.keystr(path)} {shape}: {where}")
    return lines


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
) -> bool:
    """Join JAX's multi-controller runtime (``jax.distributed.initialize``) when asked to.

    Arguments not given come from the environment: ``DAREC_COORDINATOR_ADDRESS`` (host:port of
    process 0), ``DAREC_NUM_PROCESSES``, ``DAREC_PROCESS_ID``. With none set anywhere nothing
    happens (a single-process run), unless ``DAREC_DISTRIBUTED=auto``, which lets JAX detect a
    cluster itself (TPU pod slices, SLURM, Open MPI). Must run before any other JAX call.

    Returns whether the runtime was initialised.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("DAREC_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("DAREC_NUM_PROCESSES"):
        num_processes = int(env["DAREC_NUM_PROCESSES"])
    if process_id is None and env.get("DAREC_PROCESS_ID"):
        process_id = int(env["DAREC_PROCESS_ID"])
    if coordinator_address is None and num_processes is None and process_id is None:
        if env.get("DAREC_DISTRIBUTED", "").lower() == "auto":
            jax.distributed.initialize()
            return True
        return False
    if coordinator_address is None or num_processes is None or process_id is None:
        raise ConfigError(
            "a multi-process run needs all of --coordinator-address (host:port of process 0), "
            "--num-processes and --process-id (or DAREC_COORDINATOR_ADDRESS, "
            "DAREC_NUM_PROCESSES, DAREC_PROCESS_ID)"
        )
    if not 0 <= process_id < num_processes:
        raise ConfigError(f"--process-id must be in [0, {num_processes}); got {process_id}")
    # CPU devices of several processes talk over Gloo (TCP); GPUs and TPUs use their own.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
    )
    return True
