"""Checkpoints in the PyTorch reference's ``state_dict`` format: export ours, evaluate theirs.

    # a finished run's best state as a reference-format file (.pt needs PyTorch; .npz does not)
    python -m experiments.state_dict export --workdir runs/yelp-gccf-none-seed2023 --out gccf.pt

    # evaluate a reference-format state_dict (RLMRec's names) with our JAX code, and optionally
    # with our PyTorch reference too, on the validation or test split
    python -m experiments.state_dict evaluate --state-dict gccf.pt --dataset yelp \\
        --backbone gccf --method none --data-dir data/yelp --reference

Names and layouts: see ``darec_jax/crosscheck/interop.py``. ``evaluate`` builds the model from the
dataset,
backbone, method and ``--set`` overrides given (they must match the ones the file was saved
with: a missing or unexpected name, or a shape that differs, is reported and nothing runs).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from darec_jax import config as config_lib
from darec_jax.errors import DarecError


def _params_and_data(cfg):
    from darec_jax.train.step import make_step_functions
    from darec_jax.train.trainer import load_data

    data = load_data(cfg)
    fns, arrays, state = make_step_functions(cfg, data)
    return data, fns, arrays, state.params


def export_run(workdir: str | Path, out: str | Path, which: str = "best") -> Path:
    """Write the ``which`` checkpoint of the run in ``workdir`` as a reference-format file."""
    from darec_jax.crosscheck.interop import save_state_dict, to_state_dict
    from darec_jax.train.trainer import restore_run

    cfg, _, _, _, params = restore_run(workdir, which)
    return save_state_dict(out, to_state_dict(cfg, params))


def evaluate_state_dict(
    cfg, path: str | Path, split: str = "test", reference: bool = False
) -> dict[str, dict[str, float]]:
    """Metrics of a reference-format state_dict on ``split``: {"jax": …} (and "reference")."""
    from darec_jax.crosscheck.interop import from_state_dict, load_state_dict
    from darec_jax.eval import evaluate_embeddings, prepare_split

    state_dict = load_state_dict(path)
    data, fns, arrays, template = _params_and_data(cfg)
    params = from_state_dict(cfg, state_dict, template)
    split = "test" if split == "test" else "val"
    task = prepare_split(data, split, cfg.eval.user_chunk)
    fu, fi = fns.jit_scoring_embeddings(params, arrays)
    ks = tuple(cfg.eval.ks)
    out = {"jax": evaluate_embeddings(fu, fi, task, ks, cfg.eval.recall_denominator)}
    if reference:
        out["reference"] = _reference_metrics(cfg, data, state_dict, getattr(data, split), ks)
    return out


def _reference_metrics(cfg, data, state_dict, target, ks) -> dict[str, float]:
    try:
        import torch
    except ImportError as exc:
        raise DarecError("--reference needs PyTorch (pip install torch==2.13.0)") from exc
    from darec_jax.crosscheck.factory import build_reference
    from darec_jax.reference import evaluate
    from darec_jax.reference.state_dict import load_rlmrec_state_dict

    if cfg.eval.recall_denominator != "gt":
        raise DarecError("--reference evaluates with RLMRec's recall denominator only (gt)")
    torch.set_float32_matmul_precision("highest")
    model, _ = build_reference(cfg, data)
    load_rlmrec_state_dict(model, state_dict)
    model.eval()
    with torch.no_grad():
        return evaluate(
            model,
            data.n_items,
            data.train.users,
            data.train.items,
            target.users,
            target.items,
            ks,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.state_dict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="a run's checkpoint → reference-format file")
    exp.add_argument("--workdir", required=True, help="a run folder of experiments.run")
    exp.add_argument("--checkpoint", choices=("best", "latest"), default="best")
    exp.add_argument("--out", required=True, help="file to write: .pt / .pth (torch) or .npz")
    ev = sub.add_parser("evaluate", help="evaluate a reference-format state_dict")
    ev.add_argument("--state-dict", required=True, help=".pt / .pth / .npz file")
    ev.add_argument("--dataset", required=True, help=", ".join(config_lib.DATASETS))
    ev.add_argument("--backbone", required=True, help=", ".join(config_lib.BACKBONES))
    ev.add_argument("--method", required=True, help=", ".join(config_lib.METHODS))
    ev.add_argument("--data-dir", default=None)
    ev.add_argument("--split", choices=("test", "val"), default="test")
    ev.add_argument("--reference", action="store_true", help="also evaluate with the reference")
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            path = export_run(args.workdir, args.out, args.checkpoint)
            print(f"wrote {path}")
            return 0
        overrides = config_lib.parse_set_args(args.overrides)
        if args.data_dir is not None:
            overrides["data.data_dir"] = args.data_dir
        cfg = config_lib.build_config(args.dataset, args.backbone, args.method, overrides)
        result = evaluate_state_dict(cfg, args.state_dict, args.split, args.reference)
    except DarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for side, metrics in result.items():
        line = " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))
        print(f"{side:>9}: {line}")
    if "reference" in result:
        diff = max(abs(result["jax"][k] - result["reference"][k]) for k in result["jax"])
        print(f"max |jax − reference| over the metrics: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
