"""Small hand-made and random datasets for tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from darec_jax.data.dataset import InteractionData, Split

# Real RLMRec-format splits (folders yelp/, amazon/ with trn_mat.pkl, val_mat.pkl, tst_mat.pkl)
# for the tests that use real graphs; those tests skip when the folder is absent.
# DAREC_TEST_DATA names it; the default is the data folder CI keeps beside the checkout.
SHARED_DATA = Path(
    os.environ.get("DAREC_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def random_dataset(
    n_users: int = 60, n_items: int = 40, per_user: int = 6, seed: int = 0
) -> InteractionData:
    """Each user gets ``per_user`` distinct items, split about 3:1:1 at random."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    r = rng.random(users.shape[0])
    # Every user keeps its first interaction in train, so no user is isolated in the graph.
    first = np.r_[True, users[1:] != users[:-1]]
    train = first | (r < 0.6)
    val = ~train & (r < 0.8)
    test = ~train & ~val

    def split(mask: np.ndarray) -> Split:
        return Split(users[mask].astype(np.int32), items[mask].astype(np.int32))

    return InteractionData(
        name="toy",
        n_users=n_users,
        n_items=n_items,
        train=split(train),
        val=split(val),
        test=split(test),
        user_emb=None,
        item_emb=None,
        source="tests.toy",
    )


def with_llm_embeddings(data: InteractionData, dim: int, seed: int = 4) -> InteractionData:
    """``data`` with standard-normal float32 stand-in LLM embeddings (users, then items)."""
    rng = np.random.default_rng(seed)
    return dataclasses.replace(
        data,
        user_emb=rng.normal(size=(data.n_users, dim)).astype(np.float32),
        item_emb=rng.normal(size=(data.n_items, dim)).astype(np.float32),
    )


def reference_metrics_of_best(workdir: Path, data: InteractionData, split: str = "test") -> dict:
    """The PyTorch reference's evaluation of a finished run's best checkpoint on ``split``: an
    independent value for the metrics the run reported (``results.json``)."""
    import json

    from darec_jax import config as config_lib
    from darec_jax.crosscheck.interop import to_state_dict
    from darec_jax.train.checkpoint import CheckpointSlot
    from darec_jax.train.step import make_step_functions
    from experiments.state_dict import _reference_metrics

    cfg = config_lib.from_dict(json.loads((Path(workdir) / "config.json").read_text()))
    _, _, state = make_step_functions(cfg, data)
    slot = CheckpointSlot(Path(workdir) / "checkpoints" / "best")
    params, _ = slot.restore(state.params)
    slot.close()
    state_dict = {k: np.asarray(v) for k, v in to_state_dict(cfg, params).items()}
    return _reference_metrics(cfg, data, state_dict, getattr(data, split), tuple(cfg.eval.ks))


def assert_reported_metrics_are_the_references(workdir: Path, data: InteractionData, res: dict):
    """The run's reported test metrics equal the reference's evaluation of its best checkpoint
    (both sum in float64: exactly, unless float32 scores tie differently), and its reported
    validation Recall@20 is the best one its log recorded."""
    import json

    ref = reference_metrics_of_best(workdir, data, "test")
    for key, value in ref.items():
        assert abs(res["test"][key] - value) <= 1e-9, (key, res["test"][key], value)
    log = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val"]["recall@20"] for r in log if "val" in r]
    assert max(vals) == res["val"]["recall@20"] or len(vals) == 1
