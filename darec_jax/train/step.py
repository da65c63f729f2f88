"""The train state, the pure training step and the one-scan epoch.

Everything a run carries from step to step is one pytree, :class:`TrainState` (parameters,
optimiser state, the method's per-epoch state, counters), and one jitted function advances it by
an epoch: ``epoch(state, arrays, key) -> (state, mean terms)``. Keys come from named streams
(:func:`key_streams`), one per purpose. A step's random and carried inputs arrive typed by
lifetime (:class:`StepInputs`), so tests can inject the reference's draws.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from darec_jax.config import Config
from darec_jax.data.dataset import InteractionData
from darec_jax.errors import ConfigError
from darec_jax.inputs import Batch, TrainArrays, make_train_arrays
from darec_jax.kernels import native_spmm_available
from darec_jax.losses.core import l2_reg
from darec_jax.methods import Method, make_method
from darec_jax.models import Backbone, make_backbone, static_arrays
from darec_jax.parallel import DATA, constrain, mesh_size, place, replicate, tree_shardings
from darec_jax.train.sampling import sample_negatives

Params = dict[str, Any]

# The root key of a run is split once into one stream per purpose; nothing draws from the root.
KEY_STREAMS = ("params", "method_params", "train", "eval")


def key_streams(seed: int) -> dict[str, jax.Array]:
    """{purpose: key} from the run's one seed: ``params`` (the backbone's initial parameters),
    ``method_params`` (the method's), ``train`` (epoch keys: :func:`epoch_key`), ``eval``
    (anything drawn for evaluation or figures)."""
    root = jax.random.key(np.uint32(seed % 2**32))
    return dict(zip(KEY_STREAMS, jax.random.split(root, len(KEY_STREAMS)), strict=True))


def epoch_key(seed: int, epoch: int, rollbacks: int = 0) -> jax.Array:
    """The key of an epoch: ``fold_in(train stream, epoch)``, a pure function of (seed, epoch), so
    resumed runs replay it. After a non-finite epoch is rolled back (``rollbacks`` > 0) the epoch
    is retried with fresh batches and draws: the key is folded again with the rollback count."""
    key = jax.random.fold_in(key_streams(seed)["train"], epoch)
    if rollbacks:
        key = jax.random.fold_in(jax.random.fold_in(key, ROLLBACK_STREAM), rollbacks)
    return key


# Folded into an epoch key before the rollback count (an epoch key is otherwise only split).
ROLLBACK_STREAM = 1


@struct.dataclass
class TrainState:
    """What training carries from epoch to epoch, and what a checkpoint saves, as one tree.

    params:       ``{"backbone": ..., "method": ...}`` pure dicts of the Flax modules' parameters.
    opt_state:    optax's state of ``params``.
    method_state: the method's per-epoch inputs (DaRec's cluster assignments), recomputed
                  every ``recluster_every`` epochs and kept in between; ``{}`` for other methods.
    epoch:        int32 [], epochs completed (the index of the next epoch).
    step:         int32 [], optimiser steps taken.
    """

    params: Params
    opt_state: optax.OptState
    method_state: dict
    epoch: jax.Array
    step: jax.Array


@struct.dataclass
class StepInputs:
    """One step's random and carried inputs, by lifetime.

    backbone:    this step's draws of the backbone (edge-dropout uniforms, SimGCL's noise,
                 AutoCF's sampling uniforms).
    method:      this step's draws of the method (RLMRec-Gen's mask seeds, DaRec's pair subsets).
    epoch_state: the method's per-epoch inputs (:attr:`TrainState.method_state`), constant
                 within an epoch.
    carry:       the backbone's state carried from step to step within an epoch (AutoCF's
                 resampled subgraphs), already updated for this step.
    """

    backbone: dict = dataclasses.field(default_factory=dict)
    method: dict = dataclasses.field(default_factory=dict)
    epoch_state: dict = dataclasses.field(default_factory=dict)
    carry: dict = dataclasses.field(default_factory=dict)

    def for_backbone(self) -> dict:
        """What the backbone's forward reads: its draws and its carried state."""
        return {**self.backbone, **self.carry}

    def for_method(self) -> dict:
        """What the method's terms read: its draws and its per-epoch state."""
        return {**self.method, **self.epoch_state}


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


