"""The planted study: where does disentangled alignment (DaRec) beat direct alignment (RLMRec-Con)?

    python -m experiments.study --workdir runs/study --out benchmarks/study        # everything
    python -m experiments.study --phase tune ...     # or: evaluate, curves, report

Worlds are the units. Every world is a planted world (``darec_jax.data.synthetic``) drawn from its
own seed; a model seed is drawn apart from it, and every method trains in the same world with the
same model seed, so differences between methods are paired by world.

Two disjoint ranges of world seeds keep selection apart from evaluation:

* **tuning worlds** (seeds ``TUNE_SEED_BASE + k``) choose every hyper-parameter that is chosen at
  all, from **validation** Recall@20: each alignment method tries the same number of
  configurations (``--budget``; the first is its preset, the rest drawn from its search space
  by a seeded random search), on the same tuning worlds (one per grid cell and repeat, so the
  choice is made across the whole grid); the configuration with the best mean validation
  Recall@20 is chosen;
* **evaluation worlds** (seeds ``EVAL_SEED_BASE + k``) report **test** metrics of the chosen
  configurations only. The command refuses to report on a world seed of the tuning range, and
  refuses to evaluate before the tuning has chosen.

The grid (the map) crosses two axes of the world that Theorem 1 says decide the outcome: the
strength of the CF-specific part (``cf_weight``: how much of behaviour the text cannot see) and the
strength of the text-specific part (``text_specific_weight``: how much of the text has nothing to
do with behaviour). In every cell: none, RLMRec-Con, RLMRec-Gen and DaRec, each tuned.

Strength curves (``--phase curves``): in chosen cells, RLMRec-Con's kd weight and all of DaRec's
λ's multiplied by a common factor (``--strengths``), with test Recall@20 and the held-out probe
R² of the shared and the CF-specific parts from E^C (``experiments.planted.probe``).

Everything is cached in ``--workdir`` (one folder per run; a finished run is never re-run), so
the study resumes where it stopped. ``--out`` gets ``study.md``, the heatmaps and the strength
curves, one JSON per phase (``tuning.json``, ``evaluation.json``, ``curves.json``,
``diagnosis.json``: the command, commit and machine of the phase; every run's world seed, model
seed, overrides, the commit that trained it and its folder ``run``) and ``configs.json``, the
resolved config of every run (:func:`run_configs`; :func:`resolved_config` rebuilds one).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from darec_jax import config as config_lib
from darec_jax.data.synthetic import SyntheticConfig, make_planted_world
from darec_jax.errors import DarecError
from darec_jax.train.guards import NonFiniteError

METHODS = ("none", "rlmrec-con", "rlmrec-gen", "darec")
ALIGNED = ("rlmrec-con", "rlmrec-gen", "darec")
PHASES = ("tune", "evaluate", "curves", "diagnose", "report")
METRIC_KEYS = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20))

# World seeds: evaluation worlds 0, 1, 2, ...; tuning worlds 100000, 100001, ... Model seeds are
# drawn from their own range and paired with the world (the same for every method).
EVAL_SEED_BASE = 0
TUNE_SEED_BASE = 100_000
MODEL_SEED_BASE = 500_000
SEARCH_SEED = 20261203  # seed of the random search over each method's space

# The study's world (smaller than SyntheticConfig's default so that hundreds of runs fit): a
# low-dimensional CF-specific part, which LightGCN can learn when it is strong enough. Every user
# has exactly 10 interactions (6 train, 2 validation, 2 test): every world then has the same
# array shapes, so each compiled program serves every world (with the persistent compilation
# cache in ``--workdir``), which makes the study several times cheaper.
BASE_WORLD = {
    "n_users": 1000,
    "n_items": 800,
    "cf_dim": 4,
    "text_dim": 16,
    "llm_dim": 64,
    "interactions_per_user": 10.0,
    "count_sigma": 0.0,
}
# The training protocol of every run, whatever the method: LightGCN with the reference's Yelp
# values except a larger step and smaller batches, so that runs on these small worlds stop in
# tens of epochs rather than hundreds. It costs accuracy (benchmarks/study/protocol_check.json:
# validation Recall@20 0.303 against 0.318 at lr 1e-3, batch 4096, on one tuning-range world).
PROTOCOL = {"train.lr": 0.01, "train.batch_size": 1024}
DEFAULT_CF_WEIGHTS = (0.5, 1.5, 3.0)
DEFAULT_TEXT_WEIGHTS = (0.5, 1.5, 3.0)

# Search spaces: dotted config keys -> the values tried. The first configuration of every method
# is its preset (the package defaults), the others are drawn from the product of these lists.
SPACES: dict[str, dict[str, tuple]] = {
    "rlmrec-con": {
        "rlmrec.kd_weight": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
        "rlmrec.kd_temperature": (0.05, 0.1, 0.2, 0.5, 1.0),
    },
    "rlmrec-gen": {
        "rlmrec.recon_weight": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
        "rlmrec.mask_ratio": (0.05, 0.1, 0.2, 0.4),
        "rlmrec.recon_temperature": (0.05, 0.1, 0.2, 0.5),
    },
    "darec": {
        "darec.lambda_or": (0.0, 0.01, 0.1, 1.0),
        "darec.lambda_un": (0.0, 0.01, 0.1),
        "darec.lambda_gl": (0.01, 0.03, 0.1, 0.3, 1.0),
        "darec.lambda_lo": (0.001, 0.01, 0.1),
        "darec.num_clusters": (8, 16, 32),
        "darec.local_temperature": (0.1, 0.2, 0.5),
        "darec.head_dim": (0, 16, 64),
        "darec.pair_sample": (256, 1024),
    },
}
# Which keys the strength multiplier scales.
STRENGTH_KEYS = {
    "rlmrec-con": ("rlmrec.kd_weight",),
    "darec": ("darec.lambda_or", "darec.lambda_un", "darec.lambda_gl", "darec.lambda_lo"),
}


# ----------------------------------------------------------------------------- worlds and seeds


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the map."""

    cf_weight: float
    text_weight: float

    @property
    def label(self) -> str:
        return f"cf{self.cf_weight:g}-text{self.text_weight:g}"


