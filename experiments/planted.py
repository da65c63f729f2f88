"""The planted benchmark: does aligning with the text view help where it should?

    python -m experiments.planted --seeds 0 1 2

Builds the planted world (shared preference clusters seen by both views, a
CF-specific part only the interactions carry, a text-specific part only the "LLM embeddings"
carry) and trains LightGCN with `none`, `rlmrec-con`, `rlmrec-gen`, `darec` and DaRec with each
of its four terms switched off, once per world seed (``--model-seeds``: each world's model seed,
by default the world seed). The study of tuned methods over many worlds with selection kept
apart from evaluation is ``experiments.study``; this command is its quick, untuned precursor.
A second world whose text view is pure noise (`text_signal=False`) checks that DaRec does not
hurt much when there is nothing to align. Prints and saves (Markdown + JSON under `--out`) the
mean ± std of test Recall@20 and NDCG@20 and a paired t-test of DaRec against each baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from darec_jax import config as config_lib
from darec_jax.data.synthetic import SyntheticConfig, make_planted_world, planted_latents
from darec_jax.train.checkpoint import CheckpointSlot
from darec_jax.train.step import make_step_functions
from darec_jax.train.trainer import train_and_evaluate

# docs/darec.md's suggested weights. Every DaRec run here states its four weights (these, changed
# as the row says), so the rows keep their meaning whatever the package's defaults are.
DAREC_MD = {
    "darec.lambda_or": 0.1,
    "darec.lambda_un": 0.1,
    "darec.lambda_gl": 0.1,
    "darec.lambda_lo": 0.01,
}

ABLATIONS = {
    "darec w/o orth": {"darec.lambda_or": 0.0},
    "darec w/o unif": {"darec.lambda_un": 0.0},
    "darec w/o global": {"darec.lambda_gl": 0.0},
    "darec w/o local": {"darec.lambda_lo": 0.0},
}


VARIANTS = {
    "darec score_on=disentangled": {"darec.score_on": "disentangled"},
    "darec local_assign=matched": {"darec.local_assign": "matched"},
    "darec recluster_every=5": {"darec.recluster_every": 5},
    "darec local only, λ_lo=0.1": {
        "darec.lambda_or": 0.0,
        "darec.lambda_un": 0.0,
        "darec.lambda_gl": 0.0,
        "darec.lambda_lo": 0.1,
    },
    "darec global only, λ_gl=1": {
        "darec.lambda_or": 0.0,
        "darec.lambda_un": 0.0,
        "darec.lambda_gl": 1.0,
        "darec.lambda_lo": 0.0,
    },
}


def _world_overrides(pairs: list[str]) -> dict:
    """``--world cf_dim=4 cf_weight=2`` -> SyntheticConfig overrides (typed as the defaults)."""
    defaults = SyntheticConfig()
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not hasattr(defaults, key):
            valid = ", ".join(f.name for f in dataclasses.fields(SyntheticConfig))
            raise SystemExit(f"--world takes KEY=VALUE with KEY one of: {valid}; got {pair!r}")
        kind = type(getattr(defaults, key))
        out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
    return out


def _runs(include_ablations: bool) -> dict[str, tuple[str, dict]]:
    runs = {
        "none": ("none", {}),
        "rlmrec-con": ("rlmrec-con", {}),
        "rlmrec-gen": ("rlmrec-gen", {}),
        "darec": ("darec", {}),
    }
    if include_ablations:
        runs.update({name: ("darec", o) for name, o in ABLATIONS.items()})
    return runs


def ridge_r2(x: np.ndarray, y: np.ndarray, seed: int = 0, alpha: float = 1e-3) -> float:
    """Held-out R² of a ridge regression of ``y`` [n, k] on ``x`` [n, d] (with intercept):
    fit on a seeded 80 % of the rows, 1 − SSE / SST on the other 20 % (all targets pooled)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    cut = int(0.8 * x.shape[0])
    tr, te = perm[:cut], perm[cut:]
    mx, my = x[tr].mean(0), y[tr].mean(0)
    a, b = x[tr] - mx, y[tr] - my
    w = np.linalg.solve(a.T @ a + alpha * cut * np.eye(x.shape[1]), a.T @ b)
    pred = (x[te] - mx) @ w + my
    return float(1.0 - np.sum((y[te] - pred) ** 2) / np.sum((y[te] - my) ** 2))


