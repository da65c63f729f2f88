"""Every accelerator question in one short run: correctness, speed, scale and a full training.

    python -m experiments.device_suite --data-dir data/yelp --out device_report
    python -m experiments.device_suite --dry-run --out /tmp/device_dry     # CPU, reduced sizes

Runs on the default JAX device (a GPU where there is one) and writes, after every section,
``device_suite.json`` and ``device_suite.md`` under ``--out`` (so a run stopped by a time limit
still leaves what it measured). Sections, in order:

1. ``environment``: devices, platform, memory, library versions, the commit and command.
2. ``correctness``: the equivalence check (``experiments.equivalence``'s ``compare_training``:
   our JAX step on the device against our PyTorch reference on the CPU, every random draw
   injected, float32 and the highest matmul precision on both sides) on a small planted world,
   for every backbone with ``none`` and for LightGCN with every method.
3. ``agreement``: LightGCN on the dataset, a few epochs on the device and the same epochs in a
   CPU subprocess (``JAX_PLATFORMS=cpu``, same seed, same graph-product implementation): the
   largest relative difference of each epoch's loss terms and of the validation metrics after.
4. ``speed``: LightGCN seconds per epoch and per full evaluation with each graph-product
   implementation the platform has; LightGCN + RLMRec-Con / RLMRec-Gen / DaRec seconds per epoch
   with stand-in ``--llm-dim`` embeddings (DaRec also at ``train.matmul_precision=default``);
   each other backbone's epoch. Medians after a warm-up; first-call (compile) times apart.
5. ``training``: one LightGCN training on the dataset to early stopping (reference
   hyper-parameters): wall time including compilation and the test metrics.
6. ``scale``: LightGCN steps on random graphs of growing size (``--scale-edges``), each in its
   own process: seconds per step and peak device memory (CPU: peak RSS) beside the memory
   model (``memory_model_bytes``). Last, with what is left of ``--budget``: a size whose time,
   projected from the size before (``projected_seconds``), does not fit is skipped and said so.

Without ``--data-dir`` (and always with ``--dry-run``) a planted world stands in for the dataset.
``--dry-run`` shrinks every size (worlds, epochs, repeats, scale) so that the whole suite runs in
a couple of minutes on a 2-core CPU; CI runs it so that the suite cannot rot. Exit status: 0 when
every section ran and every check passed, 1 otherwise, 2 on bad arguments. How to run it on a lent
GPU machine (what travels with the checkout): ``docs/device.md``.
"""

from __future__ import annotations

import os

# Before JAX starts: take device memory as needed (the scale section's subprocesses need the
# card), and leave a flag of the caller's alone.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from experiments.benchmark import _JaxRun, _time_repeats  # noqa: E402

