"""What the models consume: the run's device-resident training arrays and one batch.

These types sit below the models (``models/`` and ``methods/`` read them; ``train/`` builds them
once per run), so no model imports the training layer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from darec_jax.data.dataset import InteractionData
from darec_jax.graph import Graph, build_graph, unique_pairs
from darec_jax.train.sampling import csr_from_pairs


@struct.dataclass
class TrainArrays:
    """Device-resident training data (a pytree, passed to jitted functions as an argument)."""

    graph: Graph  # edges, Â and the chosen graph-product implementation
    users: jax.Array  # [nnz] int32, one training interaction each
    items: jax.Array  # [nnz] int32
    indptr: jax.Array  # [U+1] CSR of the training matrix
    indices: jax.Array  # [nnz] items sorted within each user row
    user_llm: jax.Array | None = None  # [U, d_L] LLM embeddings (alignment methods only)
    item_llm: jax.Array | None = None  # [I, d_L]
    # Backbone-specific static arrays (e.g. GCCF's self-loop graph), see models.static_arrays.
    extra: dict | None = None


@struct.dataclass
class Batch:
    """One batch of (anchor, positive, negative) triples; ``valid`` masks padding rows."""

    users: jax.Array  # [B] int32
    pos: jax.Array  # [B] int32
    neg: jax.Array  # [B] int32
    valid: jax.Array  # [B] float32


def make_train_arrays(
    data: InteractionData,
    spmm_impl: str = "segment_sum",
    block_edges: int = 10_000,
    with_llm: bool = False,
    extra: dict | None = None,
) -> tuple[TrainArrays, int]:
    """Graph (running ``spmm_impl``, blocks of about ``block_edges`` edges for "blocked") +
    binarised training interactions + CSR (+ ``extra``, the backbone's own static arrays); also
    the binary-search depth of the negative sampler."""
    graph = build_graph(
        data.n_users, data.n_items, data.train.users, data.train.items, spmm_impl, block_edges
    )
    users, items = unique_pairs(data.train.users, data.train.items, data.n_items)
    indptr, indices, search_steps = csr_from_pairs(data.n_users, users, items)
    arrays = TrainArrays(
        graph=graph,
        users=jnp.asarray(users, jnp.int32),
        items=jnp.asarray(items, jnp.int32),
        indptr=jnp.asarray(indptr),
        indices=jnp.asarray(indices),
        user_llm=jnp.asarray(data.user_emb, jnp.float32) if with_llm else None,
        item_llm=jnp.asarray(data.item_emb, jnp.float32) if with_llm else None,
        extra=extra,
    )
    return arrays, search_steps