def probe(cfg, data, workdir: Path, world: SyntheticConfig) -> dict[str, float]:
    """What the best checkpoint's CF embeddings E^C hold of the planted parts: held-out ridge R²
    of the shared part s and of the CF-specific part c from E^C (mean of users and items)."""
    cached = workdir / "probe.json"
    if cached.exists():
        return json.loads(cached.read_text())
    fns, arrays, state = make_step_functions(cfg, data)
    slot = CheckpointSlot(workdir / "checkpoints" / "best")
    best, _ = slot.restore(state.params)
    slot.close()
    fu, fi = fns.jit_eval_embeddings(best, arrays)
    lat = planted_latents(world)
    out = {
        "r2_shared": 0.5 * (ridge_r2(fu, lat.s_user) + ridge_r2(fi, lat.s_item)),
        "r2_cf": 0.5 * (ridge_r2(fu, lat.c_user) + ridge_r2(fi, lat.c_item)),
    }
    cached.write_text(json.dumps(out) + "\n")
    return out


def _changed_knobs(world: SyntheticConfig) -> str:
    default = SyntheticConfig()
    skip = ("seed", "text_signal", "n_users", "n_items", "llm_dim", "interactions_per_user")
    changed = [
        f"{f.name}={getattr(world, f.name)}"
        for f in dataclasses.fields(SyntheticConfig)
        if f.name not in skip and getattr(world, f.name) != getattr(default, f.name)
    ]
    return f", {', '.join(changed)}" if changed else ""


