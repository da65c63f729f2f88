"""Small hand-made and random datasets for tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from darec_jax.data.dataset import InteractionData, Split

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
