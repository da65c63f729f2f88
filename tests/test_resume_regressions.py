"""Deterministic regression tests for what the kill campaign (tests/test_crash.py, marked slow)
found: the exact states a SIGKILL can leave, built on purpose, so they are tested every run.

1. Killed between writing a new best checkpoint and the latest one: the best slot holds an epoch
   the resumed run computes again; writing that step again must replace it, not fail.
2. The same state: the resumed run must restore the best epoch its loop record names, not the
   newer step the best slot also holds.
3. Killed while Orbax writes a checkpoint: a half-written (temporary) folder is never loaded.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np

from darec_jax import config as config_lib
from darec_jax.train.checkpoint import CheckpointSlot, RunCheckpoints
from darec_jax.train.trainer import load_data, train_and_evaluate

TINY = {
    "data.synthetic.n_users": 120,
    "data.synthetic.n_items": 90,
    "train.batch_size": 128,
    "train.epochs": 10,
    "train.test_step": 1,
    "train.patience": 100,
}


def test_a_best_step_written_again_replaces_the_old_one(tmp_path):
    slots = RunCheckpoints(tmp_path)
    params = {"w": jnp.ones(3)}
    slots.save(4, params, {"next_epoch": 5}, best_params={"w": jnp.full(3, 7.0)})
    # The resumed run computes epoch 4 again and finds it better: the same step, new values.
    slots.save(4, params, {"next_epoch": 5}, best_params={"w": jnp.full(3, 9.0)})
    got = slots.restore_best(best_epoch=4, next_epoch=5, params=params)
    np.testing.assert_array_equal(np.asarray(got["w"]), 9.0)
    slots.close()


def test_resume_restores_the_best_epoch_the_loop_names_not_the_newest(tmp_path):
    slots = RunCheckpoints(tmp_path)
    params = {"w": jnp.zeros(3)}
    slots.save(2, params, {}, best_params={"w": jnp.full(3, 2.0)})  # the real best, epoch 2
    slots.best.save(4, {"w": jnp.full(3, 4.0)}, {})  # written, then killed before latest(4)
    got = slots.restore_best(best_epoch=2, next_epoch=3, params=params)
    np.testing.assert_array_equal(np.asarray(got["w"]), 2.0)
    slots.close()


def test_resume_after_a_kill_mid_checkpoint_equals_an_uninterrupted_run(tmp_path):
    cfg = config_lib.build_config("synthetic", "lightgcn", "none", TINY)
    data = load_data(cfg)
    quiet = {"data": data, "progress": False, "log": lambda _: None, "plots": False}
    expected = train_and_evaluate(cfg, tmp_path / "straight", **quiet)

    work = tmp_path / "killed"
    paused = train_and_evaluate(cfg, work, max_epochs_this_process=4, **quiet)
    assert paused["status"] == "paused" and paused["next_epoch"] == 4
    last_epoch = json.loads((work / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
    assert last_epoch == 3
    # What a SIGKILL at epoch 4 can leave: (1)+(2) a best checkpoint of epoch 4 with parameters
    # the resumed run never computed (garbage, so restoring it would change the results), and
    # (3) a half-written latest checkpoint of epoch 4 in Orbax's temporary folder.
    best = CheckpointSlot(work / "checkpoints" / "best", keep=2)
    garbage = jax.tree.map(lambda x: jnp.full_like(x, 123.0), _params_template(cfg, data))
    best.save(4, garbage, {"loop": {}})
    best.close()
    partial = work / "checkpoints" / "latest" / "4.orbax-checkpoint-tmp-1764000000"
    partial.mkdir()
    (partial / "junk").write_bytes(b"\x00" * 64)

    resumed = train_and_evaluate(cfg, work, resume=True, **quiet)
    assert resumed["status"] == "finished"
    assert resumed["best_epoch"] == expected["best_epoch"]
    assert resumed["test"] == expected["test"] and resumed["val"] == expected["val"]
    epochs = [json.loads(x)["epoch"] for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(10))


def _params_template(cfg, data):
    from darec_jax.train.step import make_step_functions

    return make_step_functions(cfg, data)[2].params