def _fmt(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def run_world(label: str, world: SyntheticConfig, seeds: list[int], runs, args, out: Path):
    results: dict[str, list[dict]] = {name: [] for name in runs}
    model_seeds = args.model_seeds or seeds
    if len(model_seeds) != len(seeds):
        raise SystemExit("--model-seeds needs one model seed per world seed (--seeds)")
    for seed, model_seed in zip(seeds, model_seeds, strict=True):
        data = make_planted_world(dataclasses.replace(world, seed=seed))
        for name, (method, overrides) in runs.items():
            o = {"train.seed": model_seed, "train.epochs": args.max_epochs}
            o.update({**DAREC_MD, **overrides} if method == "darec" else overrides)
            cfg = config_lib.build_config("synthetic", "lightgcn", method, o)
            world_dir = "planted world" if world.text_signal else "text view is pure noise"
            workdir = out / "runs" / world_dir / f"{name.replace(' ', '_')}-seed{seed}"
            done = workdir / "results.json"
            if done.exists():
                res = json.loads(done.read_text())
            else:
                t0 = time.perf_counter()
                res = train_and_evaluate(
                    cfg, workdir, data=data, progress=False, log=lambda _: None
                )
                res["wall_seconds"] = time.perf_counter() - t0
                done.write_text(json.dumps(res, indent=2) + "\n")
            res["probe"] = probe(cfg, data, workdir, dataclasses.replace(world, seed=seed))
            res["config"] = config_lib.to_dict(cfg)
            res["run"] = workdir.relative_to(out).as_posix()
            results[name].append(res)
            print(
                f"[{label}] seed {seed} {name}: test recall@20 {res['test']['recall@20']:.4f}",
                file=sys.stderr,
                flush=True,
            )
    lines = [
        f"**{label}** — {world.n_users} users, {world.n_items} items, "
        f"{world.interactions_per_user:g} interactions per user on average, LLM dim "
        f"{world.llm_dim}, text_signal={world.text_signal}{_changed_knobs(world)}; "
        f"world seeds {seeds}, model seeds {list(model_seeds)} (paired: every method trains "
        "in the same worlds with the same model seeds; ± and p are over worlds).",
        "",
        "| method | test R@20 | test N@20 | DaRec − method (R@20) | paired t-test p "
        "| R² of s from E^C | R² of c from E^C |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    darec = [r["test"]["recall@20"] for r in results["darec"]]
    for name, rs in results.items():
        r20 = [r["test"]["recall@20"] for r in rs]
        n20 = [r["test"]["ndcg@20"] for r in rs]
        if name == "darec":
            diff, p = "", ""
        else:
            diffs = [a - b for a, b in zip(darec, r20, strict=True)]
            diff = f"{statistics.mean(diffs):+.4f}"
            p = f"{stats.ttest_rel(darec, r20).pvalue:.3f}" if len(seeds) > 1 else ""
        r2s = [r["probe"]["r2_shared"] for r in rs]
        r2c = [r["probe"]["r2_cf"] for r in rs]
        lines.append(
            f"| {name} | {_fmt(r20)} | {_fmt(n20)} | {diff} | {p} | {_fmt(r2s)} | {_fmt(r2c)} |"
        )
    return "\n".join(lines), results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.planted",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="world seeds")
    parser.add_argument(
        "--model-seeds",
        type=int,
        nargs="+",
        default=None,
        help="the model seed of each world (default: the world seed itself)",
    )
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--out", default="runs/planted")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument(
        "--sweep",
        type=float,
        nargs="*",
        default=[],
        help="also run DaRec with every λ, and RLMRec-Con with its kd weight, multiplied by "
        "each of these factors (the alignment-strength curve), "
        "e.g. --sweep 10 0.1 0.01",
    )
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also run DaRec's switchable choices and single-term settings "
        "(score_on, local_assign, recluster_every, local only, global only)",
    )
    parser.add_argument(
        "--world",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="planted-world knobs (SyntheticConfig fields), e.g. --world cf_dim=4 cf_weight=2; "
        "use a separate --out for each world",
    )
    parser.add_argument("--no-noise-world", action="store_true", help="skip the pure-noise world")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    world = SyntheticConfig(**_world_overrides(args.world))
    tables, raw = [], {}
    table, raw["planted"] = run_world(
        "planted world", world, args.seeds, _runs(not args.no_ablations), args, out
    )
    tables.append(table)
    if args.sweep:
        con_base = config_lib.build_config("synthetic", "lightgcn", "rlmrec-con").rlmrec
        sweep_runs = {
            "none": ("none", {}),
            "darec": ("darec", {}),
            "rlmrec-con": ("rlmrec-con", {}),
        }
        for f in args.sweep:
            sweep_runs[f"rlmrec-con kd×{f:g}"] = (
                "rlmrec-con",
                {"rlmrec.kd_weight": con_base.kd_weight * f},
            )
        for f in args.sweep:
            sweep_runs[f"darec λ×{f:g}"] = (
                "darec",
                {key: value * f for key, value in DAREC_MD.items()},
            )
        table, raw["sweep"] = run_world(
            "planted world, alignment-strength sweep", world, args.seeds, sweep_runs, args, out
        )
        tables.append(table)
    if args.variants:
        variant_runs = {k: v for k, v in _runs(False).items() if k != "rlmrec-gen"}
        variant_runs.update({name: ("darec", o) for name, o in VARIANTS.items()})
        table, raw["variants"] = run_world(
            "planted world, DaRec variants", world, args.seeds, variant_runs, args, out
        )
        tables.append(table)
    if not args.no_noise_world:
        noise = dataclasses.replace(world, text_signal=False)
        table, raw["noise"] = run_world(
            "text view is pure noise", noise, args.seeds, _runs(False), args, out
        )
        tables.append(table)
    from experiments.provenance import made_by, provenance

    made = provenance("experiments.planted", sys.argv[1:] if argv is None else list(argv))
    text = (
        made_by(made) + "; every "
        "run's resolved config is in `planted.json` beside this file.\n\n" + "\n\n".join(tables)
    )
    print(text)
    (out / "planted.md").write_text(text + "\n")
    keep = ("run", "seed", "best_epoch", "epochs_run", "test", "probe", "config")
    (out / "planted.json").write_text(
        json.dumps(
            {
                "provenance": made,
                "runs": {
                    k: {m: [{x: r.get(x) for x in keep} for r in rs] for m, rs in v.items()}
                    for k, v in raw.items()
                },
            },
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
