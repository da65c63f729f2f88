"""GCCF, SGL and SimGCL in training: DaRec trains on each (its PyTorch reference for these
backbones does not exist yet) in a jitted epoch that compiles once, and each bare backbone runs
end to end. The equivalence with the reference is in tests/test_equivalence_gccf_sgl_simgcl.py.
"""

import dataclasses
import json

import jax
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.train.step import epoch_key, make_step_functions
from tests.toy import assert_reported_metrics_are_the_references, random_dataset

BACKBONES = ("gccf", "sgl", "simgcl")


def _data_with_llm():
    data = random_dataset(n_users=40, n_items=30, per_user=6, seed=11)
    rng = np.random.default_rng(4)
    return dataclasses.replace(
        data,
        user_emb=rng.normal(size=(40, 12)).astype(np.float32),
        item_emb=rng.normal(size=(30, 12)).astype(np.float32),
    )


@pytest.mark.parametrize("backbone", BACKBONES)
def test_darec_trains_on_each_backbone_and_its_epoch_compiles_once(backbone):
    """DaRec (no PyTorch reference for these backbones yet): two jitted epochs (the last batch
    padded) compile once, train every parameter and give finite terms."""
    data = _data_with_llm()
    overrides = {
        "model.layer_num": 2,
        "train.batch_size": 64,
        "darec.num_clusters": 4,
        "darec.pair_sample": 20,
    }
    cfg = config_lib.build_config("synthetic", backbone, "darec", overrides)
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    model = fns.backbone(params)
    assert jax.tree.leaves(params["method"])  # the heads exist at the backbone's final width
    assert params["method"]["cf_specific"]["w1"].shape[1] == model.final_dim
    assert data.train.users.shape[0] % 64 != 0  # the last batch is padded
    before = jax.tree.map(np.array, params)
    for epoch in range(2):
        state, terms = fns.jit_epoch(state, arrays, epoch_key(cfg.train.seed, epoch))
    assert fns.jit_epoch._cache_size() == 1
    assert int(state.epoch) == 2 and int(state.step) == 2 * fns.n_batches
    params = state.params
    expected = {"loss", "bpr", "reg", *model.term_names, *fns.method.term_names}
    assert set(terms) == expected
    assert all(np.isfinite(float(v)) for v in terms.values()), terms
    assert float(terms["orth"]) != 0.0
    moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), params, before)
    assert min(jax.tree.leaves(moved)) > 0.0
    fu, fi = fns.jit_scoring_embeddings(params, arrays)
    assert np.isfinite(np.asarray(fu)).all() and np.isfinite(np.asarray(fi)).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_end_to_end_bare_backbone(backbone, tmp_path):
    from darec_jax.train.trainer import train_and_evaluate

    cfg = config_lib.build_config(
        "synthetic",
        backbone,
        "none",
        {"train.epochs": "2", "train.batch_size": "64", "model.layer_num": "2"},
    )
    data = random_dataset(n_users=50, n_items=40, per_user=6, seed=3)
    res = train_and_evaluate(
        cfg, tmp_path / backbone, data=data, progress=False, log=lambda _: 0, plots=False
    )
    assert res["status"] == "finished"
    assert_reported_metrics_are_the_references(tmp_path / backbone, data, res)
    log = [json.loads(x) for x in (tmp_path / backbone / "metrics.jsonl").read_text().splitlines()]
    train = [r["train"] for r in log if "train" in r]
    assert len(train) == 2
    own = {"gccf": set(), "sgl": {"cl"}, "simgcl": {"cl"}}[backbone]
    assert set(train[-1]) == {"loss", "bpr", "reg", *own}
    assert all(np.isfinite(v) for r in train for v in r.values())
