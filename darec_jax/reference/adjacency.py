"""Normalised bipartite adjacency of the PyTorch reference (docs/backbones.md §1.2).

Â = D^{-1/2} A D^{-1/2} with A = [[0, R], [Rᵀ, 0]] ∈ {0,1}^{N×N}, N = U + I, computed in float64
by scipy, cast to float32 and stored as an *uncoalesced* torch COO tensor whose entry order is the
order scipy gives when it turns the final CSC product into COO. That order is the canonical edge
order: every per-edge random vector (edge-dropout uniforms) is aligned to it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def interaction_matrix(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> sp.csr_matrix:
    """Binarised U×I interaction matrix R (duplicates collapse to a single 1.0), as CSR.

    Args:
        n_users: U.
        n_items: I.
        users: int [nnz] user ids in [0, U).
        items: int [nnz] item ids in [0, I), aligned with ``users``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError(
            f"users and items must be 1-D arrays of equal length, got {users.shape} and "
            f"{items.shape}"
        )
    if users.size and (users.min() < 0 or users.max() >= n_users):
        raise ValueError(f"user ids must lie in [0, {n_users}), got [{users.min()}, {users.max()}]")
    if items.size and (items.min() < 0 or items.max() >= n_items):
        raise ValueError(f"item ids must lie in [0, {n_items}), got [{items.min()}, {items.max()}]")
    mat = sp.coo_matrix(
        (np.ones(users.size, dtype=np.float64), (users, items)), shape=(n_users, n_items)
    )
    # R_ui = 1 iff (u, i) was given at least once (the COO → CSR step sums duplicates first).
    return ((mat.tocsr() != 0) * 1.0).tocsr()


def interactions_from_matrix(mat: sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Training interactions of a pickled RLMRec split, in the reference's sample order (§1.1).

    The matrix is binarised (stored non-zero → 1) and converted to COO; one interaction per stored
    entry, in that COO order (row-major for the CSR that the comparison ``!= 0`` produces).

    Returns:
        (users int64 [nnz], items int64 [nnz]).
    """
    coo = (sp.csr_matrix(mat) != 0).astype(np.float32).tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64)


def normalized_adjacency(
    n_users: int,
    n_items: int,
    train_users: np.ndarray,
    train_items: np.ndarray,
    self_loops: bool = False,
) -> torch.Tensor:
    """Symmetric-normalised bipartite adjacency Â as an uncoalesced float32 torch COO tensor.

    Â_nm = 1 / sqrt(d_n d_m) on every stored entry, d_n = Σ_m A_nm; isolated nodes (d_n = 0) get
    D^{-1/2}_nn = 0, i.e. all-zero rows and columns. With ``self_loops`` (GCCF only, Q1),
    A ← bin(A + I_N) so that d ← d + 1 and the diagonal is stored too.

    Args:
        n_users: U; users are global nodes 0..U-1.
        n_items: I; item j is global node U + j.
        train_users: int [nnz] training user ids.
        train_items: int [nnz] training item ids.
        self_loops: add I_N before normalising.

    Returns:
        ``torch.sparse_coo_tensor`` of shape (N, N) with int64 indices [2, E] and float32 values
        [E], E = 2·nnz(R) (+ N with self-loops), in scipy's CSC→COO order, not coalesced.
    """
    r = interaction_matrix(n_users, n_items, train_users, train_items)
    n_nodes = n_users + n_items
    upper = sp.hstack([sp.csr_matrix((n_users, n_users)), r])
    lower = sp.hstack([r.transpose(), sp.csr_matrix((n_items, n_items))])
    # A = [[0, R], [Rᵀ, 0]], binarised again (non-zero → 1.0), float64 CSR.
    adj = (sp.vstack([upper, lower]) != 0) * 1.0
    if self_loops:
        adj = ((adj + sp.eye(n_nodes)) != 0) * 1.0
    # d_n = Σ_m A_nm  [N]; D^{-1/2} with inf (zero degree) → 0.
    degree = np.asarray(adj.sum(axis=-1), dtype=np.float64).reshape(-1)
    with np.errstate(divide="ignore"):
        d_inv_sqrt = np.power(degree, -0.5)
    d_inv_sqrt[np.isinf(d_inv_sqrt)] = 0.0
    d_mat = sp.diags(d_inv_sqrt)
    # Â = ((A D^{-1/2})ᵀ) D^{-1/2} = D^{-1/2} A D^{-1/2} since A is symmetric. The transpose turns
    # the CSR product into CSC, so the final product is CSC and .tocoo() lists it column-major.
    norm = adj.dot(d_mat).transpose().dot(d_mat).tocoo()
    indices = torch.from_numpy(np.vstack([norm.row, norm.col]).astype(np.int64))
    values = torch.from_numpy(norm.data.astype(np.float32))
    return torch.sparse_coo_tensor(
        indices, values, (n_nodes, n_nodes), dtype=torch.float32, check_invariants=True
    )


def adjacency_edges(adj: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Storage order of a (possibly uncoalesced) COO adjacency: the canonical edge order.

    Returns:
        (rows int64 [E], cols int64 [E], values float32 [E]), entry e of each array describing
        the e-th stored entry, which is the entry the e-th edge-dropout uniform applies to.
    """
    indices = adj._indices()
    values = adj._values()
    rows = indices[0].detach().cpu().numpy().astype(np.int64)
    cols = indices[1].detach().cpu().numpy().astype(np.int64)
    return rows, cols, values.detach().cpu().numpy().astype(np.float32)
