"""Why DaRec does or does not beat direct alignment on the planted worlds: measurements of the
study's trained DaRec models and one-at-a-time changes of its open choices.

Used by ``python -m experiments.study --phase diagnose``. Everything here reads or trains runs on
**evaluation** worlds and chooses nothing: the tuned configurations stay the tuning worlds'.

* :func:`inspect_run`: for one trained DaRec run (its best checkpoint),
  - what E^C and each CF head holds of the planted shared part s and CF-specific part c
    (held-out ridge R², as :func:`experiments.planted.probe`);
  - whether the disentanglement is reached: mean cos² between a row's specific and shared
    parts (0 = orthogonal), and the effective rank of each of the four spaces (exp of the
    entropy of the normalised squared singular values; at most the head width);
  - whether the global alignment is reached: the correlation of the two views' shared-space
    cosine-similarity matrices over 500 users (1 = the same structure);
  - the pull of each term on the embedding tables: the gradient norm of each weighted term
    (BPR, L_or, L_un, L_gl, L_lo) with respect to E_u and E_i, on one batch with the run's own
    kind of draws and clusters;
  - each term's weighted value at the first epoch and at the best epoch (the run's log).
* :data:`ABLATIONS`: DaRec's open choices (docs/darec.md), each changed alone from the tuned
  configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ABLATIONS: dict[str, dict] = {
    "global_loss=kl": {"darec.global_loss": "kl"},
    "score_on=disentangled": {"darec.score_on": "disentangled"},
    "local_assign=matched": {"darec.local_assign": "matched"},
    "lambda_un=0.1": {"darec.lambda_un": 0.1},
    "head_dim=16": {"darec.head_dim": 16},
    "num_clusters=4": {"darec.num_clusters": 4},
    "pair_sample=256": {"darec.pair_sample": 256},
    "lambda_or=0": {"darec.lambda_or": 0.0},
    "lambda_gl=0": {"darec.lambda_gl": 0.0},
    "lambda_lo=0": {"darec.lambda_lo": 0.0},
}
TERMS = ("bpr", "orth", "unif", "global", "local")


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy of σ² / Σσ²) of the centred rows of ``x``: 1 for rank one, d for isotropic."""
    x = np.asarray(x, np.float64)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    p = s / max(s.sum(), 1e-300)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_cos2(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of cos(a_n, b_n)²."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    num = (a * b).sum(1) ** 2
    den = (a * a).sum(1) * (b * b).sum(1) + 1e-30
    return float(np.mean(num / den))


def similarity_agreement(a: np.ndarray, b: np.ndarray, rows: int = 500, seed: int = 0) -> float:
    """Correlation of the off-diagonal cosine similarities of ``a`` and of ``b`` (same rows)."""
    idx = np.random.default_rng(seed).permutation(a.shape[0])[:rows]

    def sims(x):
        x = np.asarray(x, np.float64)[idx]
        x = x / np.sqrt((x * x).sum(1, keepdims=True) + 1e-8)
        s = x @ x.T
        return s[np.triu_indices(len(idx), 1)]

    return float(np.corrcoef(sims(a), sims(b))[0, 1])


def _log_terms(folder: Path, epoch: int) -> dict:
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("epoch") == epoch:
            return {k: row["train"].get(k, 0.0) for k in TERMS}
    return {}


def inspect_run(cfg, data, folder: Path, world) -> dict:
    """The measurements of the module docstring for one DaRec run (cached in the run's folder)."""
    cached = folder / "diagnosis.json"
    if cached.exists():
        return json.loads(cached.read_text())
    import jax

    from darec_jax.data.synthetic import planted_latents
    from darec_jax.train.checkpoint import CheckpointSlot
    from darec_jax.train.step import make_step_functions
    from experiments.planted import ridge_r2

    fns, arrays, state = make_step_functions(cfg, data)
    slot = CheckpointSlot(folder / "checkpoints" / "best")
    params, _ = slot.restore(state.params)
    slot.close()
    lat = planted_latents(world)
    fu, fi = jax.jit(fns.eval_embeddings)(params, arrays)
    spaces = fns.method.spaces(params["method"], fu, fi, (arrays.user_llm, arrays.item_llm))
    out: dict = {}
    sides = ("user", "item")
    latents = {"user": (lat.s_user, lat.c_user), "item": (lat.s_item, lat.c_item)}
    rows = {"E^C": {"user": fu, "item": fi}}
    for head in ("cf_shared", "cf_specific"):
        rows[head] = {side: spaces[side][head] for side in sides}
    for name, by_side in rows.items():  # the mean of users and items, as the probe does
        for j, part in enumerate(("shared", "cf")):
            r2 = [ridge_r2(by_side[side], latents[side][j]) for side in sides]
            out[f"r2_{part}[{name}]"] = float(np.mean(r2))
    for view in ("cf", "llm"):
        cos2 = [
            mean_cos2(spaces[side][f"{view}_specific"], spaces[side][f"{view}_shared"])
            for side in sides
        ]
        out[f"cos2_{view}"] = float(np.mean(cos2))
    for head in ("cf_shared", "cf_specific", "llm_shared", "llm_specific"):
        out[f"rank[{head}]"] = float(np.mean([effective_rank(spaces[s][head]) for s in sides]))
    out["head_width"] = int(spaces["user"]["cf_shared"].shape[1])
    out["global_agreement"] = similarity_agreement(
        spaces["user"]["cf_shared"], spaces["user"]["llm_shared"]
    )
    # The pull of each weighted term on the embedding tables, on one batch of the run's kind.
    key = jax.random.key(cfg.train.seed)
    k_batches, k_step, k_epoch = jax.random.split(key, 3)
    batch = jax.tree.map(lambda x: x[0], fns.epoch_batches(k_batches, arrays))
    inputs = fns.draw_step_inputs(params, k_step, arrays, batch)
    inputs = inputs.replace(epoch_state=fns.method_epoch_state(params, arrays, k_epoch))
    for term in TERMS:

        def value(p, term=term):
            return fns.loss(p, arrays, batch, inputs)[1][term]

        grads = jax.grad(value)(params)["backbone"]
        out[f"grad[{term}]"] = float(
            np.sqrt(sum(float(np.sum(np.square(g))) for g in jax.tree.leaves(grads)))
        )
    result = json.loads((folder / "results.json").read_text())
    best_epoch = int(result.get("best_epoch", 0))
    out["terms_first"] = _log_terms(folder, 0)
    out["terms_best"] = _log_terms(folder, best_epoch)
    cached.write_text(json.dumps(out, indent=1) + "\n")
    return out


def summarise_diagnosis(per_world: list[dict]) -> dict:
    """Mean over worlds of every scalar measurement (nested term dicts flattened)."""
    flat: dict[str, list[float]] = {}
    for d in per_world:
        for k, v in d.items():
            if isinstance(v, dict):
                for t, x in v.items():
                    flat.setdefault(f"{k}.{t}", []).append(float(x))
            else:
                flat.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in flat.items()}
