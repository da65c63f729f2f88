"""Real-data reproduction: bare backbone runs over several seeds beside RLMRec's Table 1.

    python -m experiments.reproduce --dataset yelp --data-dir data/yelp --seeds 2023 1 2

Runs ``experiments.run``'s training (reference hyper-parameters, early stopping, test of the best
validation state) once per seed, one after the other, and prints and saves (Markdown + JSON under
``--out``) every seed's six test metrics, their mean ± std, wall times, and RLMRec's published
numbers (RLMRec's Table 1, docs/results.md) for comparison. Runs already finished in ``--workdir``
are reused.

``--engine reference`` trains our PyTorch reference of the same configuration instead (its own
training loop, ``darec_jax.reference.train.fit``: same hyper-parameters, sampling distribution,
early stopping and evaluation), so a number that differs from RLMRec's can be traced to the
specification or to our JAX port. Its tables are written as ``reproduce_<dataset>_<backbone>
_reference.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from darec_jax import config as config_lib
from darec_jax.data import load_dataset
from darec_jax.train.trainer import has_checkpoint, train_and_evaluate
from experiments.provenance import provenance

METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")
# RLMRec (WWW 2024) Table 1, test, mean of 5 seeds on GPU: R@5 R@10 R@20 N@5 N@10 N@20.
RLMREC_TABLE1 = {
    ("amazon", "gccf"): (0.0537, 0.0872, 0.1343, 0.0537, 0.0653, 0.0807),
    ("yelp", "gccf"): (0.0390, 0.0652, 0.1084, 0.0451, 0.0534, 0.0680),
    ("amazon", "lightgcn"): (0.0570, 0.0915, 0.1411, 0.0574, 0.0694, 0.0856),
    ("yelp", "lightgcn"): (0.0421, 0.0706, 0.1157, 0.0491, 0.0580, 0.0733),
    ("amazon", "sgl"): (0.0637, 0.0994, 0.1473, 0.0632, 0.0756, 0.0913),
    ("yelp", "sgl"): (0.0432, 0.0722, 0.1197, 0.0501, 0.0592, 0.0753),
    ("amazon", "simgcl"): (0.0618, 0.0992, 0.1512, 0.0619, 0.0749, 0.0919),
    ("yelp", "simgcl"): (0.0467, 0.0772, 0.1254, 0.0546, 0.0638, 0.0801),
    ("amazon", "dccf"): (0.0662, 0.1019, 0.1517, 0.0658, 0.0780, 0.0943),
    ("yelp", "dccf"): (0.0468, 0.0778, 0.1249, 0.0543, 0.0640, 0.0800),
    ("amazon", "autocf"): (0.0689, 0.1055, 0.1536, 0.0705, 0.0828, 0.0984),
    ("yelp", "autocf"): (0.0469, 0.0789, 0.1280, 0.0547, 0.0647, 0.0813),
}


SHORT = {m: m.replace("recall", "R").replace("ndcg", "N") for m in METRICS}
BACKBONE_ORDER = ("gccf", "lightgcn", "sgl", "simgcl", "dccf", "autocf")


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def write_summary(out: Path, dataset: str, made: dict | None = None) -> str:
    """Per backbone with saved runs: our mean test metrics over the seeds run, RLMRec's Table 1
    beneath, the relative difference in Recall@20, and the runs' epochs and wall times; above the
    table, the command that wrote it and, per backbone, the file and the commits of its seeds."""
    header = (
        "| backbone | run | "
        + " | ".join(SHORT[m] for m in METRICS)
        + " | Δ R@20 | best epoch | epochs | wall s |"
    )
    lines = [header, "|---|---|" + "---:|" * (len(METRICS) + 4)]
    sources = []
    for backbone in BACKBONE_ORDER:
        path = out / f"reproduce_{dataset}_{backbone}.json"
        if not path.exists():
            continue
        rows = json.loads(path.read_text())
        commits = sorted(
            {(r.get("provenance") or {}).get("commit", "")[:7] or "not recorded" for r in rows}
        )
        sources.append(f"{backbone}: `{path.name}` (commit {', '.join(commits)})")
        means = [statistics.mean(r["test"][m] for r in rows) for m in METRICS]
        paper = RLMREC_TABLE1.get((dataset, backbone))
        ours_r20 = means[METRICS.index("recall@20")]
        delta = "" if paper is None else f"{100 * (ours_r20 / paper[2] - 1):+.1f} %"
        walls = [r.get("wall_seconds", r.get("wall_seconds_this_process", math.nan)) for r in rows]
        seeds = "seed " if len(rows) == 1 else "mean of seeds "
        lines.append(
            f"| {backbone} | ours, {seeds}{', '.join(str(r['seed']) for r in rows)} | "
            + " | ".join(f"{v:.4f}" for v in means)
            + f" | {delta} | "
            + ", ".join(str(r["best_epoch"]) for r in rows)
            + " | "
            + ", ".join(str(r["epochs_run"]) for r in rows)
            + " | "
            + ", ".join(f"{w:.0f}" for w in walls)
            + " |"
        )
        if paper is not None:
            lines.append(
                "| | RLMRec Table 1 | " + " | ".join(f"{v:.4f}" for v in paper) + " | | | | |"
            )
    made = made or provenance("experiments.reproduce", ["--summary", "--dataset", dataset])
    intro = (
        f"Made by `{made['command']}` at commit `{made['commit']}` from the per-backbone files "
        "beside this file, each of which records every seed's command, commit, resolved config "
        "and machine: " + "; ".join(sources) + "."
    )
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"reproduce_{dataset}_summary.md").write_text(intro + "\n\n" + table + "\n")
    return table


def _train_reference(cfg, data, workdir: Path) -> dict:
    """Train the PyTorch reference of ``cfg`` with RLMRec's loop; the result row of one seed."""
    import numpy as np
    import torch

    from darec_jax.crosscheck.factory import build_reference
    from darec_jax.reference.train import fit

    torch.manual_seed(cfg.train.seed)
    rng = np.random.RandomState(cfg.train.seed)
    model, _ = build_reference(cfg, data)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "log.txt"
    with log_path.open("w") as log_file:

        def log(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()

        t = cfg.train
        out = fit(
            model,
            data.n_items,
            (data.train.users, data.train.items),
            (data.val.users, data.val.items),
            (data.test.users, data.test.items),
            rng,
            max_epochs=t.epochs,
            test_step=t.test_step,
            patience=t.patience,
            lr=t.lr,
            batch_size=t.batch_size,
            log=log,
        )
    return {
        "engine": "reference",
        "seed": cfg.train.seed,
        "best_epoch": out["best_epoch"],
        "epochs_run": out["epochs_run"],
        "valid": out["valid"],
        "test": out["test"],
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.reproduce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default="yelp", choices=("amazon", "yelp", "steam"))
    parser.add_argument("--backbone", default="lightgcn")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2023, 1, 2])
    parser.add_argument("--workdir", default="runs/reproduce")
    parser.add_argument("--out", default="benchmarks")
    parser.add_argument(
        "--engine",
        default="jax",
        choices=("jax", "reference"),
        help="jax (default): our training; reference: our PyTorch reference of the same run",
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="only write reproduce_<dataset>_summary.md: one row per backbone measured so far "
        "(from the saved reproduce_<dataset>_<backbone>.json files in --out)",
    )
    args = parser.parse_args(argv)
    if args.summary:
        made = provenance("experiments.reproduce", sys.argv[1:] if argv is None else argv)
        print(write_summary(Path(args.out), args.dataset, made))
        return 0

    data = load_dataset(args.dataset, data_dir=args.data_dir, download=args.data_dir is None)
    made = provenance("experiments.reproduce", sys.argv[1:] if argv is None else argv)
    rows = []
    for seed in args.seeds:
        cfg = config_lib.build_config(args.dataset, args.backbone, "none", {"train.seed": seed})
        suffix = "" if args.engine == "jax" else "-reference"
        workdir = Path(args.workdir) / f"{args.dataset}-{args.backbone}-seed{seed}{suffix}"
        done = workdir / "results.json"
        if done.exists():
            result = json.loads(done.read_text())
        elif args.engine == "reference":
            t0 = time.perf_counter()
            result = _train_reference(cfg, data, workdir)
            result["wall_seconds"] = time.perf_counter() - t0
            done.write_text(json.dumps(result, indent=2) + "\n")
        else:
            t0 = time.perf_counter()
            resume = has_checkpoint(workdir / "checkpoints" / "latest")
            result = train_and_evaluate(
                cfg, workdir, resume=resume, data=data, progress=False, log=lambda _: None
            )
            result["wall_seconds"] = time.perf_counter() - t0
            done.write_text(json.dumps(result, indent=2) + "\n")
        if "provenance" not in result:  # how and where this seed's run was made
            result["provenance"] = {**made, "config": config_lib.to_dict(cfg)}
            done.write_text(json.dumps(result, indent=2) + "\n")
        rows.append(result)
        print(
            f"seed {seed}: best epoch {result['best_epoch']}, test recall@20 "
            f"{result['test']['recall@20']:.4f}",
            file=sys.stderr,
        )

    header = (
        "| run | "
        + " | ".join(m.replace("recall", "R").replace("ndcg", "N") for m in METRICS)
        + " | best epoch | epochs | wall s |"
    )
    lines = [
        f"{args.backbone}, `--method none`, {args.dataset}"
        + (", PyTorch reference (`--engine reference`)" if args.engine == "reference" else "")
        + " "
        f"({data.n_users} users, {data.n_items} items, {data.train.users.shape[0]} train "
        f"interactions); {os.cpu_count()} CPU cores, {platform.machine()}; "
        "reference hyper-parameters; test metrics of the best validation state.",
        "",
        "Made by `" + made["command"] + "` at commit `" + made["commit"] + "`; each seed's "
        "resolved config, commit and machine are in the JSON beside this file.",
        "",
        header,
        "|---|" + "---:|" * (len(METRICS) + 3),
    ]
    for r in rows:
        metrics = " | ".join(f"{r['test'][m]:.4f}" for m in METRICS)
        wall = r.get("wall_seconds", r.get("wall_seconds_this_process", float("nan")))
        lines.append(
            f"| seed {r['seed']} | {metrics} | {r['best_epoch']} | {r['epochs_run']} | {wall:.0f} |"
        )
    mean = " | ".join(_fmt([r["test"][m] for r in rows]) for m in METRICS)
    lines.append(f"| **mean ± std ({len(rows)} seeds)** | {mean} | | | |")
    paper = RLMREC_TABLE1.get((args.dataset, args.backbone))
    if paper:
        lines.append(
            "| RLMRec Table 1 (5 seeds, GPU) | "
            + " | ".join(f"{v:.4f}" for v in paper)
            + " | | | |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"reproduce_{args.dataset}_{args.backbone}" + (
        "" if args.engine == "jax" else "_reference"
    )
    (out / f"{stem}.md").write_text(table + "\n")
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
