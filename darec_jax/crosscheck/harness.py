"""Step-by-step comparison of our JAX training with the PyTorch reference, for any backbone and
method: the engine of ``python -m experiments.equivalence``.

Both sides start from the same weights (ours, copied into the reference through the state_dict
names of :mod:`darec_jax.crosscheck.interop`), take ``steps`` Adam steps on identical batches (the
real rows
padded on our side, as our epochs pad the last batch) with every random draw made once here and
given to both — edge-dropout uniforms (aligned edge by edge between the two storage orders),
SimGCL's noise, AutoCF's Gumbel uniforms, extra mask nodes and decoder pairs, node-mask seeds,
DaRec's cluster assignments and pair subsets — and are compared after every step:

* every loss term and the total, every gradient (by reference name), the parameters after the
  step, and the scoring embeddings (the clean forward ranking uses);
* after the last step, the validation metrics of both sides' full evaluation.

Errors are ``max |ours − reference|`` and that over ``max |reference|`` (relative to the
quantity's scale). Parameters after an Adam step get one derived allowance on top of the
relative tolerance, for the entries whose gradient is below the gradient check's resolution
(|g| ≤ rtol · max|g| of its tensor) only: Adam divides by sqrt(v) + ε, so the float32 noise of
such a gradient (already checked above) is amplified up to the learning rate; their allowance is
the difference between our optimiser's update from our gradients and from the reference's
gradients, from the same optimiser state (:func:`adam_allowance`). Every other entry must agree
to rtol, so a parameter difference caused by a gradient difference fails. After each step's
checks our parameters and Adam moments are copied into the reference (``resync``), so every step
starts from one state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from darec_jax.crosscheck.factory import build_reference
from darec_jax.crosscheck.interop import from_state_dict, to_state_dict
from darec_jax.eval import evaluate_embeddings, prepare_split
from darec_jax.graph import edge_permutation
from darec_jax.models import spec as backbone_spec
from darec_jax.reference.adjacency import adjacency_edges
from darec_jax.reference.metrics import evaluate as reference_evaluate
from darec_jax.reference.spec import reference_spec
from darec_jax.reference.state_dict import load_rlmrec_state_dict, rlmrec_name
from darec_jax.reference.train import make_optimizer
from darec_jax.train.step import Batch, StepInputs, make_step_functions

__all__ = ["Check", "compare_training"]


@dataclasses.dataclass
class Check:
    """One compared quantity: ``abs_err`` = max |ours − reference|, ``scale`` = max |reference|,
    ``allowed`` = the bound ``abs_err`` was held to (for parameters, the largest element-wise
    bound: rtol·scale + that element's Adam allowance)."""

    step: int  # the step after which it was compared
    kind: str  # "term", "grad", "param", "embedding", "metric"
    name: str
    abs_err: float
    scale: float
    allowed: float
    ok: bool

    @property
    def rel_err(self) -> float:
        return self.abs_err / max(self.scale, 1e-30)


def _err(ours, theirs) -> tuple[float, float]:
    a = np.asarray(ours, np.float64)
    b = np.asarray(theirs, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shape {a.shape} != {b.shape}")
    return float(np.max(np.abs(a - b), initial=0.0)), float(np.max(np.abs(b), initial=0.0))


class _Sides:
    """Both implementations of one config, their state and the injected draws."""

    def __init__(self, cfg, data, seed: int, perturb: dict[str, float] | None):
        self.cfg, self.data = cfg, data
        self.rng = np.random.default_rng(seed)
        self.fns, self.arrays, self.state = make_step_functions(cfg, data)
        self.model, adj = build_reference(cfg, data)
        state = to_state_dict(cfg, self.state.params)
        for name, delta in (perturb or {}).items():
            if name not in state:
                raise ValueError(f"--perturb: no parameter {name!r}; valid: {', '.join(state)}")
            state[name] = state[name] + np.float32(delta)
        load_rlmrec_state_dict(self.model, state)
        self.optimizer = make_optimizer(self.model, lr=cfg.train.lr)
        self.backbone_name, self.method_name = cfg.model.backbone, cfg.method
        self.carry = self.fns.backbone(self.state.params).init_step_state(self.arrays)
        self.declared = backbone_spec(self.backbone_name).draws
        if "edge" in self.declared.values():
            rows, cols, _ = adjacency_edges(adj)
            self.perm = edge_permutation(self.arrays.graph, rows, cols)
        runner = reference_spec(self.backbone_name).runner
        self.runner = runner(self.model, self.optimizer, self.method_name)
        # The shapes of this step's backbone draws on our side (which names it draws at all).
        backbone = self.fns.backbone(self.state.params)
        drawn = jax.eval_shape(lambda: backbone.draw(jax.random.key(0), self.arrays))
        self.draw_shapes = {name: tuple(v.shape) for name, v in drawn.items()}
        self._step = jax.jit(self._jax_step)

    # ------------------------------------------------------------------ draws

    def _edge_uniforms(self) -> tuple[torch.Tensor, np.ndarray]:
        ref = self.rng.random(self.perm.shape[0], dtype=np.float32)
        ours = np.empty_like(ref)
        ours[self.perm] = ref
        return torch.from_numpy(ref), ours

    def draws(self, n_real: int, size: int, step_index: int) -> tuple[Any, dict, dict]:
        """(our StepInputs, the reference backbone's keyword draws, the method's keyword
        draws)."""
        cfg = self.cfg
        ours_method: dict[str, Any] = {}
        ours_epoch: dict[str, Any] = {}
        method: dict[str, Any] = {}
        drawn, backbone = self.runner.draws(
            self.rng, self.declared, self.draw_shapes, self._edge_uniforms
        )
        ours = {name: jnp.asarray(value) for name, value in drawn.items()}
        if self.method_name == "rlmrec-gen":
            n_nodes = self.data.n_users + self.data.n_items
            seeds = self.rng.choice(n_nodes, self.fns.method.n_seeds, replace=False)
            method["seeds"] = torch.from_numpy(seeds.astype(np.int64))
            ours_method["seeds"] = jnp.asarray(seeds, jnp.int32)
        if self.method_name == "darec":
            d = cfg.darec
            names = ["user_assign", "item_assign"]
            if d.local_assign == "matched":
                names += ["user_assign_llm", "item_assign_llm"]
            for key in names:
                n = self.data.n_users if key.startswith("user") else self.data.n_items
                a = self.rng.integers(0, d.num_clusters, n)
                method[key], ours_epoch[key] = torch.from_numpy(a), jnp.asarray(a, jnp.int32)
            if d.pair_sample:
                users = self.rng.choice(n_real, min(d.pair_sample, n_real), replace=False)
                items = self.rng.choice(2 * n_real, min(d.pair_sample, 2 * n_real), replace=False)
                # Our item set is [pos (size rows) ; neg (size rows)], the reference's
                # [pos (n_real) ; neg (n_real)].
                items_ours = np.where(items < n_real, items, items - n_real + size)
                method["user_subset"] = torch.from_numpy(users)
                method["item_subset"] = torch.from_numpy(items)
                ours_method["user_subset"] = jnp.asarray(users, jnp.int32)
                ours_method["item_subset"] = jnp.asarray(items_ours, jnp.int32)
        inputs = StepInputs(backbone=ours, method=ours_method, epoch_state=ours_epoch)
        return inputs, backbone, method

    # ------------------------------------------------------------------ the two steps

    def _jax_step(self, state, carry, step_index, batch, inputs, ref_grads, arrays):
        """Our step as the epoch takes it (carry updated, then loss, gradient and Adam), with
        the gradients and the Adam update the reference's gradients would give."""
        params, opt_state = state.params, state.opt_state
        backbone = self.fns.backbone(params)
        carry = backbone.update_step_state(carry, step_index, inputs.backbone, arrays)
        inputs = inputs.replace(carry=carry)
        (_, terms), grads = jax.value_and_grad(self.fns.loss, has_aux=True)(
            params, arrays, batch, inputs
        )
        updates, new_opt = self.fns.optimizer.update(grads, opt_state, params)
        # Our optimiser's update from the reference's gradients, from the same state.
        ref_updates, _ = self.fns.optimizer.update(ref_grads, opt_state, params)
        amplification = jax.tree.map(lambda a, b: jnp.abs(a - b), updates, ref_updates)
        new_state = state.replace(
            params=optax.apply_updates(params, updates), opt_state=new_opt, step=state.step + 1
        )
        return new_state, carry, terms, grads, amplification

    def reference_step(self, anc, pos, neg, backbone_draws, method_draws):
        """zero_grad → loss → backward; returns (terms, grads by reference name). The optimiser
        step is taken by :meth:`reference_update`."""
        model = self.model
        t = [torch.from_numpy(x.astype(np.int64)) for x in (anc, pos, neg)]
        self.optimizer.zero_grad()
        total, terms = self.runner.loss(*t, backbone_draws, method_draws)
        total.backward()
        terms = {k: float(v.detach()) for k, v in terms.items()}
        terms["loss"] = float(total.detach())
        grads = {
            rlmrec_name(n): (
                p.grad.detach().numpy().copy() if p.grad is not None else np.zeros(p.shape)
            )
            for n, p in model.named_parameters()
        }
        return terms, grads

    def reference_update(self):
        self.optimizer.step()
        self.runner.after_update()

    @torch.no_grad()
    def resync(self) -> None:
        """Copy our parameters and Adam moments into the reference, so that the next step of
        both starts from the same state."""
        adam = [
            s
            for s in jax.tree.leaves(
                self.state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
            )
            if isinstance(s, optax.ScaleByAdamState)
        ]
        if len(adam) != 1:
            raise ValueError("expected one Adam state in the optimiser state")
        values = to_state_dict(self.cfg, self.state.params)
        mu = to_state_dict(self.cfg, adam[0].mu)
        nu = to_state_dict(self.cfg, adam[0].nu)
        for name, param in self.model.named_parameters():
            key = rlmrec_name(name)
            param.copy_(torch.from_numpy(values[key]))
            state = self.optimizer.state[param]
            state["exp_avg"].copy_(torch.from_numpy(mu[key]))
            state["exp_avg_sq"].copy_(torch.from_numpy(nu[key]))


def adam_allowance(amplification, ref_grad, rtol: float) -> np.ndarray:
    """Per-entry slack of the parameter check beyond ``rtol`` of the parameters' scale.

    Adam divides each entry's step by its own gradient scale, so an entry whose gradient is
    below what the gradient check can resolve (|g| ≤ rtol · max|g| of the tensor, or 0: float
    noise, the same on neither side) can take a step of any size up to the learning rate in
    either implementation. Those entries get |Adam(g_ours) − Adam(g_ref)| (``amplification``)
    as slack; every other entry gets none, so a parameter difference that a real gradient
    difference causes fails the check (it would otherwise be absorbed)."""
    g = np.abs(np.asarray(ref_grad, np.float64))
    resolvable = g > rtol * (float(g.max()) if g.size else 0.0)
    return np.where(resolvable, 0.0, np.asarray(amplification, np.float64))


def compare_training(
    cfg,
    data,
    steps: int = 3,
    batch_rows: int | None = None,
    seed: int = 0,
    rtol: float = 1e-5,
    metric_atol: float = 1e-9,
    perturb: dict[str, float] | None = None,
    resync: bool = True,
) -> list[Check]:
    """Train both sides ``steps`` steps from the same weights on the same inputs; every check.

    Args:
        cfg: the config (dataset sizes come from ``data``); its batch size is the padded size.
        data: the dataset (LLM embeddings for the alignment methods).
        steps: Adam steps.
        batch_rows: real triples per step (default: the batch size minus 3, to include padding).
        seed: seed of every injected draw and batch.
        rtol: relative tolerance (of the quantity's max |reference|).
        metric_atol: absolute tolerance of the final validation metrics.
        perturb: {reference name: value added to every entry} of the reference's initial
            weights (to see the comparison fail).
        resync: after each step's term, gradient and parameter checks, copy our parameters and
            Adam moments into the reference, so that the scoring embeddings (and, after the last
            step, the metrics) are compared on one set of weights and every step starts from one
            state (a step's errors are then
            that step's, not the float32 drift of two trajectories: Adam's division by
            sqrt(v) + ε makes entries with gradients near ε diverge chaotically). False lets the
            two trajectories run free.
    """
    torch.set_float32_matmul_precision("highest")
    jax.config.update("jax_default_matmul_precision", "highest")
    sides = _Sides(cfg, data, seed, perturb)
    size = cfg.train.batch_size
    nnz = data.train.users.shape[0]
    n_real = min(nnz, size - 3 if batch_rows is None else batch_rows)
    if not 1 <= n_real <= size:
        raise ValueError(f"batch_rows must be in [1, {size}] (the batch size)")
    checks: list[Check] = []

    def add(step, kind, name, ours, theirs, extra=None):
        abs_err, scale = _err(ours, theirs)
        bound = rtol * scale
        if extra is None:
            checks.append(Check(step, kind, name, abs_err, scale, bound, abs_err <= bound))
            return
        diff = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
        bounds = bound + extra
        ok = bool(np.all(diff <= bounds))
        checks.append(Check(step, kind, name, abs_err, scale, float(np.max(bounds)), ok))

    for step in range(1, steps + 1):
        k = sides.rng.integers(0, nnz, n_real)
        anc = data.train.users[k].astype(np.int64)
        pos = data.train.items[k].astype(np.int64)
        neg = sides.rng.integers(0, data.n_items, n_real).astype(np.int64)
        pad = size - n_real
        batch = Batch(
            users=jnp.asarray(np.r_[anc, np.zeros(pad, np.int64)], jnp.int32),
            pos=jnp.asarray(np.r_[pos, np.zeros(pad, np.int64)], jnp.int32),
            neg=jnp.asarray(np.r_[neg, np.zeros(pad, np.int64)], jnp.int32),
            valid=jnp.asarray(np.r_[np.ones(n_real), np.zeros(pad)], jnp.float32),
        )
        ours_inputs, backbone_draws, method_draws = sides.draws(n_real, size, step - 1)
        ref_terms, ref_grads = sides.reference_step(anc, pos, neg, backbone_draws, method_draws)
        ref_grad_tree = from_state_dict(cfg, ref_grads, sides.state.params)
        new_state, new_carry, terms, grads, amplification = sides._step(
            sides.state,
            sides.carry,
            jnp.int32(step - 1),
            batch,
            ours_inputs,
            ref_grad_tree,
            sides.arrays,
        )
        sides.reference_update()
        for name, value in ref_terms.items():
            add(step, "term", name, float(terms[name]), value)
        our_grads = to_state_dict(cfg, grads)
        for name, value in ref_grads.items():
            add(step, "grad", name, our_grads[name], value)
        sides.state, sides.carry = new_state, new_carry
        ours_now = to_state_dict(cfg, new_state.params)
        amp = to_state_dict(cfg, amplification)
        with torch.no_grad():
            theirs_now = {
                rlmrec_name(n): p.detach().numpy() for n, p in sides.model.named_parameters()
            }
        for name, value in theirs_now.items():
            extra = adam_allowance(amp[name], ref_grads[name], rtol)
            add(step, "param", name, ours_now[name], value, extra=extra)
        if resync:
            # The step was checked above (parameters, with Adam's derived allowance); the
            # forward after it is compared on one set of weights, so that entries Adam moved by
            # that allowance are not counted a second time through the embeddings and metrics.
            sides.resync()
        su, si = sides.fns.jit_scoring_embeddings(new_state.params, sides.arrays)
        with torch.no_grad():
            ru, ri = sides.model.eval_embeddings()
        add(step, "embedding", "users (scoring)", su, ru.numpy())
        add(step, "embedding", "items (scoring)", si, ri.numpy())

    task = prepare_split(data, "val", cfg.eval.user_chunk)
    su, si = sides.fns.jit_scoring_embeddings(sides.state.params, sides.arrays)
    ks = tuple(cfg.eval.ks)
    ours_metrics = evaluate_embeddings(su, si, task, ks, cfg.eval.recall_denominator)
    sides.model.eval()
    with torch.no_grad():
        theirs_metrics = reference_evaluate(
            sides.model,
            data.n_items,
            data.train.users,
            data.train.items,
            data.val.users,
            data.val.items,
            ks,
        )
    for name, value in theirs_metrics.items():
        abs_err, _ = _err(ours_metrics[name], value)
        ok = abs_err <= metric_atol
        checks.append(Check(steps, "metric", f"val {name}", abs_err, abs(value), metric_atol, ok))
    return checks