def tuning_seeds(n: int) -> list[int]:
    return [TUNE_SEED_BASE + k for k in range(n)]


def evaluation_seeds(n: int) -> list[int]:
    return [EVAL_SEED_BASE + k for k in range(n)]


def is_tuning_seed(seed: int) -> bool:
    return seed >= TUNE_SEED_BASE and seed < MODEL_SEED_BASE


def check_evaluation_seeds(seeds: list[int]) -> None:
    """Refuse to evaluate (or report) on a world that can have been used for choosing."""
    bad = [s for s in seeds if is_tuning_seed(s)]
    if bad:
        raise DarecError(
            f"world seeds {bad} are tuning worlds (seeds {TUNE_SEED_BASE} and up choose the "
            "hyper-parameters); evaluation and reports use evaluation worlds only"
        )
    if any(s < EVAL_SEED_BASE for s in seeds):
        raise DarecError(f"evaluation world seeds start at {EVAL_SEED_BASE}")


def model_seed(world_seed: int) -> int:
    """The model seed paired with a world: the same for every method trained in it, distinct from
    every world seed, and different for every world."""
    return MODEL_SEED_BASE + world_seed % TUNE_SEED_BASE + (world_seed >= TUNE_SEED_BASE) * 100_000


def world_config(cell: Cell, world_seed: int, base: dict | None = None) -> SyntheticConfig:
    """The planted world of ``cell`` drawn from ``world_seed``."""
    knobs = {**BASE_WORLD, **(base or {})}
    return SyntheticConfig(
        **knobs,
        cf_weight=cell.cf_weight,
        text_specific_weight=cell.text_weight,
        seed=world_seed,
    )


def search_configs(method: str, budget: int) -> list[dict]:
    """``budget`` configurations of ``method``: its preset ({}), then distinct draws from its
    space (seeded; the same list every time)."""
    if method == "none":
        return [{}]
    space = SPACES[method]
    keys = sorted(space)
    grid = list(itertools.product(*(space[k] for k in keys)))
    rng = np.random.default_rng([SEARCH_SEED, METHODS.index(method)])
    picks = rng.choice(len(grid), size=min(budget - 1, len(grid)), replace=False)
    return [{}] + [dict(zip(keys, grid[int(i)], strict=True)) for i in picks]


# ----------------------------------------------------------------------------- runs


