"""The pure training step and the one-scan epoch.

State is explicit: ``params`` (a pure dict ``{"backbone": ..., "method": ...}``; the backbone part
is merged into the NNX module inside the jitted function), ``opt_state`` (optax) and a PRNG key
per epoch. Per-step randomness (edge-dropout uniforms, the method's draws) is the ``draws``
argument of :meth:`StepFunctions.loss`, so tests can inject the reference's draws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import optax
from flax import nnx, struct

from darec_jax.config import Config
from darec_jax.data.dataset import InteractionData
from darec_jax.errors import ConfigError
from darec_jax.graph.bipartite import build_interaction_graph, unique_pairs
from darec_jax.graph.propagation import BlockPlan, make_block_plan
from darec_jax.kernels import native_spmm_available
from darec_jax.losses.core import l2_reg
from darec_jax.methods import Method, make_method
from darec_jax.models import Backbone, make_backbone, static_arrays
from darec_jax.parallel import DATA, constrain, mesh_size, place, tree_shardings
from darec_jax.train.sampling import csr_from_pairs, sample_negatives

Params = dict[str, Any]


@struct.dataclass
class TrainArrays:
    """Device-resident training data (a pytree, passed to jitted functions as an argument)."""

    graph: jraph.GraphsTuple
    users: jax.Array  # [nnz] int32, one training interaction each
    items: jax.Array  # [nnz] int32
    indptr: jax.Array  # [U+1] CSR of the training matrix
    indices: jax.Array  # [nnz] items sorted within each user row
    plan: BlockPlan | None = None  # blocked graph products (see graph.propagation)
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


def resolve_spmm_impl(cfg: Config, devices: int = 1) -> str:
    """``model.spmm_impl`` with "auto" resolved for the default backend and the mesh's
    ``devices`` (several devices shard one segment sum over the edges)."""
    impl = cfg.model.spmm_impl
    on_cpu = jax.default_backend() == "cpu"
    if devices > 1 and impl in ("native", "blocked"):  # "transposed" shards like segment_sum
        raise ConfigError(
            f"model.spmm_impl={impl} runs on one device; with a {devices}-device mesh use auto "
            "or segment_sum"
        )
    if impl == "auto":
        if not on_cpu or devices > 1:
            return "segment_sum"
        return "native" if native_spmm_available() else "blocked"
    if impl == "native" and not (on_cpu and native_spmm_available()):
        raise ConfigError(
            "model.spmm_impl=native needs the CPU backend and a C++ compiler; "
            "use auto, blocked or segment_sum"
        )
    return impl


def make_train_arrays(
    data: InteractionData,
    spmm_impl: str = "segment_sum",
    block_edges: int = 10_000,
    with_llm: bool = False,
    cfg: Config | None = None,
) -> tuple[TrainArrays, int]:
    """Graph + binarised training interactions + CSR (+ the backbone's own static arrays when
    ``cfg`` is given); also the binary-search depth."""
    graph = build_interaction_graph(data.n_users, data.n_items, data.train.users, data.train.items)
    plan = None
    if spmm_impl in ("blocked", "native"):
        plan = make_block_plan(graph, block_edges, native=spmm_impl == "native")
    elif spmm_impl == "transposed":  # one block: a sorted segment sum, transposed-graph VJP
        plan = make_block_plan(graph, max(1, int(graph.senders.shape[0])))
    users, items = unique_pairs(data.train.users, data.train.items, data.n_items)
    indptr, indices, search_steps = csr_from_pairs(data.n_users, users, items)
    arrays = TrainArrays(
        graph=jax.tree.map(jnp.asarray, graph),
        users=jnp.asarray(users, jnp.int32),
        items=jnp.asarray(items, jnp.int32),
        indptr=jnp.asarray(indptr),
        indices=jnp.asarray(indices),
        plan=plan,
        user_llm=jnp.asarray(data.user_emb, jnp.float32) if with_llm else None,
        item_llm=jnp.asarray(data.item_emb, jnp.float32) if with_llm else None,
        extra=None if cfg is None else static_arrays(cfg, data, graph),
    )
    return arrays, search_steps


def init_model(
    cfg: Config, n_users: int, n_items: int, method: Method, llm_dim: int = 0
) -> tuple[nnx.GraphDef, Params]:
    """Build the backbone and the method's parameters from the seed.

    Returns the backbone's graph definition and the parameters as a pure dict
    ``{"backbone": ..., "method": ...}``.
    """
    model = make_backbone(cfg, n_users, n_items, rngs=nnx.Rngs(params=cfg.train.seed))
    graphdef, state = nnx.split(model, nnx.Param)
    method_key = jax.random.fold_in(jax.random.key(cfg.train.seed), 1)
    method_params = method.init_params(
        method_key, model.final_dim, llm_dim, ego_dim=cfg.model.embedding_size
    )
    return graphdef, {"backbone": nnx.to_pure_dict(state), "method": method_params}


def make_optimizer(cfg: Config) -> optax.GradientTransformation:
    """Adam as the reference (β = (0.9, 0.999), eps 1e-8, no weight decay)."""
    return optax.adam(cfg.train.lr, b1=0.9, b2=0.999, eps=1e-8)


@dataclass(frozen=True)
class StepFunctions:
    """Pure loss / step / epoch / embedding functions bound to a model definition and config."""

    graphdef: nnx.GraphDef
    cfg: Config
    method: Method
    optimizer: optax.GradientTransformation
    n_items: int
    n_interactions: int
    search_steps: int

    @property
    def n_batches(self) -> int:
        return -(-self.n_interactions // self.cfg.train.batch_size)

    def backbone(self, params: Params) -> Backbone:
        """The backbone module with these parameters (inside jit: a pure function of them)."""
        return nnx.merge(self.graphdef, params["backbone"])

    def train_embeddings(
        self, params: Params, arrays: TrainArrays, draws: dict, batch: Batch | None = None
    ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """The training forward with this step's ``draws`` (the backbone's, e.g. edge-dropout
        uniforms, and the method's ego transform, e.g. RLMRec-Gen's mask): (F_u, F_i, the
        backbone's own weighted terms)."""
        model = self.backbone(params)
        ego = self.method.transform_ego(params["method"], model.ego(), draws)
        return model.train_forward(ego, arrays, draws, batch)

    def eval_embeddings(self, params: Params, arrays: TrainArrays) -> tuple[jax.Array, jax.Array]:
        """(F_u, F_i) of the clean forward (what evaluation ranks with, unless the method
        scores with something else: :meth:`scoring_embeddings`)."""
        return self.backbone(params).eval_forward(arrays)

    def scoring_embeddings(
        self, params: Params, arrays: TrainArrays
    ) -> tuple[jax.Array, jax.Array]:
        """What ranking scores with: the clean forward's rows through the method's
        :meth:`~darec_jax.methods.Method.score_rows` (the final embeddings themselves unless a
        method scores otherwise, e.g. DaRec with ``score_on=disentangled``)."""
        fu, fi = self.eval_embeddings(params, arrays)
        score = functools.partial(self.method.score_rows, params["method"])
        return score(fu), score(fi)

    def loss(
        self, params: Params, arrays: TrainArrays, batch: Batch, draws: dict
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """total = rec + reg + the backbone's terms + the method's terms + the backbone's late
        terms (``late_term_names``, if any: AutoCF's infomax), the reference's addition order
        (Q13); rec is BPR for every backbone but AutoCF.

        ``draws``: this step's random inputs, the backbone's (e.g. ``uniforms`` [E], absent
        when keep_rate = 1) and the method's own (see :meth:`draw_step_randomness`).
        """
        model = self.backbone(params)
        ego = self.method.transform_ego(params["method"], model.ego(), draws)
        fu, fi, backbone_terms = model.train_forward(ego, arrays, draws, batch)
        score = functools.partial(self.method.score_rows, params["method"])
        rec = model.rec_loss(
            score(fu[batch.users]), score(fi[batch.pos]), score(fi[batch.neg]), batch.valid
        )
        # L2 over every parameter: the backbone's and the method's MLPs, biases and tokens.
        reg = self.cfg.model.reg_weight * l2_reg(params)
        total = rec + reg
        out = {model.rec_name: rec, "reg": reg}
        for name in model.term_names:
            total = total + backbone_terms[name]
            out[name] = backbone_terms[name]
        llm = None if arrays.user_llm is None else (arrays.user_llm, arrays.item_llm)
        extra = self.method.terms(params["method"], fu, fi, batch, llm, draws)
        for name in self.method.term_names:
            total = total + extra[name]
            out[name] = extra[name]
        # Backbone terms the reference adds after the method's (AutoCF's infomax, Q13).
        for name in model.late_term_names:
            total = total + backbone_terms[name]
            out[name] = backbone_terms[name]
        out["loss"] = total
        return total, out

    def step(
        self,
        params: Params,
        opt_state: optax.OptState,
        arrays: TrainArrays,
        batch: Batch,
        draws: dict,
    ) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
        """One Adam step on one batch with injected per-step randomness."""
        grads, terms = jax.grad(self.loss, has_aux=True)(params, arrays, batch, draws)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, terms

    def draw_step_randomness(
        self, params: Params, key: jax.Array, arrays: TrainArrays, batch: Batch | None = None
    ) -> dict:
        """Every random input of one step: the backbone's (e.g. edge-dropout uniforms) and the
        method's draws (``batch``: the step's batch, whose padding rows a method's row subsets
        avoid)."""
        # The backbone's draw uses the step key itself; the method's keys are folded from it, so
        # adding a method never changes the backbone's random stream.
        draws = dict(self.method.draw(jax.random.fold_in(key, 1)))
        draws.update(
            self.method.draw_for_batch(
                jax.random.fold_in(key, 2),
                self.cfg.train.batch_size,
                None if batch is None else batch.valid,
            )
        )
        draws.update(self.backbone(params).draw(key, arrays))
        return draws

    def epoch_batches(self, key: jax.Array, arrays: TrainArrays) -> Batch:
        """Negatives, shuffle and padding for one epoch: a Batch of shape [n_batches, B]."""
        k_neg, k_perm = jax.random.split(key)
        negs = sample_negatives(
            k_neg, arrays.users, self.n_items, arrays.indptr, arrays.indices, self.search_steps
        )
        nnz = self.n_interactions
        size = self.cfg.train.batch_size
        total = self.n_batches * size
        perm = jax.random.permutation(k_perm, nnz)
        idx = jnp.concatenate([perm, jnp.zeros(total - nnz, perm.dtype)])
        valid = (jnp.arange(total) < nnz).astype(jnp.float32)
        shape = (self.n_batches, size)

        def rows(x):  # each step's triples split over the data axis
            return constrain(x.reshape(shape), None, DATA)

        return Batch(
            users=rows(arrays.users[idx]),
            pos=rows(arrays.items[idx]),
            neg=rows(negs[idx]),
            valid=rows(valid),
        )

    def epoch(
        self,
        params: Params,
        opt_state: optax.OptState,
        arrays: TrainArrays,
        key: jax.Array,
        method_state: dict | None = None,
    ) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
        """A whole epoch as one scan over batches; returns the mean of each loss term.

        ``method_state``: the method's per-epoch inputs (e.g. DaRec's clusters) when the caller
        keeps them across epochs; None computes them here from ``fold_in(key, 1)``, as
        :meth:`method_epoch_state` with the epoch key does.
        """
        params, opt_state, terms, _ = self._epoch_scan(params, opt_state, arrays, key, method_state)
        return params, opt_state, jax.tree.map(jnp.mean, terms)

    def epoch_trace(
        self,
        params: Params,
        opt_state: optax.OptState,
        arrays: TrainArrays,
        key: jax.Array,
        method_state: dict | None = None,
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """The same epoch as :meth:`epoch`, step by step: (each term per step [n_batches], whether
        all parameters are finite after each step [n_batches]). For diagnosing a non-finite
        epoch: the first step and term that went bad."""
        _, _, terms, finite = self._epoch_scan(
            params, opt_state, arrays, key, method_state, trace=True
        )
        return terms, finite

    def epoch_prefix(
        self,
        params: Params,
        opt_state: optax.OptState,
        arrays: TrainArrays,
        key: jax.Array,
        n_steps: int,
    ) -> tuple[Params, optax.OptState, dict[str, jax.Array]]:
        """The first ``n_steps`` steps of :meth:`epoch` (same batches and draws), for timing
        epochs too long to run whole; ``n_steps`` is static."""
        params, opt_state, terms, _ = self._epoch_scan(
            params, opt_state, arrays, key, None, n_steps=n_steps
        )
        return params, opt_state, jax.tree.map(jnp.mean, terms)

    def _epoch_scan(
        self, params, opt_state, arrays, key, method_state, trace: bool = False, n_steps=None
    ):
        k_batches, k_steps = jax.random.split(key)
        batches = self.epoch_batches(k_batches, arrays)
        step_keys = jax.random.split(k_steps, self.n_batches)
        if n_steps is not None:
            batches = jax.tree.map(lambda x: x[:n_steps], batches)
            step_keys = step_keys[:n_steps]
        state = method_state
        if state is None:
            state = self.method_epoch_state(params, arrays, jax.random.fold_in(key, 1))

        def body(carry, xs):
            params, opt_state, step_state = carry
            batch, k, i = xs
            draws = {**state, **self.draw_step_randomness(params, k, arrays, batch)}
            step_state = self.backbone(params).update_step_state(step_state, i, draws, arrays)
            draws = {**draws, **step_state}
            params, opt_state, terms = self.step(params, opt_state, arrays, batch, draws)
            finite = all_finite(params) if trace else jnp.ones((), bool)
            return (params, opt_state, step_state), (terms, finite)

        step_state = self.backbone(params).init_step_state(arrays)
        steps = jnp.arange(step_keys.shape[0], dtype=jnp.int32)
        (params, opt_state, _), (terms, finite) = jax.lax.scan(
            body, (params, opt_state, step_state), (batches, step_keys, steps)
        )
        return params, opt_state, terms, finite

    def method_epoch_state(self, params: Params, arrays: TrainArrays, key: jax.Array) -> dict:
        """The method's per-epoch inputs (e.g. DaRec's clusters) from the clean forward."""
        if type(self.method).epoch_state is Method.epoch_state:
            return {}
        fu, fi = self.eval_embeddings(params, arrays)
        llm = None if arrays.user_llm is None else (arrays.user_llm, arrays.item_llm)
        return self.method.epoch_state(params["method"], fu, fi, llm, key)

    # Jitted entry points. The epoch donates params and optimiser state.
    @functools.cached_property
    def jit_epoch(self):
        return jax.jit(self.epoch, donate_argnums=(0, 1))

    @functools.cached_property
    def jit_step(self):
        return jax.jit(self.step)

    @functools.cached_property
    def jit_eval_embeddings(self):
        return jax.jit(self.eval_embeddings)

    @functools.cached_property
    def jit_scoring_embeddings(self):
        return jax.jit(self.scoring_embeddings)

    @functools.cached_property
    def jit_method_epoch_state(self):
        return jax.jit(self.method_epoch_state)

    @functools.cached_property
    def jit_epoch_trace(self):
        return jax.jit(self.epoch_trace)


def make_step_functions(
    cfg: Config, data: InteractionData, mesh: jax.sharding.Mesh | None = None
) -> tuple[StepFunctions, TrainArrays, Params, optax.OptState]:
    """Everything the training loop needs: functions, device data, initial params and state.

    ``mesh``: place the data, parameters and optimiser state on it (``darec_jax.parallel``:
    tables split by rows over ``model`` where it divides them, the rest replicated); call the
    jitted functions inside ``jax.set_mesh(mesh)``. None: the default device.
    """
    with_llm = cfg.method != "none"
    devices = 1 if mesh is None else mesh_size(mesh)
    arrays, search_steps = make_train_arrays(
        data, resolve_spmm_impl(cfg, devices), cfg.model.spmm_block_edges, with_llm, cfg
    )
    method = make_method(cfg, data.n_users, data.n_items)
    llm_dim = int(data.user_emb.shape[1]) if with_llm else 0
    graphdef, params = init_model(cfg, data.n_users, data.n_items, method, llm_dim)
    optimizer = make_optimizer(cfg)
    fns = StepFunctions(
        graphdef=graphdef,
        cfg=cfg,
        method=method,
        optimizer=optimizer,
        n_items=data.n_items,
        n_interactions=int(arrays.users.shape[0]),
        search_steps=search_steps,
    )
    opt_state = optimizer.init(params)
    if mesh is not None:
        rows = table_rows(data)
        arrays = place(arrays, tree_shardings(arrays, mesh, rows))
        params = place(params, tree_shardings(params, mesh, rows))
        opt_state = place(opt_state, tree_shardings(opt_state, mesh, rows))
    return fns, arrays, params, opt_state


def table_rows(data: InteractionData) -> tuple[int, int, int]:
    """Row counts of the tables the model axis may split: users, items, all nodes."""
    return (data.n_users, data.n_items, data.n_users + data.n_items)


def all_finite(tree) -> jax.Array:
    """Whether every entry of every array in ``tree`` is finite (a bool scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


def epoch_key(seed: int, epoch: int) -> jax.Array:
    """The PRNG key of an epoch: a pure function of (seed, epoch), so resumed runs replay it."""
    return jax.random.fold_in(jax.random.key(np.uint32(seed % 2**32)), epoch)
