"""Speed and memory: our JAX code beside our PyTorch reference, same data, same machine, same run.

    python -m experiments.benchmark --dataset yelp --data-dir data/yelp

Each side runs in its own subprocess, one after the other (never side by side: on a 2-core machine
either framework slows several-fold when the other runs beside it). Each side times a number of
training epochs and full evaluations after a warm-up and reports medians; peak memory is the
side's process peak RSS. The parent prints a Markdown table with the JAX / PyTorch ratios and
saves it (and the raw JSON) under ``--out``.

Per method (``--methods``): the training seconds per epoch of LightGCN with each alignment method,
JAX and PyTorch reference, each relative to ``none`` on its own side::

    python -m experiments.benchmark --dataset yelp --data-dir data/yelp \
        --methods none rlmrec-con rlmrec-gen darec --epochs 5

The LLM embeddings are stand-ins (seeded standard normal float32 of width ``--llm-dim``, the same
arrays on both sides; any a dataset has are replaced): a speed benchmark, not an accuracy claim.
Each (side, method) runs alone in its own subprocess; the table goes to
``speed_<dataset>_methods.md`` (and ``.json``) under ``--out``, and the LightGCN table above is
not run.

Per backbone (``--backbones``): each backbone with ``--method none`` and its reference
hyper-parameters, training seconds per epoch and seconds per full evaluation on both sides::

    python -m experiments.benchmark --dataset yelp --data-dir data/yelp \
        --backbones lightgcn gccf sgl simgcl dccf autocf --epochs 3 --evals 3

(table ``speed_<dataset>_backbones.md``).

Scaling (``--scaling``): LightGCN (``--method none``, Yelp's hyper-parameters) on random
interaction graphs of 10^5 to 10^7 directed edges (about 15 interactions per user, as many items
as users), each size alone in its own process: seconds per training step and per epoch, seconds
per full evaluation, peak memory, and the bytes-moved floor of a step beside the machine's
measured memory bandwidth::

    python -m experiments.benchmark --scaling --scaling-edges 1e5 1e6 1e7

(table ``scaling.md``). Epochs of more than ``SCALING_MAX_STEPS`` steps are timed over their
first steps and projected (steps × seconds per step); evaluations of more than
``SCALING_EVAL_USERS`` users over a sample of users and projected (time is linear in users).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from darec_jax.config import BACKBONES


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


METHODS = ("none", "rlmrec-con", "rlmrec-gen", "darec")
# Seed of the stand-in LLM embeddings (the same arrays on both sides).
LLM_SEED = 0


def _load(args):
    from darec_jax.data import load_dataset

    return load_dataset(args.dataset, data_dir=args.data_dir, download=False)


def with_standin_llm(data, llm_dim: int, seed: int = LLM_SEED):
    """``data`` with stand-in LLM embeddings: standard normal float32, [U, llm_dim] then
    [I, llm_dim] from one seeded generator (replacing any the dataset has)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    user_emb = rng.standard_normal((data.n_users, llm_dim), dtype=np.float32)
    item_emb = rng.standard_normal((data.n_items, llm_dim), dtype=np.float32)
    return dataclasses.replace(data, user_emb=user_emb, item_emb=item_emb)


