"""Negative sampling, the train step, early stopping, resume and compile-once."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.errors import ConfigError
from darec_jax.train.sampling import csr_from_pairs, is_positive, sample_negatives
from darec_jax.train.step import epoch_key, make_step_functions
from darec_jax.train.trainer import train_and_evaluate
from tests.toy import assert_reported_metrics_are_the_references


def test_is_positive_matches_set_membership():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 7, 40)
    items = rng.integers(0, 9, 40)
    positives = set(zip(users.tolist(), items.tolist(), strict=True))
    indptr, indices, steps = csr_from_pairs(7, users, items)
    qu, qi = np.meshgrid(np.arange(7), np.arange(9), indexing="ij")
    got = is_positive(
        jnp.asarray(qu.ravel()),
        jnp.asarray(qi.ravel()),
        jnp.asarray(indptr),
        jnp.asarray(indices),
        steps,
    )
    expect = [(u, i) in positives for u, i in zip(qu.ravel(), qi.ravel(), strict=True)]
    np.testing.assert_array_equal(np.asarray(got), expect)


def test_negatives_avoid_positives_and_are_uniform():
    # User 0 likes items 0..7 of 10, so its negatives must be uniform over {8, 9}.
    users = np.array([0] * 8 + [1])
    items = np.array(list(range(8)) + [3])
    indptr, indices, steps = csr_from_pairs(2, users, items)
    anchors = jnp.asarray(np.repeat([0, 1], 20000))
    negs = np.asarray(
        sample_negatives(
            jax.random.key(0), anchors, 10, jnp.asarray(indptr), jnp.asarray(indices), steps
        )
    )
    u0, u1 = negs[:20000], negs[20000:]
    assert set(u0.tolist()) == {8, 9}
    assert abs(np.mean(u0 == 8) - 0.5) < 0.02
    assert 3 not in set(u1.tolist())
    counts = np.bincount(u1, minlength=10)[[0, 1, 2, 4, 5, 6, 7, 8, 9]]
    assert counts.min() > 0.8 * 20000 / 9 and counts.max() < 1.2 * 20000 / 9


def _tiny_config(**overrides):
    base = {
        "train.epochs": "12",
        "train.batch_size": "64",
        "model.layer_num": "2",
        "train.seed": "7",
    }
    base.update(overrides)
    return config_lib.build_config("synthetic", "lightgcn", "none", base)


def test_epoch_scan_trains_and_matches_step_loop(toy_data):
    """The compiled epoch is the same computation as its steps run one by one."""
    cfg = _tiny_config()
    fns, arrays, state = make_step_functions(cfg, toy_data)
    key = epoch_key(cfg.train.seed, 0)
    k_batches, k_steps, _ = jax.random.split(key, 3)  # batches, steps, method state
    batches = fns.epoch_batches(k_batches, arrays)
    step_keys = jax.random.split(k_steps, fns.n_batches)
    by_step = state
    for b in range(fns.n_batches):
        batch = jax.tree.map(lambda x, b=b: x[b], batches)
        inputs = fns.draw_step_inputs(by_step.params, step_keys[b], arrays, batch)
        by_step, _ = fns.jit_step(by_step, arrays, batch, inputs)
    # Padded final batch: only real rows are counted.
    assert float(batches.valid.sum()) == fns.n_interactions
    scanned, terms = fns.jit_epoch(state, arrays, key)
    chex.assert_trees_all_close(by_step.params, scanned.params, rtol=1e-5, atol=1e-7)
    assert int(scanned.epoch) == 1 and int(scanned.step) == int(by_step.step) == fns.n_batches
    assert set(terms) == {"loss", "bpr", "reg"}


def test_end_to_end_run_and_artifacts(toy_data, tmp_path):
    cfg = _tiny_config()
    lines = []
    res = train_and_evaluate(
        cfg, tmp_path / "run", data=toy_data, progress=False, log=lines.append, plots=False
    )
    assert res["status"] == "finished"
    for name in ("config.json", "metrics.jsonl", "results.json"):
        assert (tmp_path / "run" / name).exists()
    assert (tmp_path / "run" / "checkpoints" / "latest").is_dir()
    assert (tmp_path / "run" / "checkpoints" / "best").is_dir()
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log if "val" in r] == [0, 3, 6, 9]
    assert log[-1]["train"]["loss"] < log[0]["train"]["loss"]
    assert res["best_epoch"] in (0, 3, 6, 9)
    assert_reported_metrics_are_the_references(tmp_path / "run", toy_data, res)
    assert any("validation" in line for line in lines)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"] == res["test"] and saved["versions"]["jax"] == jax.__version__
    # The same workdir is not silently overwritten.
    with pytest.raises(ConfigError, match="--resume"):
        train_and_evaluate(cfg, tmp_path / "run", data=toy_data, progress=False, plots=False)


def test_resume_gives_identical_results(toy_data, tmp_path):
    cfg = _tiny_config(**{"train.epochs": "20"})

    def run(name, **kwargs):
        return train_and_evaluate(
            cfg,
            tmp_path / name,
            data=toy_data,
            progress=False,
            log=lambda _: None,
            **kwargs,
            plots=False,
        )

    full = run("full")
    part = run("part", max_epochs_this_process=5)
    assert part == {"status": "paused", "next_epoch": 5}
    part = run("part", resume=True, max_epochs_this_process=7)
    assert part["status"] == "paused"
    resumed = run("part", resume=True)
    assert resumed["test"] == full["test"] and resumed["val"] == full["val"]
    assert resumed["best_epoch"] == full["best_epoch"]
    full_log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    part_log = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [
        {k: v for k, v in json.loads(x).items() if k != "eval_seconds"} for x in lines
    ]
    assert strip(part_log) == strip(full_log)
    # Resuming with different options is refused.
    other = _tiny_config(**{"train.epochs": "20", "train.lr": "0.01"})
    with pytest.raises(ConfigError, match="train.lr"):
        train_and_evaluate(
            other, tmp_path / "part", data=toy_data, progress=False, resume=True, plots=False
        )


def test_jitted_functions_compile_once(toy_data, tmp_path):
    cfg = _tiny_config(**{"train.epochs": "7"})
    fns, arrays, state = make_step_functions(cfg, toy_data)
    for epoch in range(3):
        state, _ = fns.jit_epoch(state, arrays, epoch_key(cfg.train.seed, epoch))
    assert fns.jit_epoch._cache_size() == 1


@pytest.mark.slow  # 25 s; the resume-equality tests also pin determinism
def test_same_seed_same_results(tmp_path):
    # Determinism on CPU: two runs from one seed (DaRec's k-means, batches, negatives, edge
    # dropout all drawn from it) give identical logs and metrics.
    overrides = {
        "train.epochs": "4",
        "data.synthetic.n_users": "150",
        "data.synthetic.n_items": "100",
        "train.batch_size": "256",
        "darec.num_clusters": "4",
    }
    cfg = config_lib.build_config("synthetic", "lightgcn", "darec", overrides)
    runs = [
        train_and_evaluate(cfg, tmp_path / name, progress=False, log=lambda _: None, plots=False)
        for name in ("a", "b")
    ]
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["val"] == runs[1]["val"]
    logs = [
        [
            {k: v for k, v in json.loads(x).items() if k != "eval_seconds"}
            for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        ]
        for name in ("a", "b")
    ]
    assert logs[0] == logs[1] and len(logs[0]) == 4
    other = config_lib.apply_overrides(cfg, {"train.seed": 7})
    changed = train_and_evaluate(
        other, tmp_path / "c", progress=False, log=lambda _: None, plots=False
    )
    assert changed["val"] != runs[0]["val"]  # the seed does reach the run