class Runner:
    """Trains one (world, method, configuration) and caches its result in ``workdir``."""

    def __init__(self, workdir: Path, max_epochs: int, log=print, plan_only: bool = False):
        import jax

        self.workdir = workdir
        self.max_epochs = max_epochs
        self.log = log
        self._worlds: dict = {}
        self.ran = 0
        self.seconds = 0.0
        # plan_only: record the runs a phase needs (``self.planned``) instead of training them.
        self.plan_only = plan_only
        self.planned: list[tuple] = []
        from experiments.provenance import git_commit

        self.commit = git_commit()
        cache = workdir / "jax_cache"
        cache.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    def data(self, world: SyntheticConfig):
        if world not in self._worlds:
            self._worlds.clear()  # one world at a time in memory
            self._worlds[world] = make_planted_world(world)
        return self._worlds[world]

    def config(self, method: str, overrides: dict, world: SyntheticConfig):
        o = {
            **PROTOCOL,
            "train.seed": model_seed(world.seed),
            "train.epochs": self.max_epochs,
            **overrides,
        }
        cfg = config_lib.build_config("synthetic", "lightgcn", method, o)
        return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic=world))

    def _train(self, cfg, folder: Path, world: SyntheticConfig) -> dict:
        """One training; a failure of the checkpoint I/O (seen once under heavy load, inside
        Orbax's asynchronous writer) is retried once from scratch."""
        from darec_jax.train.trainer import train_and_evaluate

        for attempt in (1, 2):
            try:
                return train_and_evaluate(
                    cfg,
                    folder,
                    data=self.data(world),
                    progress=False,
                    log=lambda _: None,
                    plots=False,
                )
            except (ValueError, OSError) as exc:
                if attempt == 2 or isinstance(exc, DarecError):
                    raise
                self.log(f"{folder}: {str(exc).splitlines()[0][:200]}; training it again")
                shutil.rmtree(folder, ignore_errors=True)
        raise AssertionError("unreachable")

    def run(
        self,
        kind: str,
        cell: Cell,
        world_seed: int,
        method: str,
        tag: str,
        overrides: dict,
        probe: bool = False,
    ) -> dict:
        """Test and validation metrics (and the probe) of one run; ``kind``: tune, eval, curve."""
        from experiments.planted import probe as probe_fn

        if kind != "tune":
            check_evaluation_seeds([world_seed])
        world = world_config(cell, world_seed)
        folder = self.workdir / kind / cell.label / f"w{world_seed}" / f"{method}-{tag}"
        run_id = folder.relative_to(self.workdir).as_posix()  # its key in configs.json
        done = folder / "study_result.json"
        if self.plan_only:
            if not done.exists():
                self.planned.append((kind, cell, world_seed, method, tag, overrides, probe))
            zero = {k: 0.0 for k in METRIC_KEYS}
            return {
                "world_seed": world_seed,
                "model_seed": model_seed(world_seed),
                "val": zero,
                "test": zero,
                "probe": {"r2_shared": 0.0, "r2_cf": 0.0},
            }
        if done.exists():
            out = json.loads(done.read_text())
            out.setdefault("run", run_id)
            if probe and "probe" not in out:
                out["probe"] = probe_fn(
                    self.config(method, overrides, world), self.data(world), folder, world
                )
                done.write_text(json.dumps(out, indent=1) + "\n")
            return out
        cfg = self.config(method, overrides, world)
        t0 = time.perf_counter()
        if folder.exists():  # an interrupted run: start it again from scratch
            shutil.rmtree(folder)
        out = {
            "run": run_id,
            "world_seed": world_seed,
            "model_seed": cfg.train.seed,
            "method": method,
            "overrides": overrides,
            "commit": self.commit,
        }
        try:
            res = self._train(cfg, folder, world)
        except NonFiniteError as exc:
            # A diverged run counts as a run that recommends nothing: Recall@20 0 (the
            # alternative, its last good checkpoint, would reward instability).
            zero = {k: 0.0 for k in METRIC_KEYS}
            res = {"val": zero, "test": zero, "best_epoch": -1, "epochs_run": -1}
            out["diverged"] = str(exc).splitlines()[0]
            probe = False
        out.update(
            {
                "val": res["val"],
                "test": res["test"],
                "best_epoch": res["best_epoch"],
                "epochs_run": res["epochs_run"],
                "seconds": time.perf_counter() - t0,
            }
        )
        if probe:
            out["probe"] = probe_fn(cfg, self.data(world), folder, world)
        elif "diverged" in out:
            out["probe"] = {"r2_shared": math.nan, "r2_cf": math.nan}
        done.write_text(json.dumps(out, indent=1) + "\n")
        self.ran += 1
        self.seconds += out["seconds"]
        self.log(
            f"{kind} {cell.label} world {world_seed} {method} {tag}: val R@20 "
            f"{out['val']['recall@20']:.4f}, test R@20 {out['test']['recall@20']:.4f} "
            f"({out['seconds']:.0f} s)"
        )
        return out

    def inspect(self, cell: Cell, world_seed: int, overrides: dict) -> dict:
        """:func:`experiments.study_diagnose.inspect_run` of the tuned DaRec run of one world."""
        from experiments.study_diagnose import inspect_run

        check_evaluation_seeds([world_seed])
        if self.plan_only:
            return {}
        world = world_config(cell, world_seed)
        folder = self.workdir / "eval" / cell.label / f"w{world_seed}" / "darec-tuned"
        cfg = self.config("darec", overrides, world)
        return inspect_run(cfg, self.data(world), folder, world)


# ----------------------------------------------------------------------------- parallel runs

_WORKER: dict = {}


def _worker_init(workdir: str, max_epochs: int) -> None:
    _WORKER["runner"] = Runner(Path(workdir), max_epochs, log=_stderr)


def _worker_run(task: tuple) -> float:
    runner = _WORKER["runner"]
    return runner.run(*task).get("seconds", 0.0)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_phase(runner: Runner, jobs: int, phase, *args):
    """``phase(runner, *args)``, with its unfinished runs trained first by ``jobs`` worker
    processes (each single-threaded) when ``jobs`` > 1."""
    if jobs > 1:
        import concurrent.futures as cf
        import multiprocessing as mp
        import os

        planner = Runner(runner.workdir, runner.max_epochs, plan_only=True)
        phase(planner, *args)
        if planner.planned:
            runner.log(f"{len(planner.planned)} runs to train with {jobs} workers")
            os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(
                jobs,
                mp_context=ctx,
                initializer=_worker_init,
                initargs=(str(runner.workdir), runner.max_epochs),
            ) as pool:
                for seconds in pool.map(_worker_run, planner.planned):
                    runner.ran += 1
                    runner.seconds += seconds
    return phase(runner, *args)


# ----------------------------------------------------------------------------- phases


def tuning_plan(cells: list[Cell], repeats: int) -> list[tuple[Cell, int]]:
    """(cell, tuning world seed) pairs: ``repeats`` tuning worlds per cell, every seed distinct."""
    seeds = tuning_seeds(len(cells) * repeats)
    return [(cells[k % len(cells)], s) for k, s in enumerate(seeds)]


