"""A grid of runs and the paper-style tables: datasets × backbones × methods × seeds.

    python -m experiments.sweep --datasets synthetic --backbones lightgcn gccf \\
        --methods none rlmrec-con rlmrec-gen darec --seeds 1 2 3 --workdir runs/sweep

Each cell is one ``experiments.run`` training (``<workdir>/<dataset>-<backbone>-<method>-seed<s>``)
with ``train.seed = s``; on the synthetic dataset the seed also draws the world
(``data.synthetic.seed = s``, unless ``--set data.synthetic.seed=…`` fixes one world for every
cell), so every seed is one world and the statistics are over worlds. The tables say which
world and model seeds they cover.
A cell with ``results.json`` is finished and skipped; one with a checkpoint but no results is
resumed (the results equal an uninterrupted run's); the rest start fresh. A progress line says
which cell runs and how many are left. When the grid is done (or with ``--tables-only``, from
whatever has finished), it writes per dataset ``<out>/sweep_<dataset>.md``, ``.csv`` and
``.json`` (the command, commit and machine; every cell's resolved config and results):

* rows: backbone × method, columns R@5/10/20 and N@5/10/20 (test, best validation state) as
  mean ± std over seeds; the best mean per backbone and metric in **bold**;
* a paired t-test (over the seeds both have) of DaRec against each baseline of the same backbone:
  the p-values in their own table, and a * on DaRec's cell where it beats every baseline at
  p < 0.05.

``--set KEY=VALUE`` applies to every cell (e.g. ``train.epochs=50`` for a quick grid).
``--figures BACKBONE METHOD SEED`` copies that cell's figures (``training_curves.png``, and
``darec_spaces.png`` for DaRec) to ``<out>/<backbone>_<method>_seed<s>_{curves,spaces}.png``, and
the table names the cell they come from.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

from darec_jax import config as config_lib
from darec_jax.errors import DarecError

METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20")
SHORT = {m: m.replace("recall", "R").replace("ndcg", "N") for m in METRICS}
BASELINES = ("none", "rlmrec-con", "rlmrec-gen")


def cell_dir(root: Path, dataset: str, backbone: str, method: str, seed: int) -> Path:
    return root / f"{dataset}-{backbone}-{method}-seed{seed}"


def run_grid(args, log=print) -> int:
    """Run every unfinished cell; returns the number of cells run in this call."""
    from darec_jax.train.trainer import has_checkpoint, load_data, train_and_evaluate

    root = Path(args.workdir)
    cells = [
        (d, b, m, s)
        for d in args.datasets
        for b in args.backbones
        for m in args.methods
        for s in args.seeds
    ]
    overrides = config_lib.parse_set_args(args.overrides)
    configs = {}
    for d, b, m, s in cells:  # every config is checked before anything runs
        extra = cell_overrides(d, s, overrides)
        if args.data_dir.get(d):
            extra["data.data_dir"] = args.data_dir[d]
        configs[(d, b, m, s)] = config_lib.build_config(d, b, m, extra)
    todo = [c for c in cells if not (cell_dir(root, *c) / "results.json").exists()]
    log(f"{len(cells)} cells, {len(cells) - len(todo)} finished, {len(todo)} to run")
    data_cache: dict[str, object] = {}
    t0 = time.perf_counter()
    for i, cell in enumerate(todo):
        cfg = configs[cell]
        folder = cell_dir(root, *cell)
        resume = has_checkpoint(folder / "checkpoints" / "latest")
        d = (cell[0], cfg.data.synthetic.seed)  # a synthetic dataset: one world per seed
        if d not in data_cache:
            data_cache.clear()
            data_cache[d] = load_data(cfg)
        elapsed = time.perf_counter() - t0
        eta = "" if i == 0 else f", about {elapsed / i * (len(todo) - i) / 60:.0f} min left"
        log(
            f"[{i + 1}/{len(todo)}] {'resuming' if resume else 'running'} "
            f"{' · '.join(map(str, cell))}{eta}"
        )
        train_and_evaluate(
            cfg, folder, resume=resume, data=data_cache[d], progress=False, log=lambda _: None
        )
    return len(todo)


def cell_overrides(dataset: str, seed: int, overrides: dict) -> dict:
    """A cell's overrides: ``train.seed`` = the seed and, on the synthetic dataset, the world
    drawn from the same seed (``data.synthetic.seed``) unless ``--set`` fixes one world for
    all: each seed is then one world, and the paired tests pair runs by world."""
    extra = dict(overrides)
    extra["train.seed"] = str(seed)
    if dataset == "synthetic" and "data.synthetic.seed" not in overrides:
        extra["data.synthetic.seed"] = str(seed)
    return extra


def seeds_used(root: Path, dataset: str, backbones, methods, seeds) -> tuple[list, list]:
    """(world seeds, model seeds) of the finished cells, from their saved configs."""
    worlds, models = set(), set()
    for b in backbones:
        for m in methods:
            for s in seeds:
                path = cell_dir(root, dataset, b, m, s) / "config.json"
                if path.exists() and (cell_dir(root, dataset, b, m, s) / "results.json").exists():
                    cfg = json.loads(path.read_text())
                    models.add(cfg["train"]["seed"])
                    if dataset == "synthetic":
                        worlds.add(cfg["data"]["synthetic"]["seed"])
    return sorted(worlds), sorted(models)


def collect(root: Path, dataset: str, backbones, methods, seeds) -> dict:
    """{(backbone, method): {seed: test metrics}} of the finished cells."""
    out: dict = {}
    for b in backbones:
        for m in methods:
            for s in seeds:
                path = cell_dir(root, dataset, b, m, s) / "results.json"
                if path.exists():
                    out.setdefault((b, m), {})[s] = json.loads(path.read_text())["test"]
    return out


def paired_p(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test p-value (NaN with fewer than 2 pairs; 1 for identical pairs)."""
    from scipy import stats

    if len(a) < 2:
        return math.nan
    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def tables(results: dict, backbones, methods) -> tuple[str, str, list[list[str]]]:
    """(main Markdown table, p-value Markdown table, CSV rows) for one dataset."""
    lines = [
        "| backbone | method | seeds | " + " | ".join(SHORT[m] for m in METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(METRICS),
    ]
    p_lines = [
        "| backbone | DaRec vs | pairs | " + " | ".join(SHORT[m] for m in METRICS) + " |",
        "|---|---|---:|" + "---:|" * len(METRICS),
    ]
    rows = [
        ["backbone", "method", "seeds", *[f"{m}_{k}" for m in METRICS for k in ("mean", "std")]]
    ]
    for b in backbones:
        present = [m for m in methods if (b, m) in results]
        means = {
            (m, metric): statistics.mean(v[metric] for v in results[(b, m)].values())
            for m in present
            for metric in METRICS
        }
        best = {
            metric: max((means[(m, metric)] for m in present), default=None) for metric in METRICS
        }
        star: dict[str, bool] = {}
        darec = results.get((b, "darec"), {})
        baselines = [m for m in present if m in BASELINES]
        for metric in METRICS:
            beats_all = bool(baselines) and bool(darec)
            for m in baselines:
                common = sorted(set(darec) & set(results[(b, m)]))
                a = [darec[s][metric] for s in common]
                c = [results[(b, m)][s][metric] for s in common]
                p = paired_p(a, c)
                better = bool(common) and statistics.mean(a) > statistics.mean(c)
                beats_all = beats_all and better and p < 0.05
            star[metric] = beats_all
        for m in baselines:
            if not darec:
                break
            common = sorted(set(darec) & set(results[(b, m)]))
            cells = []
            for metric in METRICS:
                a = [darec[s][metric] for s in common]
                c = [results[(b, m)][s][metric] for s in common]
                p = paired_p(a, c)
                mark = "*" if p < 0.05 else ""
                sign = "+" if statistics.mean(a) >= statistics.mean(c) else "−"
                cells.append("n/a" if math.isnan(p) else f"{sign} {p:.3f}{mark}")
            p_lines.append(f"| {b} | {m} | {len(common)} | " + " | ".join(cells) + " |")
        for m in present:
            per_seed = results[(b, m)]
            cells, csv_cells = [], []
            for metric in METRICS:
                values = [v[metric] for v in per_seed.values()]
                mean = statistics.mean(values)
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                text = f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"
                if m == "darec" and star[metric]:
                    text += "*"
                if math.isclose(mean, best[metric], rel_tol=0, abs_tol=1e-12):
                    text = f"**{text}**"
                cells.append(text)
                csv_cells += [f"{mean:.6f}", f"{std:.6f}"]
            lines.append(f"| {b} | {m} | {len(per_seed)} | " + " | ".join(cells) + " |")
            rows.append([b, m, str(len(per_seed)), *csv_cells])
    return "\n".join(lines), "\n".join(p_lines), rows


FIGURES = (("training_curves.png", "curves"), ("darec_spaces.png", "spaces"))


def _copy_figures(root: Path, out: Path, dataset: str, figures) -> list[str]:
    """Copy one cell's figures to ``out``; the names written."""
    backbone, method, seed = figures
    cell = cell_dir(root, dataset, backbone, method, int(seed))
    written = []
    for source, kind in FIGURES:
        if (cell / source).exists():
            name = f"{backbone}_{method}_seed{seed}_{kind}.png"
            shutil.copyfile(cell / source, out / name)
            written.append(name)
    if not written:
        raise DarecError(f"--figures: {cell} has no figures (is the cell finished?)")
    return written


def write_tables(args, argv: list[str] | None = None) -> list[Path]:
    from experiments.provenance import made_by, provenance

    made = provenance("experiments.sweep", sys.argv[1:] if argv is None else list(argv))
    root, out = Path(args.workdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset in args.datasets:
        results = collect(root, dataset, args.backbones, args.methods, args.seeds)
        if not results:
            continue
        main_table, p_table, rows = tables(results, args.backbones, args.methods)
        worlds, models = seeds_used(root, dataset, args.backbones, args.methods, args.seeds)
        units = (
            f"worlds (synthetic seeds {', '.join(map(str, worlds))}; one world per seed, so ± "
            "and the tests are over worlds)"
            if len(worlds) > 1
            else (
                f"model seeds on one world (synthetic seed {worlds[0]}; ± and the tests are "
                "over training runs of that world, not over worlds)"
                if worlds
                else "seeds"
            )
        )
        figures = ""
        if getattr(args, "figures", None):
            names = _copy_figures(root, out, dataset, args.figures)
            cell = cell_dir(root, dataset, *args.figures[:2], int(args.figures[2])).name
            figures = f" Figures {', '.join(f'`{n}`' for n in names)}: cell `{cell}`."
        text = (
            made_by(made) + "; every "
            f"cell's resolved config and results are in `sweep_{dataset}.json` beside this "
            f"file.{figures}\n\n"
            f"{dataset}: test metrics of the best validation state, mean ± std over {units}; "
            f"model seeds {', '.join(map(str, models))}; **bold**: the best mean per backbone; "
            "*: DaRec above every baseline of its backbone at p < 0.05 (paired t-test over "
            "seeds, each pair from the same world and model seed).\n\n"
            f"{main_table}\n\nPaired t-tests, DaRec against each baseline (sign of the mean "
            f"difference, two-sided p; * p < 0.05):\n\n{p_table}\n"
        )
        md = out / f"sweep_{dataset}.md"
        md.write_text(text)
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        (out / f"sweep_{dataset}.csv").write_text(buffer.getvalue())
        cells = {}
        for b, m in results:
            for seed in results[(b, m)]:
                folder = cell_dir(root, dataset, b, m, seed)
                res = json.loads((folder / "results.json").read_text())
                cells[folder.name] = {
                    "config": json.loads((folder / "config.json").read_text()),
                    **{
                        k: res.get(k) for k in ("status", "best_epoch", "epochs_run", "val", "test")
                    },
                }
        (out / f"sweep_{dataset}.json").write_text(
            json.dumps({"provenance": made, "cells": cells}, indent=1) + "\n"
        )
        written.append(md)
        print(text)
    return written


def _data_dirs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise DarecError(f"--data-dir expects DATASET=PATH, got {item!r}")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--datasets", nargs="+", default=["synthetic"])
    parser.add_argument("--backbones", nargs="+", default=["lightgcn", "gccf"])
    parser.add_argument("--methods", nargs="+", default=list(config_lib.METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument(
        "--data-dir", nargs="*", default=[], metavar="DATASET=PATH", help="per-dataset folders"
    )
    parser.add_argument("--workdir", default="runs/sweep")
    parser.add_argument("--out", default="benchmarks/sweep")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--tables-only", action="store_true", help="write the tables from finished cells only"
    )
    parser.add_argument(
        "--figures",
        nargs=3,
        default=None,
        metavar=("BACKBONE", "METHOD", "SEED"),
        help="copy this cell's figures beside the tables",
    )
    args = parser.parse_args(argv)
    try:
        args.data_dir = _data_dirs(args.data_dir)
        for kind, names, valid in (
            ("dataset", args.datasets, config_lib.DATASETS),
            ("backbone", args.backbones, config_lib.BACKBONES),
            ("method", args.methods, config_lib.METHODS),
        ):
            bad = [n for n in names if n not in valid]
            if bad:
                raise DarecError(f"unknown {kind} {', '.join(bad)}; valid: {', '.join(valid)}")
        if not args.tables_only:
            run_grid(args)
        write_tables(args, argv)
    except DarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
