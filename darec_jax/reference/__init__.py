"""The project's own PyTorch reference of every backbone, method and loss.

Written from this project's description of RLMRec's models (``docs/backbones.md``,
``docs/baselines.md``, ``docs/darec.md``, ``docs/protocol.md``) in the conventions of RLMRec's
PyTorch code — sparse COO Â built by scipy in float64, edge dropout per stored entry, sum-reduced
BPR divided by B, L2 over every parameter, full-ranking metrics summed in float64 — so that the
equivalence tests can show the JAX code computes the same thing. It imports torch, numpy and
scipy only, never JAX nor the rest of ``darec_jax``; the comparison (:mod:`darec_jax.crosscheck`)
is the one place where both implementations meet. Section numbers (§) and quirk tags (Qnn) in
its comments refer to ``docs/backbones.md``.
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