def tune(runner: Runner, cells: list[Cell], repeats: int, budget: int) -> dict:
    """Each aligned method's chosen configuration (best mean validation R@20 over the tuning
    worlds), with every configuration's score."""
    plan = tuning_plan(cells, repeats)
    chosen = {"none": {"overrides": {}, "tried": []}}
    for method in ALIGNED:
        tried = []
        for i, overrides in enumerate(search_configs(method, budget)):
            vals = [
                runner.run("tune", cell, seed, method, f"c{i}", overrides)["val"]["recall@20"]
                for cell, seed in plan
            ]
            tried.append(
                {"index": i, "overrides": overrides, "val_recall@20": statistics.mean(vals)}
            )
        best = max(tried, key=lambda t: t["val_recall@20"])
        chosen[method] = {"overrides": best["overrides"], "index": best["index"], "tried": tried}
    return {
        "worlds": [
            {"cell": c.label, "world_seed": s, "model_seed": model_seed(s)} for c, s in plan
        ],
        "budget": budget,
        "chosen": chosen,
    }


def load_choice(out: Path) -> dict:
    path = out / "tuning.json"
    if not path.exists():
        raise DarecError(
            f"no {path}: run the tuning phase first (--phase tune); evaluation uses the tuned "
            "configurations only"
        )
    return json.loads(path.read_text())


def evaluate(runner: Runner, cells: list[Cell], seeds: list[int], choice: dict) -> dict:
    """Test metrics of every method's chosen configuration in every cell and evaluation world."""
    check_evaluation_seeds(seeds)
    out = {}
    for cell in cells:
        per = {}
        for method in METHODS:
            overrides = choice["chosen"][method]["overrides"]
            per[method] = [runner.run("eval", cell, s, method, "tuned", overrides) for s in seeds]
        out[cell.label] = per
    return out


def curves(
    runner: Runner, cells: list[Cell], seeds: list[int], choice: dict, strengths: list[float]
) -> dict:
    """Test R@20 and probe R² against a common multiplier of each method's tuned weights."""
    check_evaluation_seeds(seeds)
    out = {}
    for cell in cells:
        per = {
            "none": [runner.run("eval", cell, s, "none", "tuned", {}, probe=True) for s in seeds]
        }
        for method, keys in STRENGTH_KEYS.items():
            tuned = config_lib.apply_overrides(
                config_lib.build_config("synthetic", "lightgcn", method),
                choice["chosen"][method]["overrides"],
            )
            for f in strengths:
                overrides = dict(choice["chosen"][method]["overrides"])
                for key in keys:
                    section, name = key.split(".")
                    overrides[key] = getattr(getattr(tuned, section), name) * f
                tag = "tuned" if f == 1 else f"x{f:g}"
                kind = "eval" if f == 1 else "curve"
                per[f"{method} ×{f:g}"] = [
                    runner.run(kind, cell, s, method, tag, overrides, probe=True) for s in seeds
                ]
        out[cell.label] = per
    return out


def diagnose(runner: Runner, cells: list[Cell], seeds: list[int], choice: dict) -> dict:
    """In each cell: the probes of none, Con and DaRec, the measurements of the tuned DaRec
    models (:func:`~experiments.study_diagnose.inspect_run`) and DaRec with each open choice
    changed alone (:data:`~experiments.study_diagnose.ABLATIONS`). Chooses nothing."""
    from experiments.study_diagnose import ABLATIONS

    check_evaluation_seeds(seeds)
    darec = choice["chosen"]["darec"]["overrides"]
    out = {}
    for cell in cells:
        per: dict = {"runs": {}}
        for m in ("none", "rlmrec-con", "darec"):
            o = choice["chosen"][m]["overrides"]
            per["runs"][m] = [runner.run("eval", cell, s, m, "tuned", o, probe=True) for s in seeds]
        for label, change in ABLATIONS.items():
            tag = label.replace("=", "-")
            per["runs"][f"darec {label}"] = [
                runner.run("ablation", cell, s, "darec", tag, {**darec, **change}) for s in seeds
            ]
        per["inspect"] = [runner.inspect(cell, s, darec) for s in seeds]
        out[cell.label] = per
    return out


