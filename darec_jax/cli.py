"""Command-line parsing shared by the entry points in ``experiments/``."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path

from darec_jax import config as config_lib
from darec_jax.errors import DarecError, RunInterrupted


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.run",
        description="Train a graph CF backbone (optionally with an LLM-alignment method), "
        "early-stop on validation Recall@20 and report the test metrics of the best state.",
    )
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help=f"one of {', '.join(config_lib.DATASETS)} (default: synthetic)",
    )
    parser.add_argument(
        "--backbone",
        default="lightgcn",
        help=f"one of {', '.join(config_lib.BACKBONES)} (default: lightgcn)",
    )
    parser.add_argument(
        "--method", default="darec", help=f"one of {', '.join(config_lib.METHODS)} (default: darec)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="an RLMRec-format folder (trn_mat.pkl, val_mat.pkl, tst_mat.pkl, ...)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        help="where config, logs, checkpoints and results go "
        "(default: runs/<dataset>-<backbone>-<method>-seed<seed>)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: 2023)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --workdir from its latest checkpoint",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set train.lr=5e-4 "
        "(repeatable; --list-keys shows them all)",
    )
    parser.add_argument("--list-keys", action="store_true", help="print every config key and exit")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--no-plots", action="store_true", help="skip the run's figures (training curves, maps)"
    )
    multi = parser.add_argument_group(
        "several processes (hosts)",
        "start one process per host with the same options and its own --process-id; they join "
        "one runtime (jax.distributed) and train on the mesh over all their devices. Defaults "
        "from DAREC_COORDINATOR_ADDRESS, DAREC_NUM_PROCESSES, DAREC_PROCESS_ID; "
        "DAREC_DISTRIBUTED=auto lets JAX find a TPU pod slice, SLURM or Open MPI job itself.",
    )
    multi.add_argument("--coordinator-address", default=None, help="host:port of process 0")
    multi.add_argument("--num-processes", type=int, default=None, help="how many processes")
    multi.add_argument("--process-id", type=int, default=None, help="this process, 0-based")
    return parser


def config_from_args(args: argparse.Namespace) -> config_lib.Config:
    overrides = config_lib.parse_set_args(args.overrides)
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    if args.seed is not None:
        overrides["train.seed"] = str(args.seed)
    return config_lib.build_config(args.dataset, args.backbone, args.method, overrides)


def _is_primary() -> bool:
    import jax

    return jax.process_index() == 0


class _Terminated(Exception):
    """SIGTERM outside the training loop (the loop itself stops cleanly at an epoch's end)."""


def _raise_on_sigterm():
    def handle(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handle)


def resume_command(argv: list[str] | None, workdir: str | None) -> str:
    """The command line that continues this run: the same arguments, its work directory and
    ``--resume``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--workdir" not in args and not any(a.startswith("--workdir=") for a in args):
        args += ["--workdir", str(workdir)]
    if "--resume" not in args:
        args.append("--resume")
    return "python -m experiments.run " + shlex.join(args)


def main_run(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m experiments.run``; returns the process exit code."""
    from darec_jax.train.trainer import train_and_evaluate

    args = run_parser().parse_args(argv)
    if args.list_keys:
        print("\n".join(config_lib.valid_keys()))
        return 0
    workdir = None
    previous_term = _raise_on_sigterm()
    try:
        from darec_jax.parallel import initialize_distributed

        initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
        cfg = config_from_args(args)
        workdir = args.workdir or (
            f"runs/{cfg.data.name}-{cfg.model.backbone}-{cfg.method}-seed{cfg.train.seed}"
        )
        results = train_and_evaluate(
            cfg,
            workdir,
            resume=args.resume,
            progress=not args.no_progress and _is_primary(),
            plots=not args.no_plots,
        )
    except DarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"{exc}. Continue with:\n  {resume_command(argv, workdir)}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, _Terminated) as exc:
        name, code = ("SIGTERM", 143) if isinstance(exc, _Terminated) else ("SIGINT", 130)
        from darec_jax.train.run_dir import has_checkpoint

        if workdir is not None and has_checkpoint(Path(workdir) / "checkpoints" / "latest"):
            tail = f"its last checkpoint is kept; continue with:\n  {resume_command(argv, workdir)}"
        else:
            tail = "nothing was saved"
        print(f"stopped by {name} before an epoch finished; {tail}", file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    print(
        f"results written to {workdir}/results.json "
        f"(test recall@20 {results['test'].get('recall@20', float('nan')):.4f})"
    )
    return 0
