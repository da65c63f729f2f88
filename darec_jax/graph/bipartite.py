"""The user–item interaction graph's edges and Â (docs/backbones.md §1.2).

Nodes are users ``0..U-1`` followed by items ``U..U+I-1`` (global ids). Every training interaction
(u, i) gives two directed edges, u -> U+i and U+i -> u, so E = 2·nnz(R). The edge weight is the
symmetric normalised

    Â_nm = 1 / sqrt(d_n · d_m),    d_n = degree of node n (no self-loops),

computed in float64 and stored as float32, as the reference does; isolated nodes have no edges.

Convention for message passing: edge e carries the matrix entry Â[receiver_e, sender_e], so
``(Â X)_n = Σ_{e: receiver_e = n} Â_e · X[sender_e]``. Edges are sorted by (receiver, sender),
which lets segment sums run over sorted segment ids. :func:`darec_jax.graph.build_graph` wraps
these edges in a :class:`~darec_jax.graph.Graph`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from darec_jax.graph.graph import Graph


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` for an int array, by one sort and a neighbour comparison (several
    times faster than ``np.unique``'s hashing path on 10^7+ keys)."""
    keys = np.sort(keys)
    if keys.size:
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    return keys


def unique_pairs(users: np.ndarray, items: np.ndarray, n_items: int) -> tuple[np.ndarray, ...]:
    """Binarise an interaction list: drop duplicate (user, item) pairs (sorted by user, item)."""
    keys = sorted_unique(users.astype(np.int64) * n_items + items.astype(np.int64))
    return keys // n_items, keys % n_items


def interaction_edges(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric-normalised bipartite edges of the training interactions.

    Args:
      n_users, n_items: U and I.
      users, items: int arrays [nnz] of training interactions (duplicates are merged).

    Returns:
      (receivers int64 [E], senders int64 [E], Â weights float32 [E]), global node ids, sorted by
      (receiver, sender).
    """
    n_nodes = n_users + n_items
    u, i = unique_pairs(np.asarray(users), np.asarray(items), n_items)
    # Both directions: user -> item (already sorted by (user, item)), then item -> user, sorted
    # by (item, user); every user id is below every item id, so the concatenation is sorted by
    # (receiver, sender).
    back = np.argsort(i * n_users + u)
    rows = np.concatenate([u, i[back] + n_users])  # receiver (matrix row)
    cols = np.concatenate([i + n_users, u[back]])  # sender (matrix column)
    degree = np.bincount(rows, minlength=n_nodes).astype(np.float64)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(degree), 0.0)
    weights = (inv_sqrt[rows] * inv_sqrt[cols]).astype(np.float32)
    return rows, cols, weights


def edge_permutation(graph: Graph, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Index ``p`` such that edge ``p[k]`` of ``graph`` is the matrix entry (rows[k], cols[k]).

    Used to align per-edge quantities (e.g. an injected edge-dropout vector) given in another
    implementation's storage order with this graph's order.
    """
    n_nodes = graph.n_nodes
    ours = np.asarray(graph.receivers, np.int64) * n_nodes + np.asarray(graph.senders, np.int64)
    theirs = np.asarray(rows, np.int64) * n_nodes + np.asarray(cols, np.int64)
    pos = np.searchsorted(ours, theirs)  # ours is sorted by (receiver, sender)
    if np.any(pos >= ours.shape[0]) or np.any(ours[np.minimum(pos, ours.shape[0] - 1)] != theirs):
        raise ValueError("edge lists differ: some entries are not edges of this graph")
    return pos