def _time_repeats(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class _JaxRun:
    """One jitted training run of ``cfg`` on ``data``: ``epoch()`` runs one epoch to
    completion, advances :attr:`state` (a :class:`~darec_jax.train.step.TrainState`) and returns
    the epoch's mean terms; ``evaluate()`` is a full validation pass of the current state."""

    def __init__(self, cfg, data, seed: int = 0):
        import jax

        from darec_jax.eval import prepare_split
        from darec_jax.train.step import make_step_functions

        jax.config.update("jax_default_matmul_precision", cfg.train.matmul_precision)
        self.cfg, self.seed = cfg, seed
        self.fns, self.arrays, self.state = make_step_functions(cfg, data)
        self._task = (
            None
            if data.val.users.shape[0] == 0
            else prepare_split(data, "val", cfg.eval.user_chunk)
        )

    def epoch(self) -> dict[str, float]:
        import jax

        from darec_jax.train.step import epoch_key

        key = epoch_key(self.seed, int(self.state.epoch))
        self.state, terms = self.fns.jit_epoch(self.state, self.arrays, key)
        return {k: float(v) for k, v in jax.device_get(terms).items()}

    def evaluate(self) -> dict[str, float]:
        from darec_jax.eval import evaluate_embeddings

        fu, fi = self.fns.jit_eval_embeddings(self.state.params, self.arrays)
        return evaluate_embeddings(fu, fi, self._task, self.cfg.eval.ks)


def run_jax(args, backbone: str = "lightgcn", data=None) -> dict:
    """Training seconds per epoch and seconds per full validation pass of ``backbone`` with
    ``--method none``, JAX side (``data``: default ``--dataset``)."""
    import jax

    from darec_jax import config as config_lib

    data = _load(args) if data is None else data
    cfg = config_lib.build_config(args.dataset, backbone, "none")
    run = _JaxRun(cfg, data)
    fns, epoch, evaluate = run.fns, run.epoch, run.evaluate

    first_epoch = _time_repeats(epoch, 1)[0]  # includes compilation
    first_eval = _time_repeats(evaluate, 1)[0]
    epochs = _time_repeats(epoch, args.epochs)
    evals = _time_repeats(evaluate, args.evals)
    return {
        "side": "jax",
        "backbone": backbone,
        "version": jax.__version__,
        "device": str(jax.devices()[0]),
        "steps_per_epoch": fns.n_batches,
        "epoch_seconds": epochs,
        "eval_seconds": evals,
        "first_epoch_seconds": first_epoch,
        "first_eval_seconds": first_eval,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _torch_model(cfg, data):
    """The reference model of ``cfg``'s backbone and method with the JAX config's
    hyper-parameters."""
    from darec_jax.crosscheck.factory import build_reference

    return build_reference(cfg, data)[0]


def run_torch(args, pipeline: str = "vectorised", backbone: str = "lightgcn", data=None) -> dict:
    """The reference side of :func:`run_jax` (``pipeline``: the vectorised data path, or
    RLMRec's sequential one, LightGCN only). The reference draws its own randomness (edge
    dropout, noise, AutoCF's resampling through its trainer) from the torch generator."""
    import numpy as np
    import torch

    from darec_jax import config as config_lib
    from darec_jax.reference import evaluate, make_optimizer
    from darec_jax.reference.autocf import AutoCFTrainer
    from darec_jax.reference.train import train_epoch

    if pipeline != "vectorised" and backbone != "lightgcn":
        raise ValueError("RLMRec's data path is timed for LightGCN only")
    torch.manual_seed(0)
    data = _load(args) if data is None else data
    cfg = config_lib.build_config(args.dataset, backbone, "none")
    model = _torch_model(cfg, data)
    optim = make_optimizer(model, cfg.train.lr)
    rng = np.random.RandomState(0)
    trainer = AutoCFTrainer(model, optim) if backbone == "autocf" else None

    def epoch():
        if trainer is not None:
            trainer.train_epoch(
                data.train.users,
                data.train.items,
                data.n_items,
                rng,
                batch_size=cfg.train.batch_size,
            )
            return
        train_epoch(
            model,
            optim,
            data.train.users,
            data.train.items,
            data.n_items,
            rng,
            batch_size=cfg.train.batch_size,
            pipeline=pipeline,
        )

    def run_eval():
        return evaluate(
            model,
            data.n_items,
            data.train.users,
            data.train.items,
            data.val.users,
            data.val.items,
            cfg.eval.ks,
        )

    first_epoch = _time_repeats(epoch, 1)[0]
    first_eval = _time_repeats(run_eval, 1)[0]
    epochs = _time_repeats(epoch, args.epochs)
    evals = _time_repeats(run_eval, args.evals)
    return {
        "side": "torch" if pipeline == "vectorised" else "torch-rlmrec",
        "backbone": backbone,
        "version": torch.__version__,
        "steps_per_epoch": -(-data.train.nnz // cfg.train.batch_size),
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "epoch_seconds": epochs,
        "eval_seconds": evals,
        "first_epoch_seconds": first_epoch,
        "first_eval_seconds": first_eval,
        "peak_rss_mb": _peak_rss_mb(),
    }


def matmul_rate(repeats: int = 5) -> dict:
    """The machine's dense float32 matmul rate in JAX (highest precision), measured now: the
    projection shapes of the alignment methods on Yelp-sized inputs, [4096, 1536] @ [1536, 784]
    and [11091, 1536] @ [1536, 784]; GFLOP/s from the median of ``repeats`` calls each, the best
    shape reported."""
    import jax
    import jax.numpy as jnp

    rates = {}
    for rows in (4096, 11091):
        a = jax.random.normal(jax.random.key(0), (rows, 1536), jnp.float32)
        b = jax.random.normal(jax.random.key(1), (1536, 784), jnp.float32)
        f = jax.jit(lambda a, b: a @ b)
        jax.block_until_ready(f(a, b))
        secs = statistics.median(
            _time_repeats(lambda f=f, a=a, b=b: jax.block_until_ready(f(a, b)), repeats)
        )
        rates[f"{rows}x1536x784"] = 2.0 * rows * 1536 * 784 / secs / 1e9
    return {"gflops": max(rates.values()), "by_shape": rates}


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def alignment_work(fns, arrays, params, repeats: int = 5) -> dict:
    """The alignment method's own work, counted by XLA's cost analysis of the compiled
    programs: one step's forward and backward of the method's terms (value and gradient with
    respect to the method's parameters and the final embeddings; batch 0 of an epoch, its
    draws), and the per-epoch state (DaRec's clustering, with its clean forward). Also the
    median seconds of the jitted step function alone."""
    import jax

    from darec_jax.train.step import epoch_key

    # The epoch's keys as the epoch splits them: batches, steps, clustering.
    k_batches, k_steps, k_method_state = jax.random.split(epoch_key(0, 0), 3)
    batch = jax.tree.map(lambda x: x[0], fns.epoch_batches(k_batches, arrays))
    state = fns.jit_method_epoch_state(params, arrays, k_method_state)
    step_key = jax.random.split(k_steps, fns.n_batches)[0]
    inputs = fns.draw_step_inputs(params, step_key, arrays, batch).replace(epoch_state=state)
    draws = inputs.for_method()
    fu, fi = fns.jit_eval_embeddings(params, arrays)
    llm = (arrays.user_llm, arrays.item_llm)
    method = fns.method

    def terms_total(method_params, fu, fi):
        terms = method.terms(method_params, fu, fi, batch, llm, draws)
        return sum(terms[name] for name in method.term_names)

    step = jax.jit(jax.value_and_grad(terms_total, argnums=(0, 1, 2)))
    step_flops = _flops(step.lower(params["method"], fu, fi).compile())
    jax.block_until_ready(step(params["method"], fu, fi))
    seconds = statistics.median(
        _time_repeats(lambda: jax.block_until_ready(step(params["method"], fu, fi)), repeats)
    )
    state_fn = fns.jit_method_epoch_state
    state_flops = _flops(state_fn.lower(params, arrays, k_method_state).compile()) if state else 0.0
    return {
        "step_flops": step_flops,
        "epoch_state_flops": state_flops,
        "epoch_flops": step_flops * fns.n_batches + state_flops,
        "step_seconds": seconds,
    }


def run_jax_method(args, method: str, data=None) -> dict:
    """Training seconds per epoch of LightGCN + ``method``, JAX side (``data``: default
    ``--dataset``), with stand-in LLM embeddings; the first epoch includes compilation and, for
    DaRec, every epoch its re-clustering. For an alignment method also its counted FLOPs per
    epoch and the machine's dense matmul rate, measured in the same process."""
    import jax

    from darec_jax import config as config_lib

    data = with_standin_llm(_load(args) if data is None else data, args.llm_dim)
    cfg = config_lib.build_config(args.dataset, "lightgcn", method)
    run = _JaxRun(cfg, data)
    fns, arrays, epoch = run.fns, run.arrays, run.epoch
    first_epoch = _time_repeats(epoch, 1)[0]  # includes compilation
    epochs = _time_repeats(epoch, args.epochs)
    out = {
        "side": "jax",
        "method": method,
        "version": jax.__version__,
        "device": str(jax.devices()[0]),
        "steps_per_epoch": fns.n_batches,
        "epoch_seconds": epochs,
        "first_epoch_seconds": first_epoch,
    }
    if method != "none":
        out["alignment"] = alignment_work(fns, arrays, run.state.params)
        out["matmul"] = matmul_rate()
    out["peak_rss_mb"] = _peak_rss_mb()
    return out


def _torch_step_inputs(cfg, model, state: dict):
    """The per-step random inputs the reference model of ``cfg.method`` needs (None: none),
    drawn from the global torch generator; DaRec's assignments are read from ``state``."""
    import torch

    if cfg.method == "rlmrec-gen":
        n_nodes, n_seeds = model.n_users + model.n_items, model.num_seeds()
        return lambda batch: {"seeds": torch.randperm(n_nodes)[:n_seeds]}
    if cfg.method != "darec":
        return None
    m = cfg.darec.pair_sample

    def darec_inputs(batch: int) -> dict:
        out = {}
        if cfg.darec.lambda_lo != 0:
            out["user_assign"], out["item_assign"] = state["assign"]
        if m:  # pair subsets as the JAX side draws them: min(m, B) of B, min(m, 2B) of 2B
            out["user_subset"] = torch.randperm(batch)[: min(m, batch)]
            out["item_subset"] = torch.randperm(2 * batch)[: min(m, 2 * batch)]
        return out

    return darec_inputs


def run_torch_method(args, method: str, data=None) -> dict:
    """Training seconds per epoch of LightGCN + ``method``, PyTorch reference (vectorised data
    path), with the same stand-in LLM embeddings; DaRec re-clusters inside every timed epoch
    (k-means from random initial rows)."""
    import numpy as np
    import torch

    from darec_jax import config as config_lib
    from darec_jax.reference import make_optimizer
    from darec_jax.reference.train import train_epoch

    torch.manual_seed(0)
    data = with_standin_llm(_load(args) if data is None else data, args.llm_dim)
    cfg = config_lib.build_config(args.dataset, "lightgcn", method)
    model = _torch_model(cfg, data)
    optim = make_optimizer(model, cfg.train.lr)
    rng = np.random.RandomState(0)
    state: dict = {}
    step_inputs = _torch_step_inputs(cfg, model, state)
    recluster = method == "darec" and cfg.darec.lambda_lo != 0
    k = cfg.darec.num_clusters

    def epoch():
        if recluster:
            state["assign"] = model.recluster(
                cfg.darec.kmeans_iters,
                torch.randperm(data.n_users)[:k],
                torch.randperm(data.n_items)[:k],
            )
        train_epoch(
            model,
            optim,
            data.train.users,
            data.train.items,
            data.n_items,
            rng,
            batch_size=cfg.train.batch_size,
            step_inputs=step_inputs,
        )

    first_epoch = _time_repeats(epoch, 1)[0]
    epochs = _time_repeats(epoch, args.epochs)
    return {
        "side": "torch",
        "method": method,
        "version": torch.__version__,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "steps_per_epoch": -(-data.train.nnz // cfg.train.batch_size),
        "epoch_seconds": epochs,
        "first_epoch_seconds": first_epoch,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _table(res: dict, args) -> str:
    med = statistics.median
    jx, tv, tr = res["jax"], res["torch"], res["torch-rlmrec"]
    rows = [
        ("train seconds / epoch (median)", "epoch_seconds"),
        ("seconds / full evaluation (median)", "eval_seconds"),
        ("first epoch (JAX: with compilation)", "first_epoch_seconds"),
        ("peak memory (RSS, MB)", "peak_rss_mb"),
    ]

    def value(side: dict, key: str) -> float:
        v = side[key]
        return med(v) if isinstance(v, list) else v

    lines = [
        f"LightGCN (`--method none`), {args.dataset}, {args.epochs} timed epochs and "
        f"{args.evals} timed validation passes per side after one warm-up each, each side alone "
        f"in its own process; {os.cpu_count()} CPU cores, {platform.machine()}, JAX "
        f"{jx['version']} ({jx['device']}), PyTorch {tv['version']} ({tv.get('threads')} "
        "threads). PyTorch reference: our reference with a vectorised data path; "
        "+ RLMRec data path: the same model with RLMRec's sequential negative loop and "
        "item-by-item DataLoader.",
        "",
        "| quantity | JAX | PyTorch reference | JAX / reference | reference + RLMRec data "
        "path | JAX / that |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, key in rows:
        a, b, c = value(jx, key), value(tv, key), value(tr, key)
        lines.append(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.3f} | {c:.3f} | {a / c:.3f} |")
    return "\n".join(lines)


def _methods_table(res: dict, args) -> str:
    """Markdown: per method, seconds per epoch on each side and the ratios to ``none``."""
    med = statistics.median
    jx, tr = res["jax"], res["torch"]
    any_jx, any_tr = next(iter(jx.values())), next(iter(tr.values()))
    jax_none = med(jx["none"]["epoch_seconds"]) if "none" in jx else None
    ref_none = med(tr["none"]["epoch_seconds"]) if "none" in tr else None

    def ratio(a: float, b: float | None) -> str:
        return "—" if b is None else f"{a / b:.3f}"

    lines = [
        f"LightGCN with each method, {args.dataset} ({any_jx['steps_per_epoch']} steps per "
        f"epoch), stand-in LLM embeddings (standard normal float32, width {args.llm_dim}, seed "
        f"{LLM_SEED}, the same arrays on both sides); training seconds per epoch, median of "
        f"{args.epochs} timed epochs after one warm-up epoch (JAX: with compilation), each "
        f"(side, method) alone in its own process; {os.cpu_count()} CPU cores, "
        f"{platform.machine()}, JAX {any_jx['version']} ({any_jx['device']}), PyTorch "
        f"{any_tr['version']} ({any_tr.get('threads')} threads). Reference: our PyTorch "
        "reference with the vectorised data path. DaRec re-clusters inside every epoch on both "
        "sides (JAX: k-means++ seeding; reference: random initial rows). Speed only, not "
        "accuracy.",
        "",
        "| method | JAX s/epoch | JAX ÷ JAX none | reference s/epoch | reference ÷ reference "
        "none | JAX ÷ reference |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method in jx:
        a, b = med(jx[method]["epoch_seconds"]), med(tr[method]["epoch_seconds"])
        lines.append(
            f"| {method} | {a:.3f} | {ratio(a, jax_none)} | {b:.3f} | {ratio(b, ref_none)} "
            f"| {a / b:.3f} |"
        )
    align = [m for m in jx if "alignment" in jx[m]]
    if align and jax_none is not None:
        lines += [
            "",
            "Alignment work (JAX): FLOPs of one epoch's alignment terms (forward and backward of "
            "each step's terms, plus the per-epoch clustering), counted by XLA's cost analysis "
            "of the compiled programs; achieved rate = those FLOPs ÷ (the method's epoch − "
            "none's epoch), and ÷ the step function timed alone; the machine's dense matmul "
            "rate measured in the same process (float32, highest precision, the projections' "
            "shapes).",
            "",
            "| method | GFLOP / step | GFLOP / epoch | in-epoch GFLOP/s | alone GFLOP/s | "
            "matmul GFLOP/s | in-epoch ÷ matmul | alone ÷ matmul |",
            "|---|" + "---:|" * 7,
        ]
        for method in align:
            a = jx[method]["alignment"]
            rate = jx[method]["matmul"]["gflops"]
            extra = med(jx[method]["epoch_seconds"]) - jax_none
            in_epoch = a["epoch_flops"] / extra / 1e9 if extra > 0 else float("nan")
            alone = a["step_flops"] / a["step_seconds"] / 1e9
            lines.append(
                f"| {method} | {a['step_flops'] / 1e9:.1f} | {a['epoch_flops'] / 1e9:.0f} | "
                f"{in_epoch:.1f} | {alone:.1f} | {rate:.1f} | {in_epoch / rate:.2f} | "
                f"{alone / rate:.2f} |"
            )
    return "\n".join(lines)


def _backbones_table(res: dict, args) -> str:
    """Markdown: per backbone (``--method none``), seconds per epoch and per evaluation on each
    side and their ratios."""
    med = statistics.median
    jx, tr = res["jax"], res["torch"]
    any_jx, any_tr = next(iter(jx.values())), next(iter(tr.values()))
    lines = [
        f"Each backbone with `--method none`, {args.dataset} ({any_jx['steps_per_epoch']} steps "
        f"per epoch, the reference hyper-parameters of each); medians of {args.epochs} timed "
        f"training epochs and {args.evals} timed full validation passes after one warm-up each "
        "(JAX: with compilation), each (side, backbone) alone in its own process; "
        f"{os.cpu_count()} CPU cores, {platform.machine()}, JAX {any_jx['version']} "
        f"({any_jx['device']}), PyTorch {any_tr['version']} ({any_tr.get('threads')} threads). "
        "Reference: our PyTorch reference with the vectorised data path, drawing its own edge "
        "dropout, noise and AutoCF resamples.",
        "",
        "| backbone | JAX s/epoch | reference s/epoch | JAX ÷ reference | JAX s/eval | "
        "reference s/eval | JAX ÷ reference | JAX first epoch (compile) | JAX peak RSS MB | "
        "reference peak RSS MB |",
        "|---|" + "---:|" * 9,
    ]
    for backbone in jx:
        a, b = jx[backbone], tr[backbone]
        ea, eb = med(a["epoch_seconds"]), med(b["epoch_seconds"])
        va, vb = med(a["eval_seconds"]), med(b["eval_seconds"])
        lines.append(
            f"| {backbone} | {ea:.3f} | {eb:.3f} | {ea / eb:.3f} | {va:.3f} | {vb:.3f} | "
            f"{va / vb:.3f} | {a['first_epoch_seconds']:.1f} | {a['peak_rss_mb']:.0f} | "
            f"{b['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


SCALING_MAX_STEPS = 24
SCALING_EVAL_USERS = 4096
INTERACTIONS_PER_USER = 15


def scaling_dataset(n_edges: int, seed: int = 0):
    """A random interaction graph with about ``n_edges`` directed edges (2 per training
    interaction): U = I = interactions / 15, uniform pairs (duplicates dropped), one held-out
    validation item for up to ``SCALING_EVAL_USERS`` users."""
    import numpy as np

    from darec_jax.data.dataset import InteractionData, Split
    from darec_jax.graph.bipartite import sorted_unique

    nnz = max(n_edges // 2, 1000)
    n = max(nnz // INTERACTIONS_PER_USER, 64)
    rng = np.random.default_rng(seed)
    keys = sorted_unique(rng.integers(0, n, nnz, dtype=np.int64) * n + rng.integers(0, n, nnz))
    users, items = (keys // n).astype(np.int32), (keys % n).astype(np.int32)
    val_users = rng.choice(n, min(n, SCALING_EVAL_USERS), replace=False).astype(np.int32)
    val_items = rng.integers(0, n, val_users.shape[0]).astype(np.int32)
    empty = Split(np.zeros(0, np.int32), np.zeros(0, np.int32))
    return InteractionData(
        name="scaling",
        n_users=n,
        n_items=n,
        train=Split(users, items),
        val=Split(val_users, val_items),
        test=empty,
        user_emb=None,
        item_emb=None,
        source=f"random, {n_edges} edges, seed {seed}",
    )


def memory_bandwidth(repeats: int = 5) -> float:
    """GB/s of a large element-wise pass in JAX (256 MB read + 256 MB written), measured now."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((64 * 1024 * 1024,), jnp.float32)
    f = jax.jit(lambda x: x * 1.0001 + 1.0)
    jax.block_until_ready(f(x))
    secs = statistics.median(_time_repeats(lambda: jax.block_until_ready(f(x)), repeats))
    return 2 * x.size * 4 / secs / 1e9


def step_bytes_floor(n_edges: int, n_nodes: int, dim: int, layers: int) -> int:
    """The memory traffic no implementation of a LightGCN step can avoid (bytes): each of the
    2·L graph products (forward and backward) reads the edge list (column, weight: 8 B per
    edge), the row pointers (4 B per node), its input rows once and writes its output rows once
    (8·d B per node); the step writes its dropped-edge weights once (4 B per edge); Adam reads
    parameters, gradients and both moments and writes three of them (28·d B per node)."""
    per_product = 8 * n_edges + 4 * (n_nodes + 1) + 8 * dim * n_nodes
    return 2 * layers * per_product + 4 * n_edges + 28 * dim * n_nodes


def run_scaling(args, n_edges: int) -> dict:
    """One size of the scaling table, in this process (peak RSS is this size's)."""
    import jax

    from darec_jax import config as config_lib
    from darec_jax.eval import evaluate_embeddings, prepare_split
    from darec_jax.train.step import epoch_key, make_step_functions

    t0 = time.perf_counter()
    data = scaling_dataset(n_edges)
    cfg = config_lib.build_config("yelp", "lightgcn", "none")
    jax.config.update("jax_default_matmul_precision", cfg.train.matmul_precision)
    fns, arrays, state = make_step_functions(cfg, data)
    setup = time.perf_counter() - t0
    edges = int(arrays.graph.senders.shape[0])
    steps = fns.n_batches
    timed_steps = min(steps, SCALING_MAX_STEPS)
    run = jax.jit(fns.epoch_prefix, static_argnums=3, donate_argnums=(0,))
    holder = {"state": state, "parts": 0}  # epoch_prefix keeps the epoch counter

    def part():
        key = epoch_key(0, holder["parts"])
        holder["state"], terms = run(holder["state"], arrays, key, timed_steps)
        jax.block_until_ready(terms)
        holder["parts"] += 1

    first = _time_repeats(part, 1)[0]
    parts = _time_repeats(part, args.epochs)
    per_step = statistics.median(parts) / timed_steps
    task = prepare_split(data, "val", cfg.eval.user_chunk)

    def evaluate():
        fu, fi = fns.jit_eval_embeddings(holder["state"].params, arrays)
        return evaluate_embeddings(fu, fi, task, cfg.eval.ks)

    evaluate()
    eval_sample = statistics.median(_time_repeats(evaluate, args.evals))
    users_with_items = int(len(set(data.train.users.tolist())))
    peak_rss = _peak_rss_mb()  # before the bandwidth probe's own arrays
    floor = step_bytes_floor(
        edges, data.n_users + data.n_items, cfg.model.embedding_size, cfg.model.layer_num
    )
    return {
        "side": "jax",
        "edges": edges,
        "interactions": int(data.train.users.shape[0]),
        "users": data.n_users,
        "items": data.n_items,
        "steps_per_epoch": steps,
        "timed_steps": timed_steps,
        "step_seconds": per_step,
        "epoch_seconds": per_step * steps,
        "epoch_projected": timed_steps < steps,
        "first_call_seconds": first,
        "eval_users_timed": task.n_users_evaluated,
        "eval_seconds_sample": eval_sample,
        "eval_seconds_all_users": eval_sample * users_with_items / task.n_users_evaluated,
        "setup_seconds": setup,
        "step_bytes_floor": floor,
        "peak_rss_mb": peak_rss,
        "bandwidth_gbs": memory_bandwidth(),
        "version": jax.__version__,
        "device": str(jax.devices()[0]),
    }


def _scaling_table(rows: list[dict], args) -> str:
    any_row = rows[0]
    lines = [
        f"LightGCN (`--method none`, Yelp's hyper-parameters: d = 32, 3 layers, edge dropout "
        f"0.8, batches of 4096) on random graphs, {INTERACTIONS_PER_USER} interactions per "
        "user, as many items as users; each size alone in its own process; "
        f"{os.cpu_count()} CPU cores, {platform.machine()}, JAX {any_row['version']} "
        f"({any_row['device']}). Step time: median of {args.epochs} runs of the first "
        f"min(steps, {SCALING_MAX_STEPS}) steps of an epoch (one compiled scan); epoch = steps × "
        "step (measured whole when it has at most that many steps, else projected, marked *). "
        f"Evaluation: full ranking of a sample of up to {SCALING_EVAL_USERS} users, projected to "
        "every user with training items. Floor: the bytes a step must move (edge list and rows "
        "of every graph product, dropped-edge weights, Adam; `step_bytes_floor`) ÷ the "
        "measured memory bandwidth of the same process.",
        "",
        "| directed edges | users = items | steps / epoch | s / step | s / epoch | s / step per "
        "10^6 edges | s / evaluation | peak RSS MB | floor MB / step | bandwidth GB/s | "
        "step ÷ floor time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        floor_s = r["step_bytes_floor"] / (r["bandwidth_gbs"] * 1e9)
        mark = "*" if r["epoch_projected"] else ""
        eval_mark = "*" if r["eval_seconds_all_users"] != r["eval_seconds_sample"] else ""
        lines.append(
            f"| {r['edges']:,} | {r['users']:,} | {r['steps_per_epoch']} | "
            f"{r['step_seconds']:.4f} | {r['epoch_seconds']:.2f}{mark} | "
            f"{r['step_seconds'] / r['edges'] * 1e6:.4f} | "
            f"{r['eval_seconds_all_users']:.2f}{eval_mark} | {r['peak_rss_mb']:.0f} | "
            f"{r['step_bytes_floor'] / 1e6:.1f} | {r['bandwidth_gbs']:.1f} | "
            f"{r['step_seconds'] / floor_s:.1f} |"
        )
    return "\n".join(lines)


def _run_side(
    args,
    side: str,
    method: str | None = None,
    backbone: str | None = None,
    edges: int | None = None,
) -> tuple[dict | None, int]:
    """Run one side (and method) alone in a subprocess: (its result or None, exit status)."""
    cmd = [
        sys.executable,
        "-m",
        "experiments.benchmark",
        "--side",
        side,
        "--dataset",
        args.dataset,
        "--epochs",
        str(args.epochs),
        "--evals",
        str(args.evals),
    ]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    label = side
    if method is not None:
        cmd += ["--side-method", method, "--llm-dim", str(args.llm_dim)]
        label = f"{side} {method}"
    if backbone is not None:
        cmd += ["--side-backbone", backbone]
        label = f"{side} {backbone}"
    if edges is not None:
        cmd += ["--side-edges", str(edges)]
        label = f"{side} {edges} edges"
    print(f"running the {label} side alone ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return None, proc.returncode
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :]), 0


def _save(out: str, name: str, table: str, results: dict, configs) -> None:
    """The table (Markdown, with a line saying how it was made) and the raw results (JSON, with
    the same provenance: commit, command, machine, and the resolved config of each run)."""
    from darec_jax import config as config_lib
    from experiments.provenance import made_by, provenance

    made = provenance("experiments.benchmark", sys.argv[1:])
    made["configs"] = {
        f"{d}/{b}/{m}": config_lib.to_dict(config_lib.build_config(d, b, m)) for d, b, m in configs
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    header = (
        made_by(made) + "; the resolved config of every run is in the JSON beside this file.\n\n"
    )
    (folder / f"{name}.md").write_text(header + table + "\n")
    (folder / f"{name}.json").write_text(
        json.dumps({"provenance": made, "results": results}, indent=2) + "\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.benchmark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default="yelp")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per side")
    parser.add_argument("--evals", type=int, default=5, help="timed evaluations per side")
    parser.add_argument("--out", default="benchmarks", help="folder for the table and raw JSON")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=None,
        help="time these methods' training epochs on both sides instead (a per-method table, "
        "speed_<dataset>_methods.md)",
    )
    parser.add_argument(
        "--llm-dim",
        type=int,
        default=1536,
        help="width of the stand-in LLM embeddings of --methods (RLMRec's: 1536)",
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        choices=BACKBONES,
        default=None,
        help="time these backbones' training epochs and evaluations (--method none) on both "
        "sides instead (a per-backbone table, speed_<dataset>_backbones.md)",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling table over random graphs (scaling.md) instead",
    )
    parser.add_argument(
        "--scaling-edges",
        nargs="+",
        type=float,
        default=[1e5, 3e5, 1e6, 3e6, 1e7],
        help="directed edge counts of --scaling (default 1e5 3e5 1e6 3e6 1e7)",
    )
    parser.add_argument("--side", choices=("jax", "torch", "torch-rlmrec"), help=argparse.SUPPRESS)
    parser.add_argument("--side-edges", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--side-method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--side-backbone", choices=BACKBONES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.llm_dim < 1:
        parser.error("--llm-dim must be >= 1")
    if args.epochs < 1 or args.evals < 1:
        parser.error("--epochs and --evals must be >= 1")
    if args.methods and args.backbones:
        parser.error("--methods and --backbones are separate tables: give one of them")
    if (args.side_method or args.side_backbone) and args.side not in ("jax", "torch"):
        parser.error("--side-method / --side-backbone need --side jax or torch")
    return args


def _main_methods(args) -> int:
    methods = list(dict.fromkeys(args.methods))  # in the given order, once each
    results: dict = {"llm_dim": args.llm_dim, "llm_seed": LLM_SEED, "jax": {}, "torch": {}}
    for side in ("jax", "torch"):
        for method in methods:
            result, rc = _run_side(args, side, method)
            if result is None:
                return rc
            results[side][method] = result
    table = _methods_table(results, args)
    print(table)
    _save(
        args.out,
        f"speed_{args.dataset}_methods",
        table,
        results,
        [(args.dataset, "lightgcn", m) for m in args.methods],
    )
    return 0


def _main_backbones(args) -> int:
    backbones = list(dict.fromkeys(args.backbones))
    results: dict = {"jax": {}, "torch": {}}
    for side in ("jax", "torch"):
        for backbone in backbones:
            result, rc = _run_side(args, side, backbone=backbone)
            if result is None:
                return rc
            results[side][backbone] = result
    table = _backbones_table(results, args)
    print(table)
    _save(
        args.out,
        f"speed_{args.dataset}_backbones",
        table,
        results,
        [(args.dataset, b, "none") for b in args.backbones],
    )
    return 0


def _main_scaling(args) -> int:
    rows = []
    for edges in args.scaling_edges:
        result, rc = _run_side(args, "jax", edges=int(edges))
        if result is None:
            return rc
        rows.append(result)
    table = _scaling_table(rows, args)
    print(table)
    _save(args.out, "scaling", table, {"rows": rows}, [("yelp", "lightgcn", "none")])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.side:
        if args.side_edges:
            result = run_scaling(args, args.side_edges)
        elif args.side_method:
            run = run_jax_method if args.side == "jax" else run_torch_method
            result = run(args, args.side_method)
        elif args.side_backbone:
            if args.side == "jax":
                result = run_jax(args, args.side_backbone)
            else:
                result = run_torch(args, "vectorised", args.side_backbone)
        elif args.side == "jax":
            result = run_jax(args)
        else:
            result = run_torch(args, "vectorised" if args.side == "torch" else "rlmrec")
        print("RESULT " + json.dumps(result))
        return 0
    if args.methods:
        return _main_methods(args)
    if args.backbones:
        return _main_backbones(args)
    if args.scaling:
        return _main_scaling(args)
    results = {}
    for side in ("jax", "torch", "torch-rlmrec"):
        result, rc = _run_side(args, side)
        if result is None:
            return rc
        results[side] = result
    table = _table(results, args)
    print(table)
    _save(args.out, f"speed_{args.dataset}", table, results, [(args.dataset, "lightgcn", "none")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
