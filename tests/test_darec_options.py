"""DaRec's switchable choices in training: `recluster_every`, `local_assign=matched`,
`score_on=disentangled` (their equivalence with the reference is in test_equivalence_methods)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.losses.darec import match_clusters
from darec_jax.train.step import epoch_key, make_step_functions
from darec_jax.train.trainer import train_and_evaluate
from tests.toy import random_dataset


@pytest.fixture(scope="module")
def data():
    base = random_dataset(n_users=50, n_items=40, per_user=6, seed=3)
    rng = np.random.default_rng(0)
    return dataclasses.replace(
        base,
        user_emb=rng.normal(size=(50, 16)).astype(np.float32),
        item_emb=rng.normal(size=(40, 16)).astype(np.float32),
    )


def _cfg(**overrides):
    base = {
        "train.epochs": 7,
        "train.batch_size": 64,
        "train.test_step": 1,
        "train.patience": 50,
        "model.layer_num": 2,
        "train.seed": 5,
        "darec.num_clusters": 4,
        "darec.pair_sample": 32,
        "darec.lambda_lo": 0.5,
    }
    base.update(overrides)
    return config_lib.build_config("synthetic", "lightgcn", "darec", base)


def _losses(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["train"] for x in lines]


@pytest.mark.slow  # 22 s; the resume-between-reclusterings test covers the kept state
def test_recluster_every_keeps_the_clusters_between_reclusterings(data, tmp_path):
    cfg = _cfg(**{"darec.recluster_every": 3})
    train_and_evaluate(
        cfg, tmp_path / "run", data=data, progress=False, log=lambda _: None, plots=False
    )
    # The same schedule by hand: clusters from epochs 0, 3, 6 (computed from the parameters at
    # the epoch's start with the epoch's clustering key), kept in between.
    fns, arrays, train_state = make_step_functions(cfg, data)
    by_hand, state, states = [], None, []
    for epoch in range(cfg.train.epochs):
        key = epoch_key(cfg.train.seed, epoch)
        if epoch % 3 == 0:
            k_method_state = jax.random.split(key, 3)[2]
            state = fns.jit_method_epoch_state(train_state.params, arrays, k_method_state)
            states.append(state)
        train_state, terms = fns.jit_epoch(train_state, arrays, key)
        for name, value in state.items():  # the epoch ran with exactly these clusters
            np.testing.assert_array_equal(np.asarray(train_state.method_state[name]), value)
        by_hand.append({k: float(v) for k, v in terms.items()})
    assert _losses(tmp_path / "run") == by_hand
    # Reclustering does change the assignments (so keeping them is observable).
    assert any(
        not np.array_equal(a["user_assign"], b["user_assign"])
        for a, b in zip(states[:-1], states[1:], strict=True)
    )
    # Every epoch (the default) differs from every third epoch.
    train_and_evaluate(
        _cfg(), tmp_path / "each", data=data, progress=False, log=lambda _: None, plots=False
    )
    each = _losses(tmp_path / "each")
    assert each[:3] != by_hand[:3] and each[0] == by_hand[0]


@pytest.mark.parametrize(
    "assign",
    ["joint", pytest.param("matched", marks=pytest.mark.slow)],  # matched: 27 s
)
def test_resume_between_reclusterings_is_identical(data, tmp_path, assign):
    cfg = _cfg(**{"darec.recluster_every": 3, "darec.local_assign": assign})

    def run(name, **kwargs):
        return train_and_evaluate(
            cfg,
            tmp_path / name,
            data=data,
            progress=False,
            log=lambda _: None,
            **kwargs,
            plots=False,
        )

    full = run("full")
    assert run("part", max_epochs_this_process=2)["status"] == "paused"  # stops mid-period
    assert run("part", resume=True, max_epochs_this_process=3)["status"] == "paused"
    resumed = run("part", resume=True)
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    assert resumed["test"] == full["test"] and resumed["val"] == full["val"]


def test_matched_assignment_pairs_clusters_one_to_one():
    rng = np.random.default_rng(1)
    cf = rng.normal(size=(5, 3)).astype(np.float32)
    order = np.array([3, 0, 4, 1, 2])
    llm = cf[order] + 0.01 * rng.normal(size=(5, 3)).astype(np.float32)
    partner = jax.jit(match_clusters)(jnp.asarray(cf), jnp.asarray(llm))
    # LLM cluster j is a copy of CF cluster order[j].
    np.testing.assert_array_equal(np.asarray(partner), order)


def test_matched_state_and_training(data):
    cfg = _cfg(**{"darec.local_assign": "matched"})
    fns, arrays, train_state = make_step_functions(cfg, data)
    state = fns.jit_method_epoch_state(train_state.params, arrays, jax.random.key(0))
    assert set(state) == {"user_assign", "user_assign_llm", "item_assign", "item_assign_llm"}
    for name, n in (("user", data.n_users), ("item", data.n_items)):
        for suffix in ("", "_llm"):
            a = np.asarray(state[f"{name}_assign{suffix}"])
            assert a.shape == (n,) and a.min() >= 0 and a.max() < 4
    train_state, terms = fns.jit_epoch(train_state, arrays, jax.random.key(1))
    assert set(train_state.method_state) == set(state)
    assert np.isfinite(float(terms["local"])) and float(terms["local"]) > 0


def test_disentangled_scoring_ranks_with_the_heads(data):
    cfg = _cfg(**{"darec.score_on": "disentangled"})
    fns, arrays, state = make_step_functions(cfg, data)
    params = state.params
    su, si = fns.jit_scoring_embeddings(params, arrays)
    fu, fi = fns.eval_embeddings(params, arrays)
    h = 2 * cfg.model.embedding_size
    assert su.shape == (data.n_users, h) and si.shape == (data.n_items, h)
    base = config_lib.build_config(
        "synthetic", "lightgcn", "darec", {"model.layer_num": 2, "train.seed": 5}
    )
    bfns, _, bstate = make_step_functions(base, data)
    bu, _ = bfns.scoring_embeddings(bstate.params, arrays)
    np.testing.assert_array_equal(np.asarray(bu), np.asarray(fu))  # backbone: F itself


def test_pair_subsets_take_real_rows_of_a_short_last_batch():
    from darec_jax.methods.darec import Darec

    method = Darec(10, 10, pair_sample=8)
    valid = jnp.asarray([1.0] * 3 + [0.0] * 13)
    draws = method.draw_for_batch(jax.random.key(0), 16, valid)
    users = np.asarray(draws["user_subset"])
    assert users.shape == (8,) and len(set(users.tolist())) == 8
    assert set(users[:3].tolist()) == {0, 1, 2}  # every real row, then padding
    items = np.asarray(draws["item_subset"])  # item set [pos (16) ; neg (16)]: 6 real rows
    assert set(items[:6].tolist()) == {0, 1, 2, 16, 17, 18}
    # A subset with one real row: uniformity has no pair and is 0, not NaN.
    from darec_jax.losses.darec import uniformity

    x = jnp.ones((4, 3))
    assert float(uniformity(x, jnp.asarray([1.0, 0.0, 0.0, 0.0]))) == 0.0
    # Many real rows: a uniformly random subset of them (each row drawn about as often).
    counts = np.zeros(16)
    for s in range(200):
        d = method.draw_for_batch(jax.random.key(s), 16, jnp.ones(16))
        counts[np.asarray(d["user_subset"])] += 1
    assert counts.min() > 60 and counts.max() < 140  # expected 100 each