SECTIONS = ("environment", "correctness", "agreement", "speed", "training", "scale")
ALIGNMENT = ("rlmrec-con", "rlmrec-gen", "darec")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Every size the suite uses; :data:`FULL` on a device, :data:`DRY` for the CPU dry run."""

    world_users: int  # planted world of the correctness section
    world_items: int
    equivalence_steps: int
    agreement_epochs: int
    timed_epochs: int
    timed_evals: int
    llm_dim: int
    scale_edges: tuple[int, ...]
    training_epochs: int | None  # None: the preset's (early stopping decides)
    standin_users: int  # planted world standing in for the dataset when there is none
    standin_items: int


FULL = Sizes(
    world_users=300,
    world_items=200,
    equivalence_steps=2,
    agreement_epochs=3,
    timed_epochs=5,
    timed_evals=3,
    llm_dim=1536,
    scale_edges=(10**6, 10**7, 10**8),
    training_epochs=None,
    standin_users=11_000,
    standin_items=11_000,
)
DRY = Sizes(
    world_users=120,
    world_items=90,
    equivalence_steps=1,
    agreement_epochs=2,
    timed_epochs=1,
    timed_evals=1,
    llm_dim=64,
    scale_edges=(2 * 10**4, 5 * 10**4),
    training_epochs=3,
    standin_users=600,
    standin_items=400,
)


def memory_model_bytes(n_edges: int, n_nodes: int, dim: int = 32, layers: int = 3) -> dict:
    """The memory model of a LightGCN step (float32), in bytes, split by what it counts:

    * per node: parameters, gradients and Adam's two moments (16·d) and the layer activations
      kept for the backward pass and their cotangents (8·d·(L+1));
    * per directed edge: senders, receivers, weights and the transposed-graph index (16) and
      each step's uniforms, dropped and transposed weights (12);
    * per training interaction (half the directed edges): user, item, CSR index, negative,
      shuffle index and the epoch's four batch arrays (36);
    * messages (segment-sum executions on an accelerator, when XLA keeps them): each product's
      [E, d] messages and their cotangents, 2·4·d per edge.

    ``total`` counts everything, ``without_messages`` the rest (what a fused gather would
    need)."""
    nodes = n_nodes * (16 * dim + 8 * dim * (layers + 1))
    edges = n_edges * 28
    interactions = (n_edges // 2) * 36
    messages = n_edges * 2 * 4 * dim
    rest = nodes + edges + interactions
    return {
        "nodes": nodes,
        "edges": edges,
        "interactions": interactions,
        "messages": messages,
        "without_messages": rest,
        "total": rest + messages,
    }


# ----------------------------------------------------------------------------- helpers


class Context:
    """What every section reads: arguments, sizes, the dataset and the clock."""

    def __init__(self, args):
        self.args = args
        self.sizes = DRY if args.dry_run else FULL
        if args.scale_edges:
            self.sizes = dataclasses.replace(
                self.sizes, scale_edges=tuple(int(float(e)) for e in args.scale_edges)
            )
        self.start = time.perf_counter()
        self.dataset = "yelp" if args.data_dir and not args.dry_run else "synthetic"
        self._data = None

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.start)

    def overrides(self, extra: dict | None = None) -> dict:
        out = {}
        if self.dataset == "yelp":
            out["data.data_dir"] = self.args.data_dir
        else:
            out["data.synthetic.n_users"] = self.sizes.standin_users
            out["data.synthetic.n_items"] = self.sizes.standin_items
        out.update(extra or {})
        return out

    def config(self, backbone: str, method: str, extra: dict | None = None):
        from darec_jax import config as config_lib

        return config_lib.build_config(self.dataset, backbone, method, self.overrides(extra))

    def data(self):
        """The dataset (with its LLM embeddings where it has them), loaded once."""
        if self._data is None:
            from darec_jax.data import load_dataset

            cfg = self.config("lightgcn", "none")
            self._data = load_dataset(
                cfg.data.name,
                data_dir=cfg.data.data_dir,
                synthetic=cfg.data.synthetic,
                download=False,
            )
        return self._data


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def _device_memory() -> dict:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    keep = ("bytes_limit", "bytes_in_use", "peak_bytes_in_use")
    return {k: int(stats[k]) for k in keep if k in stats}


def _spmm_impls() -> list[str]:
    """The graph-product implementations this platform runs (``native``: CPU with a compiler)."""
    import jax

    from darec_jax.graph import SPMM_IMPLS
    from darec_jax.kernels import native_spmm_available

    on_cpu = jax.default_backend() == "cpu"
    return [i for i in SPMM_IMPLS if i != "native" or (on_cpu and native_spmm_available())]


# ----------------------------------------------------------------------------- sections


def section_environment(ctx: Context) -> dict:
    import jax

    from experiments.provenance import provenance

    versions = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "jraph", "numpy", "torch"):
        try:
            module = __import__(name, fromlist=["__version__"])
            versions[name] = getattr(module, "__version__", "?")
        except ImportError:
            versions[name] = None
    made = provenance("experiments.device_suite", ctx.args.argv)
    if ctx.args.commit:
        made["commit"] = ctx.args.commit
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "device_kind": jax.devices()[0].device_kind,
        "memory": _device_memory(),
        "spmm_impls": _spmm_impls(),
        "versions": versions,
        "provenance": made,
        "dataset": ctx.dataset,
        "sizes": dataclasses.asdict(ctx.sizes),
        "dry_run": ctx.args.dry_run,
    }


def section_correctness(ctx: Context) -> dict:
    from darec_jax import config as config_lib
    from darec_jax.crosscheck.harness import compare_training
    from darec_jax.train.trainer import load_data
    from experiments.equivalence import worst_errors

    world = {
        "data.synthetic.n_users": ctx.sizes.world_users,
        "data.synthetic.n_items": ctx.sizes.world_items,
    }
    combos = [(b, "none") for b in config_lib.BACKBONES]
    combos += [("lightgcn", m) for m in ALIGNMENT]
    rows, data = [], None
    for backbone, method in combos:
        cfg = config_lib.build_config("synthetic", backbone, method, world)
        data = load_data(cfg) if data is None else data
        t0 = time.perf_counter()
        checks = compare_training(cfg, data, steps=ctx.sizes.equivalence_steps, seed=0)
        worst = worst_errors(checks)
        rows.append(
            {
                "backbone": backbone,
                "method": method,
                "ok": all(c.ok for c in checks),
                "failed": [f"{c.kind} {c.name}" for c in checks if not c.ok],
                "worst": worst,
                "seconds": time.perf_counter() - t0,
            }
        )
    return {"ok": all(r["ok"] for r in rows), "rows": rows}


def agreement_losses(ctx: Context) -> dict:
    """LightGCN's per-epoch terms and the validation metrics after them, this process's
    device, ``segment_sum`` products (every platform has it), highest precision."""
    cfg = ctx.config(
        "lightgcn", "none", {"model.spmm_impl": "segment_sum", "train.matmul_precision": "highest"}
    )
    run = _JaxRun(cfg, ctx.data(), cfg.train.seed)
    terms = [run.epoch() for _ in range(ctx.sizes.agreement_epochs)]
    return {"terms": terms, "val": run.evaluate()}


def section_agreement(ctx: Context) -> dict:
    import jax

    here = agreement_losses(ctx)
    cmd = [sys.executable, "-m", "experiments.device_suite", "--agreement-side", *ctx.args.argv]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the CPU side failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    cpu = json.loads(line[len("RESULT ") :])
    term_err = max(
        abs(a[k] - b[k]) / max(abs(b[k]), 1e-12)
        for a, b in zip(here["terms"], cpu["terms"], strict=True)
        for k in b
    )
    metric_err = max(abs(here["val"][k] - cpu["val"][k]) for k in cpu["val"])
    tol = {"term_rel": ctx.args.term_rtol, "metric_abs": ctx.args.metric_atol}
    return {
        "ok": term_err <= tol["term_rel"] and metric_err <= tol["metric_abs"],
        "device": str(jax.devices()[0]),
        "epochs": ctx.sizes.agreement_epochs,
        "max_term_rel_err": term_err,
        "max_metric_abs_err": metric_err,
        "tolerance": tol,
        "device_side": here,
        "cpu_side": cpu,
    }


def section_speed(ctx: Context) -> dict:
    from experiments.benchmark import with_standin_llm

    s = ctx.sizes
    data = ctx.data()
    out: dict = {"lightgcn": {}, "methods": {}, "backbones": {}}

    def measure(cfg, data, evals: int, epochs: int = s.timed_epochs) -> dict:
        t0 = time.perf_counter()
        run = _JaxRun(cfg, data, cfg.train.seed)
        epoch, evaluate, fns = run.epoch, run.evaluate, run.fns
        setup = time.perf_counter() - t0
        first = _time_repeats(epoch, 1)[0]
        row = {
            "setup_seconds": setup,
            "first_epoch_seconds": first,
            "epoch_seconds": _median(_time_repeats(epoch, epochs)),
            "steps_per_epoch": fns.n_batches,
        }
        if evals:
            row["first_eval_seconds"] = _time_repeats(evaluate, 1)[0]
            row["eval_seconds"] = _median(_time_repeats(evaluate, evals))
        return row

    for impl in _spmm_impls():
        out["lightgcn"][impl] = measure(
            ctx.config("lightgcn", "none", {"model.spmm_impl": impl}), data, s.timed_evals
        )
    fastest = min(out["lightgcn"], key=lambda i: out["lightgcn"][i]["epoch_seconds"])
    out["fastest_spmm_impl"] = fastest
    with_llm = with_standin_llm(data, s.llm_dim)
    out["methods"]["none"] = out["lightgcn"][_auto_impl()]
    for method in ALIGNMENT:
        out["methods"][method] = measure(ctx.config("lightgcn", method), with_llm, 0)
    out["methods"]["darec, matmul_precision=default"] = measure(
        ctx.config("lightgcn", "darec", {"train.matmul_precision": "default"}), with_llm, 0
    )
    from darec_jax.config import BACKBONES

    for backbone in BACKBONES:
        if backbone != "lightgcn":
            # Fewer repeats: on the CPU these epochs are 10-100x LightGCN's.
            out["backbones"][backbone] = measure(
                ctx.config(backbone, "none"), data, 1, min(3, s.timed_epochs)
            )
    return out


def _auto_impl() -> str:
    from darec_jax import config as config_lib
    from darec_jax.train.step import resolve_spmm_impl

    return resolve_spmm_impl(config_lib.build_config("synthetic", "lightgcn", "none"))


def scale_side(n_edges: int, steps: int) -> dict:
    """One size of the scale section, in this (fresh) process: LightGCN steps on a random graph
    of about ``n_edges`` directed edges, with Yelp's hyper-parameters."""
    import jax

    from darec_jax import config as config_lib
    from darec_jax.train.step import epoch_key, make_step_functions
    from experiments.benchmark import scaling_dataset

    t0 = time.perf_counter()
    data = scaling_dataset(n_edges)
    cfg = config_lib.build_config("yelp", "lightgcn", "none")
    jax.config.update("jax_default_matmul_precision", cfg.train.matmul_precision)
    fns, arrays, state = make_step_functions(cfg, data)
    setup = time.perf_counter() - t0
    steps = min(steps, fns.n_batches)
    run = jax.jit(fns.epoch_prefix, static_argnums=3, donate_argnums=(0,))
    holder = {"state": state, "calls": 0}

    def call():
        key = epoch_key(0, holder["calls"])
        holder["state"], terms = run(holder["state"], arrays, key, steps)
        jax.block_until_ready(terms)
        holder["calls"] += 1

    first = _time_repeats(call, 1)[0]
    per_step = _median(_time_repeats(call, 3)) / steps
    edges = int(arrays.graph.senders.shape[0])
    nodes = data.n_users + data.n_items
    return {
        "edges": edges,
        "nodes": nodes,
        "interactions": int(data.train.users.shape[0]),
        "spmm_impl": arrays.graph.impl,
        "setup_seconds": setup,
        "first_call_seconds": first,
        "timed_steps": steps,
        "step_seconds": per_step,
        "memory": _device_memory(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "model": memory_model_bytes(edges, nodes),
    }


def section_scale(ctx: Context) -> dict:
    rows, skipped = [], []
    last = None
    for n_edges in ctx.sizes.scale_edges:
        if ctx.left() - ctx.args.reserve <= 0:
            skipped.append({"edges": n_edges, "why": "no budget left"})
            continue
        if last is not None:
            projected = projected_seconds(last, n_edges)
            if projected > ctx.left() - ctx.args.reserve:
                skipped.append({"edges": n_edges, "why": f"about {projected:.0f} s needed"})
                continue
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "experiments.device_suite", "--scale-side", str(n_edges)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            rows.append({"edges_asked": n_edges, "error": tail, "seconds": seconds})
            break  # a larger graph will not fit either
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
        row = json.loads(line[len("RESULT ") :])
        row["process_seconds"] = seconds
        rows.append(row)
        last = row
    return {"rows": rows, "skipped": skipped}


def projected_seconds(row: dict, n_edges: int) -> float:
    """The process time of a scale size of ``n_edges`` from a measured smaller one: its fixed
    part (start-up, imports, compilation) as it was, the graph build and the timed steps
    (4 calls of ``timed_steps`` steps) scaled with the edges."""
    ratio = n_edges / row["edges"]
    steps = 4 * row["timed_steps"] * row["step_seconds"]
    fixed = max(row["process_seconds"] - row["setup_seconds"] - steps, 0.0)
    return fixed + (row["setup_seconds"] + steps) * ratio


def section_training(ctx: Context) -> dict:
    from darec_jax.train.trainer import train_and_evaluate

    extra = {}
    if ctx.sizes.training_epochs is not None:
        extra["train.epochs"] = ctx.sizes.training_epochs
    cfg = ctx.config("lightgcn", "none", extra)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_and_evaluate(
            cfg,
            Path(tmp) / "run",
            data=ctx.data(),
            progress=False,
            log=lambda _: None,
            plots=False,
        )
        wall = time.perf_counter() - t0
    return {
        "wall_seconds": wall,
        "train_seconds": res.get("train_seconds"),
        "best_epoch": res["best_epoch"],
        "epochs_run": res["epochs_run"],
        "stopped_early": res["stopped_early"],
        "test": res["test"],
        "val": res["val"],
    }


RUNNERS = {
    "environment": section_environment,
    "correctness": section_correctness,
    "agreement": section_agreement,
    "speed": section_speed,
    "scale": section_scale,
    "training": section_training,
}


# ----------------------------------------------------------------------------- report


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _gib(b) -> str:
    return "–" if b is None else f"{b / 2**30:.2f}"


def markdown(report: dict) -> str:
    sec = report["sections"]
    lines = ["# Device suite report", ""]
    env = sec.get("environment", {}).get("result")
    if env:
        made = env["provenance"]
        lines += [
            f"Made by `{made['command']}` at commit `{made['commit']}`; backend "
            f"**{env['backend']}** ({env['device_kind']}, {', '.join(env['devices'])}); "
            f"memory limit {_gib(env['memory'].get('bytes_limit'))} GiB; dataset "
            f"{env['dataset']}{' (dry run: reduced sizes)' if env['dry_run'] else ''}; versions "
            + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
            + ".",
            "",
        ]
    lines += ["| section | status | seconds |", "|---|---|---:|"]
    for name in SECTIONS:
        if name in sec:
            lines.append(f"| {name} | {sec[name]['status']} | {sec[name]['seconds']:.1f} |")
    for name in SECTIONS:
        s = sec.get(name)
        if s and s["status"] == "error":
            lines += ["", f"**{name} failed:**", "", "```", s["error"][-1500:], "```"]
    res = sec.get("correctness", {}).get("result")
    if res:
        lines += [
            "",
            "## Correctness: device against the PyTorch reference (CPU)",
            "",
            "| backbone | method | result | terms rel | grads rel | params rel | scoring rel "
            "| metrics abs | s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            w = r["worst"]
            cells = [f"{w[k]:.1e}" if k in w else "–" for k in
                     ("term", "grad", "param", "embedding", "metric")]  # fmt: skip
            verdict = "PASS" if r["ok"] else f"FAIL: {', '.join(r['failed'][:4])}"
            lines.append(
                f"| {r['backbone']} | {r['method']} | {verdict} | {' | '.join(cells)} | "
                f"{r['seconds']:.1f} |"
            )
    res = sec.get("agreement", {}).get("result")
    if res:
        lines += [
            "",
            "## Agreement: the same LightGCN epochs on the device and on the CPU",
            "",
            f"{res['epochs']} epochs on {res['device']} and in a CPU process (segment_sum, "
            f"highest precision): largest relative difference of an epoch's loss term "
            f"{res['max_term_rel_err']:.1e} (allowed {res['tolerance']['term_rel']:g}), largest "
            f"absolute difference of a validation metric after them "
            f"{res['max_metric_abs_err']:.1e} (allowed {res['tolerance']['metric_abs']:g}): "
            f"**{'within' if res['ok'] else 'ABOVE'} tolerance**.",
        ]
    res = sec.get("speed", {}).get("result")
    if res:
        lines += [
            "",
            "## Speed (medians after a warm-up; first call includes compilation)",
            "",
            "| run | s / epoch | first epoch s | s / evaluation | first evaluation s | steps |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for group, label in (("lightgcn", "LightGCN, spmm_impl="), ("methods", "LightGCN + "),
                             ("backbones", "")):  # fmt: skip
            for name, r in res[group].items():
                lines.append(
                    f"| {label}{name} | {_f(r['epoch_seconds'])} | "
                    f"{_f(r['first_epoch_seconds'], 1)} | {_f(r.get('eval_seconds'))} | "
                    f"{_f(r.get('first_eval_seconds'), 1)} | {r['steps_per_epoch']} |"
                )
        lines += ["", f"Fastest graph product here: `{res['fastest_spmm_impl']}`."]
    res = sec.get("scale", {}).get("result")
    if res:
        lines += [
            "",
            "## Scale: LightGCN steps on random graphs (Yelp's hyper-parameters)",
            "",
            "| directed edges | nodes | s / step | peak device GiB | peak RSS GiB "
            "| model GiB (all) | model GiB (no messages) | device peak ÷ model | process s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["rows"]:
            if "error" in r:
                lines.append(f"| {r['edges_asked']:,} | failed | | | | | | | {r['seconds']:.0f} |")
                continue
            peak = r["memory"].get("peak_bytes_in_use")
            ratio = "–" if peak is None else f"{peak / r['model']['total']:.2f}"
            lines.append(
                f"| {r['edges']:,} | {r['nodes']:,} | {r['step_seconds']:.4f} | {_gib(peak)} | "
                f"{_gib(r['peak_rss_mb'] * 2**20)} | {_gib(r['model']['total'])} | "
                f"{_gib(r['model']['without_messages'])} | "
                f"{ratio} | {r['process_seconds']:.0f} |"
            )
        for s in res["skipped"]:
            lines.append(f"| {s['edges']:,} | skipped: {s['why']} | | | | | | | |")
    res = sec.get("training", {}).get("result")
    if res:
        t = res["test"]
        lines += [
            "",
            "## A full LightGCN training",
            "",
            f"{res['epochs_run']} epochs (best {res['best_epoch']}, stopped early: "
            f"{res['stopped_early']}) in **{res['wall_seconds']:.1f} s** wall including "
            f"compilation; test R@20 {t['recall@20']:.4f}, N@20 {t['ndcg@20']:.4f}.",
        ]
    return "\n".join(lines) + "\n"


def _save(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "device_suite.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "device_suite.md").write_text(markdown(report))


def run(args) -> int:
    ctx = Context(args)
    out = Path(args.out)
    report: dict = {"sections": {}}
    failed = False
    for name in args.sections:
        print(f"[device suite] {name} ({ctx.left():.0f} s of the budget left)", file=sys.stderr,
              flush=True)  # fmt: skip
        t0 = time.perf_counter()
        try:
            result = RUNNERS[name](ctx)
            ok = result.get("ok", True) if isinstance(result, dict) else True
            entry = {"status": "ok" if ok else "check failed", "result": result}
            failed |= not ok
        except Exception:  # noqa: BLE001 - one section's failure must not lose the others
            entry = {"status": "error", "error": traceback.format_exc()}
            failed = True
        entry["seconds"] = time.perf_counter() - t0
        report["sections"][name] = entry
        _save(report, out)
    report["total_seconds"] = time.perf_counter() - ctx.start
    _save(report, out)
    print(markdown(report))
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.device_suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", default=None, help="the Yelp split (RLMRec format)")
    parser.add_argument("--out", default="device_report")
    parser.add_argument("--dry-run", action="store_true", help="reduced sizes (CPU check)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--budget", type=float, default=480.0, help="seconds the suite may take")
    parser.add_argument(
        "--reserve", type=float, default=15.0, help="seconds of the budget scale leaves unused"
    )
    parser.add_argument("--scale-edges", nargs="+", default=None, help="sizes, e.g. 1e6 1e7")
    parser.add_argument("--commit", default=None, help="the commit, where git is not at hand")
    parser.add_argument("--term-rtol", type=float, default=1e-4)
    parser.add_argument("--metric-atol", type=float, default=1e-4)
    parser.add_argument("--agreement-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scale-side", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raw = sys.argv[1:] if argv is None else list(argv)
    args.argv = [a for a in raw if a != "--agreement-side"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.scale_side is not None:
        print("RESULT " + json.dumps(scale_side(args.scale_side, steps=8)), flush=True)
        return 0
    if args.agreement_side:
        print("RESULT " + json.dumps(agreement_losses(Context(args))), flush=True)
        return 0
    if args.data_dir and not Path(args.data_dir, "trn_mat.pkl").exists():
        print(f"error: no trn_mat.pkl in --data-dir {args.data_dir}", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
