"""Draw (again) the figures of a finished run: ``python -m experiments.plots --workdir RUN``.

Writes ``training_curves.png`` (every loss term per epoch, validation metrics) and, for a DaRec
run, ``darec_spaces.png`` (PCA maps of the CF / LLM shared and specific spaces of users and items,
coloured by preference cluster) into the run folder, from its metrics log and its best
checkpoint. ``experiments.run`` draws them itself at the end of a run. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import sys

from darec_jax.errors import DarecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.plots", description=__doc__)
    parser.add_argument("--workdir", required=True, help="a run folder of experiments.run")
    args = parser.parse_args(argv)
    try:
        from darec_jax.plots import run_plots
        from darec_jax.train.trainer import restore_run

        cfg, _, fns, arrays, params = restore_run(args.workdir)
        made = run_plots(args.workdir, cfg, fns, params, arrays)
    except (DarecError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name in made:
        print(f"wrote {args.workdir}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
