"""Datasets: RLMRec-format folders (safely unpickled and validated), the download cache, and the
synthetic planted world (docs/protocol.md, darec_jax/data/synthetic.py)."""

from darec_jax.data.dataset import InteractionData, Split, load_rlmrec_folder
from darec_jax.data.download import default_cache_dir
from darec_jax.data.pickles import safe_load_pickle
from darec_jax.data.registry import DATASETS, load_dataset
from darec_jax.data.synthetic import SyntheticConfig, make_planted_world

__all__ = [
    "DATASETS",
    "InteractionData",
    "Split",
    "SyntheticConfig",
    "default_cache_dir",
    "load_dataset",
    "load_rlmrec_folder",
    "make_planted_world",
    "safe_load_pickle",
]