# ----------------------------------------------------------------------------- resolved configs


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:  # an empty section stays a leaf
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unflatten(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def run_configs(workdir: Path) -> dict:
    """The resolved config of every run in ``workdir`` (the ``config.json`` its training wrote),
    stored compactly: ``base`` holds each field's most common value over the runs, ``runs`` maps
    each run folder (``kind/cell/w<world seed>/<method>-<tag>``, relative to ``workdir``) to
    the fields where its config differs from ``base``. :func:`resolved_config` rebuilds one."""
    flats = {}
    for done in sorted(workdir.glob("*/*/*/*/study_result.json")):
        path = done.parent / "config.json"
        if path.exists():
            flats[done.parent.relative_to(workdir).as_posix()] = _flatten(
                json.loads(path.read_text())
            )
    counts: dict[str, dict[str, tuple[int, object]]] = {}
    for flat in flats.values():
        for key, value in flat.items():
            seen = counts.setdefault(key, {})
            text = json.dumps(value, sort_keys=True)
            n, _ = seen.get(text, (0, value))
            seen[text] = (n + 1, value)
    base = {key: max(seen.values(), key=lambda t: t[0])[1] for key, seen in counts.items()}
    runs = {}
    for folder, flat in flats.items():
        delta = {k: v for k, v in flat.items() if k not in base or base[k] != v}
        absent = sorted(set(base) - set(flat))
        runs[folder] = {**delta, **({"absent": absent} if absent else {})}
    return {"base": _unflatten(base), "runs": runs}


def _configs_json(record: dict) -> str:
    """:func:`run_configs`' output as JSON with one line per run (diffable, compact)."""
    compact = lambda v: json.dumps(v, separators=(",", ":"), sort_keys=True)  # noqa: E731
    runs = ",\n".join(f" {json.dumps(k)}: {compact(v)}" for k, v in record["runs"].items())
    rest = {k: v for k, v in record.items() if k != "runs"}
    return (
        "{\n"
        + ",\n".join(
            [f" {json.dumps(k)}: {compact(v)}" for k, v in rest.items()]
            + [f' "runs": {{\n{runs}\n }}']
        )
        + "\n}\n"
    )


def resolved_config(configs: dict, folder: str) -> dict:
    """One run's resolved config (as its ``config.json`` holds it) from :func:`run_configs`."""
    if folder not in configs["runs"]:
        raise DarecError(f"no resolved config of run {folder!r}")
    delta = dict(configs["runs"][folder])
    absent = set(delta.pop("absent", []))
    flat = {k: v for k, v in _flatten(configs["base"]).items() if k not in absent}
    return _unflatten({**flat, **delta})


# ----------------------------------------------------------------------------- statistics


def paired_interval(a: list[float], b: list[float]) -> dict:
    """Mean of the paired differences a − b with its 95 % t-interval half-width (n ≥ 2)."""
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = statistics.mean(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "half_width": math.inf, "sd": math.nan}
    sd = statistics.stdev(diffs)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "half_width": half, "sd": sd}


def worlds_needed(sd: float, half_width: float = 0.005) -> int:
    """Evaluation worlds for a 95 % interval of ±``half_width`` given the paired sd (normal
    approximation, at least 2)."""
    if not math.isfinite(sd):
        return -1
    return max(2, math.ceil((1.96 * sd / half_width) ** 2))


def summarise(evaluation: dict, metric: str = "recall@20") -> dict:
    rows = {}
    for cell, per in evaluation.items():
        val = {m: [r["test"][metric] for r in runs] for m, runs in per.items()}
        rows[cell] = {
            "means": {m: statistics.mean(v) for m, v in val.items()},
            "darec_minus_con": paired_interval(val["darec"], val["rlmrec-con"]),
            "con_minus_none": paired_interval(val["rlmrec-con"], val["none"]),
            "darec_minus_none": paired_interval(val["darec"], val["none"]),
            "gen_minus_none": paired_interval(val["rlmrec-gen"], val["none"]),
            "world_seeds": [r["world_seed"] for r in per["none"]],
            "model_seeds": [r["model_seed"] for r in per["none"]],
        }
    return rows


def heatmap(rows: dict, cells: list[Cell], key: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfs = sorted({c.cf_weight for c in cells})
    texts = sorted({c.text_weight for c in cells})
    grid = np.full((len(cfs), len(texts)), np.nan)
    fig, ax = plt.subplots(figsize=(4.6, 3.8), dpi=90)
    means = [abs(rows[c.label][key]["mean"]) for c in cells if c.label in rows]
    shade = max(means, default=1.0)
    for c in cells:
        r = rows.get(c.label)
        if r is None:
            continue
        i, j = cfs.index(c.cf_weight), texts.index(c.text_weight)
        d = r[key]
        grid[i, j] = d["mean"]
        mark = "*" if abs(d["mean"]) > d["half_width"] else ""
        ax.text(
            j,
            i,
            f"{d['mean']:+.3f}{mark}\n±{d['half_width']:.3f}",
            ha="center",
            va="center",
            fontsize=8,
            color="white" if abs(d["mean"]) > 0.6 * shade else "black",
        )
    lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower")
    ax.set_xticks(range(len(texts)), [f"{t:g}" for t in texts])
    ax.set_yticks(range(len(cfs)), [f"{c:g}" for c in cfs])
    ax.set_xlabel("text-specific weight (text content irrelevant to behaviour)")
    ax.set_ylabel("CF-specific weight")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="Δ test Recall@20")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _strengths(per: dict, method: str) -> list[tuple[float, list[dict]]]:
    """[(factor, runs)] of one method's curve, in increasing factor."""
    prefix = f"{method} ×"
    out = [(float(k[len(prefix) :]), v) for k, v in per.items() if k.startswith(prefix)]
    return sorted(out)


