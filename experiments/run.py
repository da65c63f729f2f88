"""Train and evaluate one configuration: ``python -m experiments.run --dataset yelp``."""

import sys

from darec_jax.cli import main_run

if __name__ == "__main__":
    sys.exit(main_run())
