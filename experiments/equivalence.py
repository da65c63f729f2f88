"""Check that our JAX training computes what the PyTorch reference computes, on your data.

    python -m experiments.equivalence --dataset synthetic --backbone sgl --method darec --steps 3
    python -m experiments.equivalence --backbone all --method all          # every combination
    python -m experiments.equivalence --dataset yelp --data-dir data/yelp \\
        --backbone gccf --method none --steps 2

Builds our model and the reference (``darec_jax/reference``) with the same weights, runs
``--steps`` Adam steps on identical batches with every random draw injected into both (edge
dropout, SimGCL noise, AutoCF's resampling draws, node-mask seeds, DaRec's clusters and pair
subsets; every step starts from our state, copied into the reference with the Adam moments,
unless ``--no-resync``), and prints, per quantity, the largest absolute and relative error over
the steps:
every loss term, every gradient and parameter after each step (by the reference's names), the
scoring embeddings, and the validation metrics after the last step. Exits 1 if any quantity is
above its tolerance (relative ``--rtol`` of the quantity's scale; parameters also get Adam's
derived allowance, see ``darec_jax/crosscheck/harness.py``; metrics ``--metric-atol``), 2 on bad
input. Needs PyTorch (``pip install torch==2.13.0``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from darec_jax import config as config_lib
from darec_jax.errors import DarecError


def _table(checks, per_step: bool) -> list[str]:
    rows: dict[tuple, list] = {}
    for c in checks:
        key = (c.step if per_step else None, c.kind, c.name)
        rows.setdefault(key, []).append(c)
    head = "| step | kind | quantity | max abs err | max rel err | allowed abs | ok |"
    lines = [head, "|---:|---|---|---:|---:|---:|---|"]
    for (_, kind, name), group in rows.items():
        worst = max(group, key=lambda c: (not c.ok, c.abs_err))
        seen = sorted({c.step for c in group})
        steps = str(seen[0]) if len(seen) == 1 else f"{seen[0]}–{seen[-1]}"
        ok = all(c.ok for c in group)
        lines.append(
            f"| {steps} | {kind} | {name} | {worst.abs_err:.2e} | "
            f"{max(c.rel_err for c in group):.2e} | {worst.allowed:.2e} | "
            f"{'yes' if ok else '**NO**'} |"
        )
    return lines


SUMMARY_KINDS = (("term", "rel"), ("grad", "rel"), ("param", "rel"), ("embedding", "rel"),
                 ("metric", "abs"))  # fmt: skip


def worst_errors(checks) -> dict[str, float]:
    """{kind: the largest error of that kind over the steps} (relative, metrics absolute), for
    the kinds of :data:`SUMMARY_KINDS` the checks have."""
    worst = {}
    for kind, which in SUMMARY_KINDS:
        group = [c for c in checks if c.kind == kind]
        if group:
            worst[kind] = max(c.rel_err if which == "rel" else c.abs_err for c in group)
    return worst


def _summary_row(cfg, checks) -> str:
    """One row of the summary: the largest error of each kind over the steps."""
    worst = worst_errors(checks)
    cells = [f"{worst[kind]:.1e}" if kind in worst else "–" for kind, _ in SUMMARY_KINDS]
    ok = all(c.ok for c in checks)
    result = "PASS" if ok else f"FAIL ({sum(not c.ok for c in checks)})"
    head = f"| {cfg.model.backbone} | {cfg.method} | {result} | "
    return head + " | ".join(cells) + " |"


def _perturbations(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise DarecError(f"--perturb expects NAME=VALUE, got {item!r}")
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise DarecError(f"--perturb {name}: {value!r} is not a number") from exc
    return out


def _write_summary(path: Path, argv, args, results, failed) -> None:
    """The summary table (one row per combination) at ``path``; with a single combination, its
    per-check table too. Beside it, ``path`` with ``.json``: the provenance, the tolerances and,
    per combination, the resolved config and every check."""
    from experiments.provenance import made_by, provenance

    made = provenance("experiments.equivalence", sys.argv[1:] if argv is None else argv)
    n = len(results)
    verdict = (
        f"above tolerance: {', '.join(failed)}"
        if failed
        else f"all {n} combination(s) within tolerance"
    )
    lines = [
        made_by(made) + "; "
        f"{args.steps} Adam steps, rtol {args.rtol:g}, metric atol {args.metric_atol:g}; "
        f"{verdict}; exit status {1 if failed else 0}. Relative errors are of the quantity's "
        "scale (max |reference|); parameter entries whose gradient is below the gradient "
        "check's resolution get Adam's derived allowance on top of rtol "
        "(harness.adam_allowance). Each combination's resolved config and every check are in "
        f"`{path.with_suffix('.json').name}` beside this file.",
        "",
        "| backbone | method | result | max rel err: terms | grads | params | scoring emb. "
        "| max abs err: val metrics |",
        "|---|---|---|---:|---:|---:|---:|---:|",
        *(_summary_row(cfg, checks) for cfg, checks in results),
    ]
    if n == 1:
        cfg, checks = results[0]
        lines += ["", f"## {cfg.data.name} · {cfg.model.backbone} · {cfg.method}", ""]
        lines += _table(checks, args.per_step)
    record = {
        "provenance": made,
        "steps": args.steps,
        "rtol": args.rtol,
        "metric_atol": args.metric_atol,
        "perturb": _perturbations(args.perturb),
        "resync": not args.no_resync,
        "seed": args.seed,
        "combinations": [
            {
                "backbone": cfg.model.backbone,
                "method": cfg.method,
                "ok": all(c.ok for c in checks),
                "config": config_lib.to_dict(cfg),
                "checks": [
                    {
                        "step": c.step,
                        "kind": c.kind,
                        "name": c.name,
                        "abs_err": c.abs_err,
                        "scale": c.scale,
                        "allowed": c.allowed,
                        "ok": c.ok,
                    }
                    for c in checks
                ],
            }
            for cfg, checks in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.equivalence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", default="synthetic", help=", ".join(config_lib.DATASETS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--backbone", default="lightgcn", help="a backbone, or 'all'")
    parser.add_argument("--method", default="darec", help="a method, or 'all'")
    parser.add_argument("--steps", type=int, default=3, help="Adam steps (default 3)")
    parser.add_argument(
        "--batch-rows", type=int, default=None, help="real triples per step (default: B − 3)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the injected draws")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--metric-atol", type=float, default=1e-9)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--perturb",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="add VALUE to the reference's initial parameter NAME (to watch the check fail)",
    )
    parser.add_argument("--per-step", action="store_true", help="one row per step")
    parser.add_argument(
        "--summary",
        default=None,
        metavar="FILE.md",
        help="also write one row per combination (the largest relative error of the terms, "
        "gradients, parameters and scoring embeddings, and the largest absolute metric error) "
        "to FILE.md, with the command, commit and machine (with one combination, also its "
        "per-check table), and the resolved configs and every check to FILE.json",
    )
    parser.add_argument(
        "--no-resync",
        action="store_true",
        help="let the two trajectories run free instead of starting every step from our state",
    )
    args = parser.parse_args(argv)
    try:
        backbones = config_lib.BACKBONES if args.backbone == "all" else (args.backbone,)
        methods = config_lib.METHODS if args.method == "all" else (args.method,)
        if args.steps < 1:
            raise DarecError("--steps must be >= 1")
        perturb = _perturbations(args.perturb)
        overrides = config_lib.parse_set_args(args.overrides)
        if args.data_dir is not None:
            overrides["data.data_dir"] = args.data_dir
        cfgs = [
            config_lib.build_config(args.dataset, b, m, overrides)
            for b in backbones
            for m in methods
        ]
        try:
            from darec_jax.crosscheck.harness import compare_training
        except ImportError as exc:
            raise DarecError(
                f"the reference needs PyTorch (pip install torch==2.13.0): {exc}"
            ) from exc
        from darec_jax.train.trainer import load_data

        data = load_data(cfgs[0])
        failed, results = [], []
        for cfg in cfgs:
            label = f"{cfg.data.name} · {cfg.model.backbone} · {cfg.method}"
            try:
                checks = compare_training(
                    cfg,
                    data,
                    steps=args.steps,
                    batch_rows=args.batch_rows,
                    seed=args.seed,
                    rtol=args.rtol,
                    metric_atol=args.metric_atol,
                    perturb=perturb,
                    resync=not args.no_resync,
                )
            except ValueError as exc:
                raise DarecError(f"{label}: {exc}") from exc
            ok = all(c.ok for c in checks)
            bad = sum(not c.ok for c in checks)
            print(f"\n## {label}: {'PASS' if ok else f'FAIL ({bad} of {len(checks)} checks)'}\n")
            print("\n".join(_table(checks, args.per_step)))
            results.append((cfg, checks))
            if not ok:
                failed.append(label)
    except DarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.summary:
        _write_summary(Path(args.summary), argv, args, results, failed)
    if failed:
        print(f"\nabove tolerance: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(cfgs)} combination(s) within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