def curve_plot(curve_data: dict, path: Path) -> None:
    """Test Recall@20 and the probe R² of the CF-specific part from E^C against the strength
    factor, RLMRec-Con and DaRec, one column per cell; bars are 95 % t-intervals over worlds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    cells = list(curve_data)
    fig, axes = plt.subplots(2, len(cells), figsize=(4.2 * len(cells), 6), dpi=90, squeeze=False)
    for j, cell in enumerate(cells):
        per = curve_data[cell]
        for row, (what, label) in enumerate(
            (("recall", "test Recall@20"), ("r2_cf", "R² CF-specific part from E^C"))
        ):
            ax = axes[row, j]
            for method, colour in (("rlmrec-con", "tab:orange"), ("darec", "tab:blue")):
                xs, ms, hs = [], [], []
                for f, runs in _strengths(per, method):
                    v = [
                        r["test"]["recall@20"] if what == "recall" else r["probe"]["r2_cf"]
                        for r in runs
                    ]
                    n = len(v)
                    xs.append(f)
                    ms.append(float(np.mean(v)))
                    half = stats.t.ppf(0.975, n - 1) * np.std(v, ddof=1) / np.sqrt(n)
                    hs.append(float(half) if n > 1 else 0.0)
                ax.errorbar(xs, ms, yerr=hs, marker="o", capsize=3, color=colour, label=method)
            base = [
                r["test"]["recall@20"] if what == "recall" else r["probe"]["r2_cf"]
                for r in per["none"]
            ]
            ax.axhline(float(np.mean(base)), color="grey", ls="--", lw=1, label="none")
            ax.set_xscale("log")
            ax.set_xlabel("strength (× tuned weights)")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(cell, fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _mean_sd(values: list[float]) -> str:
    """mean ± sd over the finite values (a diverged run's probe is NaN)."""
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return "–"
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.4f} ± {sd:.4f}"


def _fmt_interval(d: dict) -> str:
    mark = "*" if abs(d["mean"]) > d["half_width"] else ""
    return f"{d['mean']:+.4f} ± {d['half_width']:.4f}{mark}"


