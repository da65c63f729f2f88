"""darec_jax.crosscheck.factory: the reference model of every (backbone, method) from a config.

The equivalence tests build their reference sides through the factory (and so check its
hyper-parameter mapping numerically); here, for all 6 × 4 combinations, the reference holds
parameters of exactly our shapes, GCCF's adjacency has self-loops only for the bare model, and bad
names fail clearly.
"""

from collections import Counter

import jax
import pytest

from darec_jax import config as config_lib
from darec_jax.config import BACKBONES
from darec_jax.methods import make_method
from darec_jax.train.step import init_model
from tests.toy import random_dataset, with_llm_embeddings

torch = pytest.importorskip("torch")
factory = pytest.importorskip("darec_jax.crosscheck.factory")

METHODS = ("none", "rlmrec-con", "rlmrec-gen", "darec")
LLM_DIM = 12


@pytest.fixture(scope="module")
def data():
    return with_llm_embeddings(random_dataset(n_users=30, n_items=24, per_user=5, seed=3), LLM_DIM)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_reference_has_our_parameter_shapes(backbone, method, data):
    overrides = {"model.autocf.seed_num": 3, "model.dccf.intent_num": 8, "darec.num_clusters": 4}
    cfg = config_lib.build_config("synthetic", backbone, method, overrides)
    model, adj = factory.build_reference(cfg, data)
    llm_dim = LLM_DIM if method != "none" else 0
    _, params = init_model(
        cfg, data.n_users, data.n_items, make_method(cfg, data.n_users, data.n_items), llm_dim
    )
    ours = Counter()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if str(path[-1].key).startswith("gt_w"):  # AutoCF's GT weights, stacked over layers
            ours[tuple(leaf.shape[1:])] += leaf.shape[0]
        else:
            ours[tuple(leaf.shape)] += 1
    theirs = Counter(tuple(p.shape) for p in model.parameters())
    assert theirs == ours
    assert model.reg_weight == cfg.model.reg_weight
    diagonal = int((adj._indices()[0] == adj._indices()[1]).sum())
    assert diagonal == (
        data.n_users + data.n_items if (backbone, method) == ("gccf", "none") else 0
    )


def test_unknown_names_fail_clearly(data):
    cfg = config_lib.build_config("synthetic", "lightgcn", "none")
    with pytest.raises(ValueError, match="unknown backbone 'mf'"):
        factory.build_reference(config_lib.apply_overrides(cfg, {"model.backbone": "mf"}), data)


def test_alignment_method_without_llm_embeddings_fails_clearly():
    cfg = config_lib.build_config("synthetic", "sgl", "darec")
    with pytest.raises(ValueError, match="needs the dataset's LLM embeddings"):
        factory.build_reference(cfg, random_dataset(n_users=10, n_items=8, per_user=3))
