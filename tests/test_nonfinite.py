"""A loss term or parameter that becomes NaN / Inf: the run stops naming the term, epoch and
step and keeps only good checkpoints, or (train.on_nonfinite=rollback) restarts from the last
good checkpoint with fresh batches."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.train.step import StepFunctions, all_finite
from darec_jax.train.trainer import NonFiniteError, restore_run, train_and_evaluate

TINY = {
    "data.synthetic.n_users": "150",
    "data.synthetic.n_items": "100",
    "train.batch_size": "256",
}


def _run(tmp_path, name="run", notes=None, **overrides):
    cfg = config_lib.build_config("synthetic", "lightgcn", "none", {**TINY, **overrides})
    log = (lambda _: None) if notes is None else notes.append
    return train_and_evaluate(cfg, tmp_path / name, progress=False, log=log, plots=False)


@pytest.fixture
def poison(monkeypatch):
    """Make the epochs whose 1-based call numbers are in ``calls["at"]`` return NaN parameters."""
    calls = {"n": 0, "at": set()}
    original = StepFunctions.__dict__["jit_epoch"]
    cache = {}

    def jit_epoch(self):
        if id(self) not in cache:
            real = original.func(self)

            def wrapped(*args):
                state, terms = real(*args)
                calls["n"] += 1
                if calls["n"] in calls["at"]:
                    state = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
                return state, terms

            cache[id(self)] = wrapped
        return cache[id(self)]

    monkeypatch.setattr(StepFunctions, "jit_epoch", property(jit_epoch))
    return calls


def test_a_diverging_run_names_the_terms_and_step(tmp_path):
    # Adam moves every weight by ~lr: 1e30 overflows the scores and the L2 term at step 2.
    with pytest.raises(NonFiniteError) as err:
        _run(tmp_path, **{"train.lr": "1e30", "train.epochs": "3"})
    message = str(err.value)
    assert "'bpr' (NaN)" in message and "'reg' (Inf)" in message
    assert "at epoch 0, step 2 of" in message and "no checkpoint was saved yet" in message
    assert "train.on_nonfinite=rollback" in message
    latest = tmp_path / "run" / "checkpoints" / "latest"
    assert not latest.exists() or not any(p.name.isdigit() for p in latest.iterdir())


def test_stop_keeps_the_last_good_checkpoint(tmp_path, poison):
    poison["at"] = {5}  # epoch 4; checkpoints are written at epochs 0 and 3
    with pytest.raises(NonFiniteError, match=r"epoch 4 .*last good checkpoint \(epoch 3\)"):
        _run(tmp_path, **{"train.epochs": "8"})
    _, _, _, _, params = restore_run(tmp_path / "run", "latest")
    assert bool(all_finite(params))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2, 3]  # nothing of epoch 4


def test_rollback_restarts_from_the_last_good_checkpoint(tmp_path, poison):
    poison["at"] = {5}
    notes = []
    res = _run(tmp_path, notes=notes, **{"train.epochs": "8", "train.on_nonfinite": "rollback"})
    assert res["status"] == "finished" and res["rollbacks"] == 1
    assert all(np.isfinite(v) for v in res["test"].values())
    assert any(
        "rolled back to the checkpoint of epoch 3 (rollback 1 of at most 3)" in n for n in notes
    )
    epochs = [
        json.loads(x)["epoch"]
        for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == list(range(8))
    # The rolled-back epochs used fresh draws: the run differs from an undisturbed one.
    plain = train_and_evaluate(
        config_lib.build_config("synthetic", "lightgcn", "none", {**TINY, "train.epochs": "8"}),
        tmp_path / "plain", progress=False, log=lambda _: None, plots=False,
    )  # fmt: skip
    assert plain["rollbacks"] == 0 and plain["val"] != res["val"]


def test_rollbacks_are_bounded(tmp_path, poison):
    poison["at"] = set(range(5, 100))  # every epoch from the fifth call on
    with pytest.raises(NonFiniteError, match="after 2 rollback"):
        _run(
            tmp_path,
            **{"train.epochs": "8", "train.on_nonfinite": "rollback", "train.max_rollbacks": "2"},
        )


def test_bad_option_is_a_clear_error():
    with pytest.raises(config_lib.ConfigError, match="valid: stop, rollback"):
        config_lib.build_config("synthetic", "lightgcn", "none", {"train.on_nonfinite": "skip"})


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    # The third checkpoint write fails as on a full disk: a clear error, and the checkpoint
    # before it restores (finite, epoch 3).
    import errno

    from darec_jax.errors import DarecError
    from darec_jax.train import checkpoint

    real_save = checkpoint.ocp.CheckpointManager.save
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # best and latest at epochs 0 and 3, then this one at epoch 6
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint.ocp.CheckpointManager, "save", save)
    with pytest.raises(DarecError, match="No space left on device.*previous checkpoint"):
        _run(tmp_path, **{"train.epochs": "12"})
    cfg, _, _, _, params = restore_run(tmp_path / "run", "latest")
    assert bool(all_finite(params))
    meta = sorted(p.name for p in (tmp_path / "run" / "checkpoints" / "latest").iterdir())
    assert meta[0] == "3"
