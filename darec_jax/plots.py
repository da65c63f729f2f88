"""Figures of a run (PNG; needs matplotlib, an optional dependency: ``pip install matplotlib``).

* :func:`training_curves` — every loss term per epoch and the validation metrics, from the run's
  ``metrics.jsonl``.
* :func:`darec_maps` — for a DaRec run, 2-D PCA maps of the four disentangled spaces (CF-specific,
  CF-shared, LLM-specific, LLM-shared; users and items), coloured by preference cluster: the
  spherical k-means clusters DaRec's local alignment uses, from the shared views [Ê^C_sh ‖ Ê^L_sh].

:func:`run_plots` makes the ones that apply to a run; the trainer calls it at the end of a run and
lists the files in ``results.json`` under ``plots``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["darec_maps", "pca_2d", "run_plots", "training_curves"]

# DaRec's heads (its parameter names) -> the maps' titles.
_SPACE_NAMES = {
    "cf_specific": "CF-specific",
    "cf_shared": "CF-shared",
    "llm_specific": "LLM-specific",
    "llm_shared": "LLM-shared",
}


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def training_curves(metrics_path: str | Path, out: str | Path) -> Path:
    """Loss terms (left, one line each, log scale where positive) and validation metrics
    (right) per epoch, from ``metrics.jsonl``."""
    plt = _pyplot()
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    if not records:
        raise ValueError(f"{metrics_path} has no epochs to plot")
    epochs = [r["epoch"] for r in records]
    terms = list(records[0]["train"])
    evals = [r for r in records if "val" in r]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for name in terms:
        values = np.array([r["train"].get(name, np.nan) for r in records], float)
        ax_loss.plot(epochs, np.abs(values), label=name, lw=1.8 if name == "loss" else 1.0)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("|mean term| over the epoch's steps")
    ax_loss.set_title("training loss terms")
    ax_loss.legend(fontsize=7, ncol=2)
    if evals:
        for name in sorted(evals[0]["val"]):
            ax_val.plot([r["epoch"] for r in evals], [r["val"][name] for r in evals], label=name)
        ax_val.legend(fontsize=7, ncol=2)
    ax_val.set_xlabel("epoch")
    ax_val.set_title("validation metrics")
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The rows of ``x`` [n, d] on their first two principal components, [n, 2]."""
    x = np.asarray(x, np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T


def darec_spaces(fns, params, arrays, key) -> dict:
    """{"user" | "item": (the four spaces {name: [n, h]}, cluster ids [n])} of a DaRec model.

    The spaces are :meth:`~darec_jax.methods.Darec.spaces` of the clean forward; the clusters
    :meth:`~darec_jax.methods.Darec.joint_clusters` (spherical k-means, DaRec's K, k-means++
    from ``key``, on the normalised shared views [Ê^C_sh ‖ Ê^L_sh]), as the joint local
    alignment uses them.
    """
    import jax

    method = fns.method
    fu, fi = fns.eval_embeddings(params, arrays)
    spaces = method.spaces(params["method"], fu, fi, (arrays.user_llm, arrays.item_llm))
    keys = dict(zip(("user", "item"), jax.random.split(key), strict=True))
    out = {}
    for side, views in spaces.items():
        assign = method.joint_clusters(views["cf_shared"], views["llm_shared"], keys[side])
        named = {_SPACE_NAMES[head]: np.asarray(x) for head, x in views.items()}
        out[side] = (named, np.asarray(assign))
    return out


def darec_maps(fns, params, arrays, out: str | Path, seed: int = 0, max_points: int = 4000):
    """2 × 4 PCA maps (users, items × the four spaces), coloured by preference cluster."""
    from darec_jax.train.step import key_streams

    plt = _pyplot()
    # The run's evaluation stream: the maps never share a key with training or initialisation.
    spaces = darec_spaces(fns, params, arrays, key_streams(seed)["eval"])
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, 4, figsize=(14, 7))
    for row, side in enumerate(("user", "item")):
        views, assign = spaces[side]
        n = assign.shape[0]
        shown = rng.choice(n, min(n, max_points), replace=False)
        for col, (name, x) in enumerate(views.items()):
            ax = axes[row, col]
            xy = pca_2d(x)[shown]
            ax.scatter(xy[:, 0], xy[:, 1], c=assign[shown], cmap="tab20", s=3, alpha=0.7)
            ax.set_title(f"{side}s: {name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"DaRec spaces (PCA), coloured by the {fns.method.num_clusters} preference clusters "
        "of [E^C_sh ‖ E^L_sh]",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def run_plots(workdir: str | Path, cfg, fns, params, arrays) -> list[str]:
    """The run's figures in ``workdir`` (file names, relative to it)."""
    workdir = Path(workdir)
    made = [training_curves(workdir / "metrics.jsonl", workdir / "training_curves.png")]
    if cfg.method == "darec":
        made.append(darec_maps(fns, params, arrays, workdir / "darec_spaces.png", cfg.train.seed))
    return [p.name for p in made]
