"""The project's own PyTorch reference for the RLMRec backbones (LightGCN so far).

Written from the clean-room spec (``BACKBONES.md`` §1, §2.2, §4; ``PROTOCOL.md``) in the
conventions of RLMRec's PyTorch code — sparse COO Â built by scipy in float64, edge dropout per
stored entry, sum-reduced BPR divided by B, L2 over every parameter, RLMRec's full-ranking
metrics — so that equivalence tests can prove the JAX code computes the same thing. This is the
only subpackage that imports torch; the rest of ``darec_jax`` never does.
"""

from darec_jax.reference.adjacency import (
    adjacency_edges,
    interaction_matrix,
    interactions_from_matrix,
    normalized_adjacency,
)
from darec_jax.reference.gccf import GCCFRef
from darec_jax.reference.lightgcn import LightGCNRef, bpr_loss_sum, reg_params
from darec_jax.reference.metrics import evaluate, mask_training_items, metrics_from_scores
from darec_jax.reference.sgl import SGLRef
from darec_jax.reference.simgcl import SimGCLRef
from darec_jax.reference.train import fit, make_optimizer, sample_negatives, train_epoch

__all__ = [
    "LightGCNRef",
    "adjacency_edges",
    "bpr_loss_sum",
    "evaluate",
    "fit",
    "interaction_matrix",
    "interactions_from_matrix",
    "make_optimizer",
    "mask_training_items",
    "metrics_from_scores",
    "normalized_adjacency",
    "reg_params",
    "sample_negatives",
    "train_epoch",
    "GCCFRef",
    "SGLRef",
    "SimGCLRef",
]
