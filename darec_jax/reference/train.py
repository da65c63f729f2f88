"""Training driver of the PyTorch reference, in RLMRec's style (docs/backbones.md §1.8, §1.9,
§1.11).

One epoch: one uniform negative per training interaction (numpy RandomState, rejection of training
positives), a torch ``randperm`` shuffle, batches of 4096 (last one partial), and per batch
zero_grad → cal_loss → backward → Adam step. ``fit`` adds validation every ``test_step`` epochs,
early stopping on strict improvement of validation Recall@20, and the test of the best state.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from darec_jax.reference.metrics import evaluate


def _is_positive(
    users: np.ndarray, items: np.ndarray, positive_keys: np.ndarray, n_items: int
) -> np.ndarray:
    """Bool [n]: whether (users[k], items[k]) is a training positive; keys u·I + i, sorted."""
    keys = users * n_items + items
    if positive_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    where = np.searchsorted(positive_keys, keys)
    where = np.minimum(where, positive_keys.size - 1)
    return positive_keys[where] == keys


def sample_negatives(
    train_users: np.ndarray,
    train_items: np.ndarray,
    n_items: int,
    rng: np.random.RandomState,
    sequential: bool = False,
) -> np.ndarray:
    """One negative per training interaction, uniform over the user's non-positive items.

    For interaction k: j ~ U{0, …, I−1}, redrawn while (u_k, j) is a *training* positive
    (validation and test items are not excluded).

    Args:
        train_users, train_items: int [nnz] training interactions, in sample order.
        n_items: I.
        rng: numpy legacy RandomState.
        sequential: run the reference's literal loop (interaction by interaction, a scalar
            ``randint`` per draw), which consumes ``rng`` in the reference's order. The default
            draws all negatives at once and redraws only the rejected ones: the same distribution
            (each negative independent and uniform over the non-positives), another RNG stream.

    Returns:
        int64 [nnz] item ids.
    """
    users = np.asarray(train_users, dtype=np.int64)
    items = np.asarray(train_items, dtype=np.int64)
    positive_keys = np.unique(users * n_items + items)
    if sequential:
        positive_set = set(positive_keys.tolist())
        negatives = np.empty(users.size, dtype=np.int64)
        for k, user in enumerate(users.tolist()):
            while True:
                j = int(rng.randint(n_items))
                if user * n_items + j not in positive_set:
                    break
            negatives[k] = j
        return negatives
    negatives = rng.randint(n_items, size=users.size).astype(np.int64)
    rejected = _is_positive(users, negatives, positive_keys, n_items)
    while rejected.any():
        idx = np.flatnonzero(rejected)
        negatives[idx] = rng.randint(n_items, size=idx.size)
        rejected[idx] = _is_positive(users[idx], negatives[idx], positive_keys, n_items)
    return negatives


def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Adam:
    """Adam(lr, β = (0.9, 0.999), eps = 1e-8, no weight decay) over all parameters (§1.9)."""
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)


class TripleDataset(torch.utils.data.Dataset):
    """RLMRec's training dataset: one (user, positive, negative) triple per interaction, served
    item by item to a shuffling ``DataLoader`` (§1.8)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray) -> None:
        self.users, self.items, self.negatives = users, items, negatives

    def __len__(self) -> int:
        return self.users.shape[0]

    def __getitem__(self, k: int) -> tuple[int, int, int]:
        return self.users[k], self.items[k], self.negatives[k]


def _batches_vectorised(users, items, negatives, batch_size):
    users_t = torch.from_numpy(np.asarray(users, dtype=np.int64))
    items_t = torch.from_numpy(np.asarray(items, dtype=np.int64))
    negs_t = torch.from_numpy(negatives)
    order = torch.randperm(users_t.shape[0])
    for start in range(0, users_t.shape[0], batch_size):
        idx = order[start : start + batch_size]
        yield users_t[idx], items_t[idx], negs_t[idx]