def report(
    out: Path,
    cells: list[Cell],
    choice: dict,
    evaluation: dict | None,
    curve_data: dict | None,
    meta: dict,
    diagnosis: dict | None = None,
) -> str:
    lines = [
        "# The planted study",
        "",
        f"Made by `{meta['command']}` at commit `{meta['commit']}`. Worlds: "
        f"{meta['world']}. Tuning: {len(choice['worlds'])} tuning worlds (seeds "
        f"{choice['worlds'][0]['world_seed']}–{choice['worlds'][-1]['world_seed']}), "
        f"{choice['budget']} configurations per aligned method, chosen by mean validation "
        "Recall@20. Evaluation: test metrics on evaluation worlds only (seeds from "
        f"{EVAL_SEED_BASE}); intervals are 95 % t-intervals of the paired difference over worlds; "
        "* marks an interval that excludes 0.",
        "",
        "Phases (each JSON beside this file records its command, commit and machine; every "
        "run in it records the commit that trained it; `configs.json` holds every run's "
        "resolved config): "
        + "; ".join(f"{k}: `{c}` at `{h[:7]}`" for k, (c, h) in meta.get("phases", {}).items())
        + ".",
        "",
        f"Compute: {meta.get('runs', 0)} trainings, {meta.get('run_seconds', 0) / 3600:.2f} "
        "core-hours of training wall time in all (each run's own clock, summed over the "
        "worker processes).",
        "",
        "## Chosen configurations",
        "",
        "| method | chosen (index) | mean val R@20 | preset's mean val R@20 |",
        "|---|---|---:|---:|",
    ]
    for m in ALIGNED:
        c = choice["chosen"][m]
        best = next(t for t in c["tried"] if t["index"] == c["index"])
        preset = next(t for t in c["tried"] if t["index"] == 0)
        text = ", ".join(f"{k}={v:g}" for k, v in c["overrides"].items()) or "preset"
        lines.append(
            f"| {m} | {text} ({c['index']}) | {best['val_recall@20']:.4f} | "
            f"{preset['val_recall@20']:.4f} |"
        )
    if evaluation:
        rows = summarise(evaluation)
        lines += [
            "",
            "## Evaluation worlds: test Recall@20",
            "",
            "| cell | worlds | none | Con | Gen | DaRec | DaRec − Con | Con − none "
            "| DaRec − none | worlds for ±0.005 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cell in cells:
            r = rows.get(cell.label)
            if r is None:
                continue
            m = r["means"]
            d = r["darec_minus_con"]
            lines.append(
                f"| {cell.label} | {d['n']} | {m['none']:.4f} | {m['rlmrec-con']:.4f} | "
                f"{m['rlmrec-gen']:.4f} | {m['darec']:.4f} | {_fmt_interval(d)} | "
                f"{_fmt_interval(r['con_minus_none'])} | {_fmt_interval(r['darec_minus_none'])} "
                f"| {worlds_needed(d['sd'])} |"
            )
        heatmap(
            rows,
            cells,
            "darec_minus_con",
            "DaRec − RLMRec-Con (test R@20)",
            out / "map_darec_minus_con.png",
        )
        heatmap(
            rows,
            cells,
            "con_minus_none",
            "RLMRec-Con − none (test R@20)",
            out / "map_con_minus_none.png",
        )
        lines += [
            "",
            "![DaRec − Con](map_darec_minus_con.png) ![Con − none](map_con_minus_none.png)",
        ]
    if curve_data:
        curve_plot(curve_data, out / "curves.png")
        lines += ["", "## Strength curves", "", "![strength curves](curves.png)", ""]
        for cell, per in curve_data.items():
            lines += [
                f"**{cell}** (mean ± sd over worlds)",
                "",
                "| run | test R@20 | R² shared from E^C | R² CF-specific from E^C | diverged |",
                "|---|---:|---:|---:|---:|",
            ]
            for name, runs in per.items():
                r20 = [r["test"]["recall@20"] for r in runs]
                rs = [r["probe"]["r2_shared"] for r in runs]
                rc = [r["probe"]["r2_cf"] for r in runs]
                bad = sum("diverged" in r for r in runs)
                lines.append(
                    f"| {name} | {_mean_sd(r20)} | {_mean_sd(rs)} | {_mean_sd(rc)} | "
                    f"{bad} of {len(runs)} |"
                )
            lines += [
                "",
                "| strength | DaRec − Con (test R@20, paired) | DaRec − none | Con − none |",
                "|---:|---:|---:|---:|",
            ]
            none = [r["test"]["recall@20"] for r in per["none"]]
            con = dict(_strengths(per, "rlmrec-con"))
            for f, runs in _strengths(per, "darec"):
                d = [r["test"]["recall@20"] for r in runs]
                c = [r["test"]["recall@20"] for r in con[f]]
                lines.append(
                    f"| ×{f:g} | {_fmt_interval(paired_interval(d, c))} | "
                    f"{_fmt_interval(paired_interval(d, none))} | "
                    f"{_fmt_interval(paired_interval(c, none))} |"
                )
            lines.append("")
    if diagnosis:
        lines += diagnosis_report(diagnosis)
    return "\n".join(lines) + "\n"


def diagnosis_report(diagnosis: dict) -> list[str]:
    """The diagnosis tables: probes, DaRec's measurements, and the ablations against the tuned
    DaRec (paired over worlds)."""
    from experiments.study_diagnose import TERMS, summarise_diagnosis

    lines = ["## Diagnosis (evaluation worlds; nothing here is chosen)", ""]
    for cell, per in diagnosis.items():
        runs = per["runs"]
        n = len(runs["darec"])
        lines += [
            f"**{cell}** ({n} worlds; mean ± sd)",
            "",
            "| model | test R@20 | R² shared from E^C | R² CF-specific from E^C |",
            "|---|---:|---:|---:|",
        ]
        for m in ("none", "rlmrec-con", "darec"):
            rs = runs[m]
            lines.append(
                f"| {m} | {_mean_sd([r['test']['recall@20'] for r in rs])} | "
                f"{_mean_sd([r['probe']['r2_shared'] for r in rs])} | "
                f"{_mean_sd([r['probe']['r2_cf'] for r in rs])} |"
            )
        d = summarise_diagnosis([x for x in per["inspect"] if x])
        if d:
            lines += [
                "",
                "DaRec's trained model (means over worlds): what each CF space holds of the "
                "planted parts, whether the parts are disentangled and aligned, and the pull of "
                "each weighted term on the embedding tables (gradient norm on one batch).",
                "",
                "| space | R² shared | R² CF-specific | effective rank |",
                "|---|---:|---:|---:|",
                f"| E^C | {d['r2_shared[E^C]']:.3f} | {d['r2_cf[E^C]']:.3f} | |",
            ]
            for head in ("cf_shared", "cf_specific"):
                lines.append(
                    f"| {head} | {d[f'r2_shared[{head}]']:.3f} | {d[f'r2_cf[{head}]']:.3f} | "
                    f"{d[f'rank[{head}]']:.1f} of {d['head_width']:.0f} |"
                )
            for head in ("llm_shared", "llm_specific"):
                lines.append(f"| {head} | | | {d[f'rank[{head}]']:.1f} of {d['head_width']:.0f} |")
            lines += [
                "",
                f"cos²(specific, shared): CF {d['cos2_cf']:.3f}, LLM {d['cos2_llm']:.3f}; "
                f"agreement of the two shared spaces' similarity structure (correlation over "
                f"500 users): {d['global_agreement']:.3f}.",
                "",
                "| term | gradient norm on E | value, first epoch | value, best epoch |",
                "|---|---:|---:|---:|",
            ]
            for t in TERMS:
                lines.append(
                    f"| {t} | {d[f'grad[{t}]']:.2e} | {d.get(f'terms_first.{t}', 0.0):.2e} | "
                    f"{d.get(f'terms_best.{t}', 0.0):.2e} |"
                )
        tuned = [r["test"]["recall@20"] for r in runs["darec"]]
        con = [r["test"]["recall@20"] for r in runs["rlmrec-con"]]
        lines += [
            "",
            "| DaRec with one choice changed | test R@20 | − tuned DaRec | − RLMRec-Con |",
            "|---|---:|---:|---:|",
        ]
        for name, rs in runs.items():
            if not name.startswith("darec "):
                continue
            vals = [r["test"]["recall@20"] for r in rs]
            lines.append(
                f"| {name[6:]} | {_mean_sd(vals)} | {_fmt_interval(paired_interval(vals, tuned))} "
                f"| {_fmt_interval(paired_interval(vals, con))} |"
            )
        lines.append("")
    return lines


# ----------------------------------------------------------------------------- command


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m experiments.study",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--phase", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument("--workdir", default="runs/study")
    p.add_argument("--out", default="benchmarks/study")
    p.add_argument("--cf-weights", type=float, nargs="+", default=list(DEFAULT_CF_WEIGHTS))
    p.add_argument("--text-weights", type=float, nargs="+", default=list(DEFAULT_TEXT_WEIGHTS))
    p.add_argument("--tune-repeats", type=int, default=1, help="tuning worlds per cell")
    p.add_argument("--budget", type=int, default=8, help="configurations per aligned method")
    p.add_argument("--eval-worlds", type=int, default=16, help="evaluation worlds per cell")
    p.add_argument(
        "--curve-cells",
        nargs="*",
        default=None,
        help="cells (CF:TEXT, e.g. 3:3) of the strength curves; default: the corners "
        "of the highest CF weight",
    )
    p.add_argument("--curve-worlds", type=int, default=8)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.1, 1, 10, 100])
    p.add_argument(
        "--diagnose-cells",
        nargs="*",
        default=None,
        help="cells (CF:TEXT) of --phase diagnose; default: the lowest CF and text weights, "
        "and the highest CF with the lowest text weight",
    )
    p.add_argument("--diagnose-worlds", type=int, default=8)
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one thread each)")
    return p.parse_args(argv)


