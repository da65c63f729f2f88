"""Speed and memory: our JAX code beside our PyTorch reference, same data, same machine, same run.

    python -m experiments.benchmark --dataset yelp --data-dir ../shared/data/yelp

Each side runs in its own subprocess, one after the other (never side by side: on a 2-core machine
either framework slows several-fold when the other runs beside it). Each side times a number of
training epochs and full evaluations after a warm-up and reports medians; peak memory is the
side's process peak RSS. The parent prints a Markdown table with the JAX / PyTorch ratios and
saves it (and the raw JSON) under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _load(args):
    from darec_jax.data import load_dataset

    return load_dataset(args.dataset, data_dir=args.data_dir, download=False)


def _time_repeats(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def run_jax(args) -> dict:
    import jax

    from darec_jax import config as config_lib
    from darec_jax.eval import evaluate_embeddings, prepare_ranking
    from darec_jax.train.step import epoch_key, make_step_functions

    data = _load(args)
    cfg = config_lib.build_config(args.dataset, "lightgcn", "none")
    jax.config.update("jax_default_matmul_precision", cfg.train.matmul_precision)
    fns, arrays, params, opt_state = make_step_functions(cfg, data)
    task = prepare_ranking(
        data.n_users,
        data.n_items,
        data.train.users,
        data.train.items,
        data.val.users,
        data.val.items,
        cfg.eval.user_chunk,
    )
    state = {"p": params, "o": opt_state, "e": 0}

    def epoch():
        state["p"], state["o"], terms = fns.jit_epoch(
            state["p"], state["o"], arrays, epoch_key(0, state["e"])
        )
        jax.block_until_ready(terms)
        state["e"] += 1

    def evaluate():
        fu, fi = fns.jit_final_embeddings(state["p"], arrays.graph, None, arrays.plan)
        return evaluate_embeddings(fu, fi, task, cfg.eval.ks)

    first_epoch = _time_repeats(epoch, 1)[0]  # includes compilation
    first_eval = _time_repeats(evaluate, 1)[0]
    epochs = _time_repeats(epoch, args.epochs)
    evals = _time_repeats(evaluate, args.evals)
    return {
        "side": "jax",
        "version": jax.__version__,
        "device": str(jax.devices()[0]),
        "epoch_seconds": epochs,
        "eval_seconds": evals,
        "first_epoch_seconds": first_epoch,
        "first_eval_seconds": first_eval,
        "peak_rss_mb": _peak_rss_mb(),
    }


def run_torch(args, pipeline: str = "vectorised") -> dict:
    import numpy as np
    import torch

    from darec_jax import config as config_lib
    from darec_jax.reference import LightGCNRef, evaluate, make_optimizer, normalized_adjacency
    from darec_jax.reference.train import train_epoch

    torch.manual_seed(0)
    data = _load(args)
    cfg = config_lib.build_config(args.dataset, "lightgcn", "none")
    adj = normalized_adjacency(data.n_users, data.n_items, data.train.users, data.train.items)
    model = LightGCNRef(
        data.n_users,
        data.n_items,
        adj,
        cfg.model.embedding_size,
        cfg.model.layer_num,
        cfg.model.reg_weight,
        cfg.model.keep_rate,
    )
    optim = make_optimizer(model, cfg.train.lr)
    rng = np.random.RandomState(0)

    def epoch():
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
        "version": torch.__version__,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "epoch_seconds": epochs,
        "eval_seconds": evals,
        "first_epoch_seconds": first_epoch,
        "first_eval_seconds": first_eval,
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


def main(argv: list[str] | None = None) -> int:
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
    parser.add_argument("--side", choices=("jax", "torch", "torch-rlmrec"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:
        if args.side == "jax":
            result = run_jax(args)
        else:
            result = run_torch(args, "vectorised" if args.side == "torch" else "rlmrec")
        print("RESULT " + json.dumps(result))
        return 0
    results = {}
    for side in ("jax", "torch", "torch-rlmrec"):
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
        print(f"running the {side} side alone ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout + proc.stderr, file=sys.stderr)
            return proc.returncode
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        results[side] = json.loads(line[len("RESULT ") :])
    table = _table(results, args)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"speed_{args.dataset}.md").write_text(table + "\n")
    (out / f"speed_{args.dataset}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
