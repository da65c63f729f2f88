"""Train a few epochs on one device and on fake-device meshes; save what each produced.

Run as a script, in a fresh process, so that the fake CPU devices exist before JAX starts its
backends (``chex.set_n_cpu_devices(8)`` below, the first thing the script does)::

    python tests/multidevice_worker.py OUT

For LightGCN and DaRec-on-LightGCN and for each layout — one device (no mesh), and meshes
(data × model) 8×1, 1×8 and 2×4 (the model axis splits the user and item tables by rows), and
2×4 again with the transposed-graph backward of the graph products — the same
initial state trains ``EPOCHS`` epochs with the same keys, then is evaluated on the validation
split. ``OUT`` (an .npz) receives each run's per-epoch losses, final parameters, metrics, the
placement of the tables, and how many times each jitted function compiled.
"""

from __future__ import annotations

import contextlib
import os
import sys

import chex

chex.set_n_cpu_devices(8)  # sets --xla_force_host_platform_device_count, keeps other XLA_FLAGS

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from darec_jax import config as config_lib  # noqa: E402
from darec_jax.eval.ranking import _evaluate_hits, evaluate_embeddings, prepare_split  # noqa: E402
from darec_jax.parallel import make_mesh  # noqa: E402
from darec_jax.train.step import epoch_key, make_step_functions  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.toy import random_dataset, with_llm_embeddings  # noqa: E402

EPOCHS = 3
# name -> (data, model) devices; None = one device, no mesh. "2x4t": the 2x4 mesh with the
# graph products' transposed-graph backward (model.spmm_impl=transposed).
LAYOUTS = {"single": None, "8x1": (8, 1), "1x8": (1, 8), "2x4": (2, 4), "2x4t": (2, 4)}


def _config(method: str, layout: str):
    overrides = {
        "model.spmm_impl": "transposed" if layout.endswith("t") else "auto",
        "model.embedding_size": 16,
        "model.layer_num": 2,
        "train.batch_size": 256,
        "train.seed": 7,
        "eval.user_chunk": 64,
    }
    if method == "darec":
        overrides.update({"darec.num_clusters": 4, "darec.pair_sample": 64})
    return config_lib.build_config("synthetic", "lightgcn", method, overrides)


def run(method: str, layout: str, data) -> dict[str, np.ndarray]:
    cfg = _config(method, layout)
    shape = LAYOUTS[layout]
    mesh = None if shape is None else make_mesh(*shape)
    with contextlib.nullcontext() if mesh is None else jax.set_mesh(mesh):
        fns, arrays, train_state = make_step_functions(cfg, data, mesh)
        params = train_state.params
        out: dict[str, np.ndarray] = {}
        out["user_table_shards"] = np.asarray(_distinct_shards(params["backbone"]["user_emb"]))
        losses = []
        for epoch in range(EPOCHS):
            key = epoch_key(cfg.train.seed, epoch)
            train_state, terms = fns.jit_epoch(train_state, arrays, key)
            losses.append([float(terms[k]) for k in sorted(terms)])
        params = train_state.params
        out["losses"] = np.asarray(losses)
        out["term_names"] = np.asarray(sorted(terms))
        after = _distinct_shards(params["backbone"]["user_emb"])
        out["user_table_shards_after"] = np.asarray(after)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
            out["param" + jax.tree_util.keystr(path)] = np.asarray(leaf)
        task = prepare_split(data, "val", cfg.eval.user_chunk)
        metrics = evaluate_embeddings(*fns.jit_scoring_embeddings(params, arrays), task)
        metrics = evaluate_embeddings(*fns.jit_scoring_embeddings(params, arrays), task)
        for name, value in metrics.items():
            out["metric_" + name] = np.asarray(value)
        out["compiles_epoch"] = np.asarray(fns.jit_epoch._cache_size())
        # The partitioned program: cross-device reductions appear once the work is split.
        hlo = fns.jit_epoch.lower(train_state, arrays, key).compile().as_text()
        out["all_reduces_epoch"] = np.asarray(hlo.count(" all-reduce("))
        out["compiles_scoring"] = np.asarray(fns.jit_scoring_embeddings._cache_size())
    return out


def _distinct_shards(x: jax.Array) -> int:
    """How many different row blocks of ``x`` the devices hold (1 = replicated)."""
    return len({str(s.index) for s in x.addressable_shards})


def main(path: str) -> None:
    assert jax.device_count() == 8, jax.devices()
    data = with_llm_embeddings(random_dataset(n_users=256, n_items=192, per_user=8), dim=48)
    results = {}
    before = _evaluate_hits._cache_size()
    for method in ("none", "darec"):
        for layout in LAYOUTS:
            for name, value in run(method, layout, data).items():
                results[f"{method}/{layout}/{name}"] = value
    # One evaluation program per (mesh, method's embedding width) — not one per call.
    results["compiles_evaluate"] = np.asarray(_evaluate_hits._cache_size() - before)
    np.savez(path, **results)


if __name__ == "__main__":
    main(sys.argv[1])