def _cells(args) -> list[Cell]:
    return [Cell(c, t) for c in args.cf_weights for t in args.text_weights]


def _curve_cells(args) -> list[Cell]:
    if args.curve_cells is None:
        top = max(args.cf_weights)
        return [Cell(top, min(args.text_weights)), Cell(top, max(args.text_weights))]
    return _parse_cells(args.curve_cells)


def _diagnose_cells(args) -> list[Cell]:
    if args.diagnose_cells is None:
        low = min(args.text_weights)
        return [Cell(min(args.cf_weights), low), Cell(max(args.cf_weights), low)]
    return _parse_cells(args.diagnose_cells)


def _parse_cells(items: list[str]) -> list[Cell]:
    out = []
    for item in items:
        cf, sep, text = item.partition(":")
        if not sep:
            raise DarecError(f"--curve-cells expects CF:TEXT, got {item!r}")
        out.append(Cell(float(cf), float(text)))
    return out


def main(argv=None) -> int:
    from experiments.provenance import provenance

    args = parse_args(argv)
    out, work = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    meta = provenance("experiments.study", sys.argv[1:] if argv is None else list(argv))
    meta["world"] = ", ".join(f"{k}={v}" for k, v in BASE_WORLD.items())
    runner = Runner(work, args.max_epochs, log=lambda s: print(s, file=sys.stderr, flush=True))
    cells = _cells(args)
    try:
        if "tune" in args.phase:
            choice = run_phase(runner, args.jobs, tune, cells, args.tune_repeats, args.budget)
            (out / "tuning.json").write_text(json.dumps({**choice, **meta}, indent=1) + "\n")
        choice = load_choice(out)
        evaluation = curve_data = None
        eval_seeds = evaluation_seeds(args.eval_worlds)
        if "evaluate" in args.phase or "report" in args.phase:
            if "evaluate" in args.phase:
                evaluation = run_phase(runner, args.jobs, evaluate, cells, eval_seeds, choice)
            elif (out / "evaluation.json").exists():
                evaluation = json.loads((out / "evaluation.json").read_text())["runs"]
        if evaluation and "evaluate" in args.phase:
            (out / "evaluation.json").write_text(
                json.dumps({"runs": evaluation, **meta}, indent=1) + "\n"
            )
        if "curves" in args.phase:
            curve_data = run_phase(
                runner,
                args.jobs,
                curves,
                _curve_cells(args),
                evaluation_seeds(args.curve_worlds),
                choice,
                args.strengths,
            )
            (out / "curves.json").write_text(
                json.dumps({"runs": curve_data, **meta}, indent=1) + "\n"
            )
        elif (out / "curves.json").exists():
            curve_data = json.loads((out / "curves.json").read_text())["runs"]
        diagnosis = None
        if "diagnose" in args.phase:
            diagnosis = run_phase(
                runner,
                args.jobs,
                diagnose,
                _diagnose_cells(args),
                evaluation_seeds(args.diagnose_worlds),
                choice,
            )
            (out / "diagnosis.json").write_text(
                json.dumps({"runs": diagnosis, **meta}, indent=1) + "\n"
            )
        elif (out / "diagnosis.json").exists():
            diagnosis = json.loads((out / "diagnosis.json").read_text())["runs"]
        if evaluation:
            for per in evaluation.values():
                for runs in per.values():
                    check_evaluation_seeds([r["world_seed"] for r in runs])
        meta["phases"] = {}
        for name in ("tuning", "evaluation", "curves", "diagnosis"):
            path = out / f"{name}.json"
            if path.exists():
                made = json.loads(path.read_text())
                meta["phases"][name] = (made.get("command", "?"), made.get("commit", "?"))
        done = [json.loads(p.read_text()) for p in work.glob("*/*/*/*/study_result.json")]
        meta["runs"] = len(done)
        configs = run_configs(work)
        made = {k: meta[k] for k in ("commit", "command", "machine")}
        (out / "configs.json").write_text(_configs_json({**configs, "made_by": made}))
        meta["run_seconds"] = sum(d.get("seconds", 0.0) for d in done)
        text = report(out, cells, choice, evaluation, curve_data, meta, diagnosis)
        (out / "study.md").write_text(text)
        print(text)
        print(f"{runner.ran} runs trained now, {runner.seconds:.0f} s", file=sys.stderr)
    except DarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