def init_model(
    cfg: Config, n_users: int, n_items: int, method: Method, llm_dim: int = 0
) -> tuple[nnx.GraphDef, Params]:
    """Build the backbone and the method's parameters from their own key streams.

    Returns the backbone's graph definition and the parameters as a pure dict
    ``{"backbone": ..., "method": ...}``.
    """
    keys = key_streams(cfg.train.seed)
    model = make_backbone(cfg, n_users, n_items, rngs=nnx.Rngs(params=keys["params"]))
    graphdef, state = nnx.split(model, nnx.Param)
    method_params = method.init_params(
        keys["method_params"], model.final_dim, llm_dim, ego_dim=cfg.model.embedding_size
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

    @property
    def recluster_every(self) -> int:
        """Epochs between recomputations of the method's per-epoch state (1: every epoch)."""
        return max(1, int(getattr(self.method, "recluster_every", 1)))

    def backbone(self, params: Params) -> Backbone:
        """The backbone module with these parameters (inside jit: a pure function of them)."""
        return nnx.merge(self.graphdef, params["backbone"])

    # ------------------------------------------------------------------ state

    def init_state(self, params: Params, arrays: TrainArrays) -> TrainState:
        """The state before the first epoch: fresh optimiser state, and the method's per-epoch
        state as zeros of its shapes (the first epoch computes it)."""
        shapes = jax.eval_shape(self.method_epoch_state, params, arrays, jax.random.key(0))
        return TrainState(
            params=params,
            opt_state=self.optimizer.init(params),
            method_state=jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes),
            epoch=jnp.zeros((), jnp.int32),
            step=jnp.zeros((), jnp.int32),
        )

    # ------------------------------------------------------------------ forwards

    def train_embeddings(
        self,
        params: Params,
        arrays: TrainArrays,
        inputs: StepInputs,
        batch: Batch | None = None,
    ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
        """The training forward with this step's ``inputs`` (the backbone's draws, e.g.
        edge-dropout uniforms, and the method's ego transform, e.g. RLMRec-Gen's mask):
        (F_u, F_i, the backbone's own weighted terms)."""
        model = self.backbone(params)
        ego = self.method.transform_ego(params["method"], model.ego(), inputs.for_method())
        return model.train_forward(ego, arrays, inputs.for_backbone(), batch)

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

    # ------------------------------------------------------------------ loss and step

    def loss(
        self, params: Params, arrays: TrainArrays, batch: Batch, inputs: StepInputs
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """total = rec + reg + the backbone's terms + the method's terms + the backbone's late
        terms (``late_term_names``, if any: AutoCF's infomax), the reference's addition order
        (docs/backbones.md Q13); rec is BPR for every backbone but AutoCF."""
        model = self.backbone(params)
        method_inputs = inputs.for_method()
        ego = self.method.transform_ego(params["method"], model.ego(), method_inputs)
        fu, fi, backbone_terms = model.train_forward(ego, arrays, inputs.for_backbone(), batch)
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
        extra = self.method.terms(params["method"], fu, fi, batch, llm, method_inputs)
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
        self, state: TrainState, arrays: TrainArrays, batch: Batch, inputs: StepInputs
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One Adam step on one batch with injected per-step inputs."""
        grads, terms = jax.grad(self.loss, has_aux=True)(state.params, arrays, batch, inputs)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), terms

    def draw_step_inputs(
        self, params: Params, key: jax.Array, arrays: TrainArrays, batch: Batch | None = None
    ) -> StepInputs:
        """This step's draws, the backbone's (e.g. edge-dropout uniforms) and the method's
        (``batch``: the step's batch, whose padding rows a method's row subsets avoid), each
        from its own key of the step key. The per-epoch state and the carry are left empty."""
        k_backbone, k_method, k_rows = jax.random.split(key, 3)
        method = dict(self.method.draw(k_method))
        method.update(
            self.method.draw_for_batch(
                k_rows, self.cfg.train.batch_size, None if batch is None else batch.valid
            )
        )
        return StepInputs(backbone=self.backbone(params).draw(k_backbone, arrays), method=method)

    # ------------------------------------------------------------------ epoch

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
        self, state: TrainState, arrays: TrainArrays, key: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """A whole epoch as one scan over batches: the next state and the mean of each term.

        The method's per-epoch state is recomputed first when ``state.epoch`` is a multiple of
        ``recluster_every`` (every epoch by default), else kept."""
        state, terms, _ = self._epoch_scan(state, arrays, key)
        return state, jax.tree.map(jnp.mean, terms)

    def epoch_trace(
        self, state: TrainState, arrays: TrainArrays, key: jax.Array
    ) -> tuple[dict[str, jax.Array], jax.Array]:
        """The same epoch as :meth:`epoch`, step by step: (each term per step [n_batches], whether
        all parameters are finite after each step [n_batches]). For diagnosing a non-finite
        epoch: the first step and term that went bad."""
        _, terms, finite = self._epoch_scan(state, arrays, key, trace=True)
        return terms, finite

    def epoch_prefix(
        self, state: TrainState, arrays: TrainArrays, key: jax.Array, n_steps: int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """The first ``n_steps`` steps of :meth:`epoch` (same batches and draws), for timing
        epochs too long to run whole; ``n_steps`` is static. The epoch counter is not advanced."""
        new, terms, _ = self._epoch_scan(state, arrays, key, n_steps=n_steps)
        return new.replace(epoch=state.epoch), jax.tree.map(jnp.mean, terms)

    def refresh_method_state(self, state: TrainState, arrays: TrainArrays, key: jax.Array) -> dict:
        """The method's per-epoch state for epoch ``state.epoch``: recomputed from the clean
        forward on multiples of ``recluster_every``, else the state's own."""
        if not state.method_state:
            return state.method_state
        if self.recluster_every == 1:
            return self.method_epoch_state(state.params, arrays, key)
        return jax.lax.cond(
            state.epoch % self.recluster_every == 0,
            lambda: self.method_epoch_state(state.params, arrays, key),
            lambda: state.method_state,
        )

    def _epoch_scan(self, state: TrainState, arrays, key, trace: bool = False, n_steps=None):
        # One key per purpose of the epoch: batches (negatives and shuffle), steps, clustering.
        k_batches, k_steps, k_method_state = jax.random.split(key, 3)
        batches = self.epoch_batches(k_batches, arrays)
        step_keys = jax.random.split(k_steps, self.n_batches)
        if n_steps is not None:
            batches = jax.tree.map(lambda x: x[:n_steps], batches)
            step_keys = step_keys[:n_steps]
        method_state = self.refresh_method_state(state, arrays, k_method_state)

        def body(carry, xs):
            state, step_carry = carry
            batch, k, i = xs
            inputs = self.draw_step_inputs(state.params, k, arrays, batch)
            backbone = self.backbone(state.params)
            step_carry = backbone.update_step_state(step_carry, i, inputs.backbone, arrays)
            inputs = inputs.replace(epoch_state=method_state, carry=step_carry)
            state, terms = self.step(state, arrays, batch, inputs)
            finite = all_finite(state.params) if trace else jnp.ones((), bool)
            return (state, step_carry), (terms, finite)

        step_carry = self.backbone(state.params).init_step_state(arrays)
        steps = jnp.arange(step_keys.shape[0], dtype=jnp.int32)
        (state, _), (terms, finite) = jax.lax.scan(
            body, (state, step_carry), (batches, step_keys, steps)
        )
        # Placed as the state came in (tree_shardings replicates these vectors), so the next
        # epoch's call compiles nothing new.
        method_state = jax.tree.map(replicate, method_state)
        state = state.replace(method_state=method_state, epoch=state.epoch + 1)
        return state, terms, finite

    def method_epoch_state(self, params: Params, arrays: TrainArrays, key: jax.Array) -> dict:
        """The method's per-epoch inputs (e.g. DaRec's clusters) from the clean forward."""
        if type(self.method).epoch_state is Method.epoch_state:
            return {}
        fu, fi = self.eval_embeddings(params, arrays)
        llm = None if arrays.user_llm is None else (arrays.user_llm, arrays.item_llm)
        return self.method.epoch_state(params["method"], fu, fi, llm, key)

    # Jitted entry points. The epoch donates the state it advances.
    @functools.cached_property
    def jit_epoch(self):
        return jax.jit(self.epoch, donate_argnums=(0,))

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
) -> tuple[StepFunctions, TrainArrays, TrainState]:
    """Everything the training loop needs: functions, device data and the initial state.

    ``mesh``: place the data and the state on it (``darec_jax.parallel``: tables split by rows
    over ``model`` where it divides them, the rest replicated); call the jitted functions inside
    ``jax.set_mesh(mesh)``. None: the default device.
    """
    with_llm = cfg.method != "none"
    devices = 1 if mesh is None else mesh_size(mesh)
    arrays, search_steps = make_train_arrays(
        data, resolve_spmm_impl(cfg, devices), cfg.model.spmm_block_edges, with_llm
    )
    arrays = arrays.replace(extra=static_arrays(cfg, arrays.graph))
    method = make_method(cfg, data.n_users, data.n_items)
    llm_dim = int(data.user_emb.shape[1]) if with_llm else 0
    graphdef, params = init_model(cfg, data.n_users, data.n_items, method, llm_dim)
    fns = StepFunctions(
        graphdef=graphdef,
        cfg=cfg,
        method=method,
        optimizer=make_optimizer(cfg),
        n_items=data.n_items,
        n_interactions=int(arrays.users.shape[0]),
        search_steps=search_steps,
    )
    state = fns.init_state(params, arrays)
    if mesh is not None:
        rows = table_rows(data)
        arrays = place(arrays, tree_shardings(arrays, mesh, rows))
        state = place(state, tree_shardings(state, mesh, rows))
    return fns, arrays, state


def table_rows(data: InteractionData) -> tuple[int, int, int]:
    """Row counts of the tables the model axis may split: users, items, all nodes."""
    return (data.n_users, data.n_items, data.n_users + data.n_items)


def all_finite(tree) -> jax.Array:
    """Whether every entry of every array in ``tree`` is finite (a bool scalar)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)