def _batches_rlmrec(users, items, negatives, batch_size):
    dataset = TripleDataset(np.asarray(users, np.int64), np.asarray(items, np.int64), negatives)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=0
    )
    for anc, pos, neg in loader:
        yield anc.long(), pos.long(), neg.long()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_users: np.ndarray,
    train_items: np.ndarray,
    n_items: int,
    rng: np.random.RandomState,
    batch_size: int = 4096,
    sequential_negatives: bool = False,
    pipeline: str = "vectorised",
    step_inputs: Callable[[int], dict[str, Any]] | None = None,
) -> float:
    """One training epoch; returns the mean over steps of the total loss.

    Steps = ceil(nnz / batch_size); ``model.cal_loss`` draws its edge-dropout uniforms from the
    global torch CPU generator.

    ``pipeline``: ``"vectorised"`` shuffles with one ``torch.randperm`` and slices tensors;
    ``"rlmrec"`` is RLMRec's own data path — the sequential negative loop and a shuffling
    ``DataLoader`` that collates triples item by item (same distribution, slower).

    ``step_inputs``: called with each step's batch size B before the step; the keyword arguments
    it returns go to ``model.cal_loss`` (e.g. the node-mask ``seeds`` of RLMRec-Gen, the pair
    subsets and cluster assignments of DaRec). None (the default) passes none.
    """
    if pipeline not in ("vectorised", "rlmrec"):
        raise ValueError(f"unknown pipeline {pipeline!r}; valid: vectorised, rlmrec")
    negatives = sample_negatives(
        train_users,
        train_items,
        n_items,
        rng,
        sequential=sequential_negatives or pipeline == "rlmrec",
    )
    batches = _batches_vectorised if pipeline == "vectorised" else _batches_rlmrec
    model.train()
    total, steps = 0.0, 0
    for anc, pos, neg in batches(train_users, train_items, negatives, batch_size):
        optimizer.zero_grad()
        extra = {} if step_inputs is None else step_inputs(int(anc.shape[0]))
        loss, _ = model.cal_loss(anc, pos, neg, **extra)
        loss.backward()
        optimizer.step()
        total += float(loss.item())
        steps += 1
    return total / max(steps, 1)


def fit(
    model: nn.Module,
    n_items: int,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    rng: np.random.RandomState,
    max_epochs: int = 3000,
    test_step: int = 3,
    patience: int = 5,
    lr: float = 1e-3,
    batch_size: int = 4096,
    ks: Sequence[int] = (5, 10, 20),
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """RLMRec's train / validate / early-stop / test loop (§1.9, §1.11, Q22).

    Validates after epochs e with e % test_step == 0; an evaluation improves only if validation
    Recall@max(ks) is strictly greater than the best so far; stops after ``patience`` evaluations
    without improvement; reloads the best state and evaluates it on validation and test.

    Args:
        model: a reference model (``cal_loss`` and ``full_predict``); left in its best state.
        n_items: I.
        train, valid, test: (users, items) int arrays of each split.
        rng: numpy RandomState for the negatives (seed torch separately for shuffles and drops).

    Returns:
        {"best_epoch", "epochs_run", "valid": metrics, "test": metrics, "losses": [per epoch]}.
    """
    optimizer = make_optimizer(model, lr=lr)
    criterion = f"recall@{max(ks)}"
    best_value, best_epoch, bad_evals = -1e9, -1, 0
    best_state = copy.deepcopy(model.state_dict())
    losses: list[float] = []
    epochs_run = 0
    for epoch in range(max_epochs):
        losses.append(train_epoch(model, optimizer, *train, n_items, rng, batch_size=batch_size))
        epochs_run = epoch + 1
        if epoch % test_step != 0:
            continue
        metrics = evaluate(model, n_items, *train, *valid, ks=ks)
        if log is not None:
            log(f"epoch {epoch} loss {losses[-1]:.6f} valid {metrics}")
        if metrics[criterion] > best_value:
            best_value, best_epoch, bad_evals = metrics[criterion], epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_evals += 1
            if bad_evals == patience:
                break
    model.load_state_dict(best_state)
    return {
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "valid": evaluate(model, n_items, *train, *valid, ks=ks),
        "test": evaluate(model, n_items, *train, *test, ks=ks),
        "losses": losses,
    }
