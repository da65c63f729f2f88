"""AutoCF (docs/backbones.md §2.6, Q14–Q20) as a Flax NNX module, with fixed-shape subgraph masking.

Graph: the interaction graph's directed edges ℰ0 (both directions of every training pair); the
head of an edge is its receiver, the tail its sender, so the graph's product ``graph.spmm``
computes out_n = Σ_{e: h_e = n} w_e · X_{t_e}.

Every ``fix_steps`` steps of an epoch (step 0 of each epoch included), with the current parameters
and before the loss, a **resample** builds the training graphs from this step's draws:

(a) seeds: LocalGraph scores on the *unmasked* E0 and the 0/1 adjacency A1,
        deg = A1·1, fst = A1 E0 − E0, scd = (A1 fst − fst) − deg ⊙ E0,
        sub = (fst + scd) / (deg + (A1 deg − deg) − deg + 1e-8),
        noisy_n = log σ(ŝub_n · Ê0_n) − log(−log u_n)     (u_n = 0 → 1e-8),
    S0 = top ``seed_num`` of noisy; infomax = −mean(noisy) (differentiable through log σ).
(b) masking on ℰ0: depth k removes the remaining edges incident to S_k, S_{k+1} = endpoints of
    the edges removed at depth k; ℰ_enc = the survivors (a 0/1 mask over ℰ0). Mask set
    M = S0 ∪ S1 ∪ … ∪ Q (Q: floor(N·keep_rate) random nodes, with replacement), sorted.
    Encoder weights on ℰ_enc: c_{h}·c_{t}, c_n = (deg'_n + 1e-12)^{-1/2}, deg' = ℰ_enc's head
    counts (0 off ℰ_enc). Decoder edges: the pairs (M[j_k], M[j'_k]) both ways, the self-loops and
    ℰ_enc, deduplicated and sorted by (row, col) = ascending hash row·N + col. They live in a
    fixed buffer of 3E + N slots with a validity mask (duplicates and the unused tail masked).

The graphs are the backbone's step state (:meth:`AutoCF.update_step_state`), reused until the
next resample. Training forward: X^{(0)} = E0 (RLMRec-Gen: the masked E0), X^{(l)} = Ã_enc X^{(l−1)}
for l ≤ L, then the graph-transformer layers on the decoder edges; F = Σ of all X. Evaluation:
the encoder is Â and the GT layers run on ℰ0 itself (Q17).

Loss: rec = −mean_b F_u[anc_b]·F_i[pos_b] (negatives ignored, Q14), reg, cl = ssl_reg·(con(unique
anchors) + con(unique positives)) + cross (Q15), and infomax on resample steps only, added after
the method's terms (``late_term_names``; Q13, Q16).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jraph
import numpy as np
from flax import nnx

from darec_jax.errors import ConfigError
from darec_jax.models.base import Backbone, concat_ego
from darec_jax.models.spec import BackboneSpec, embedding_names, per_dataset, rate_problems
from darec_jax.nn import xavier_uniform

# Step-state keys (merged into a step's draws; prefixed so they never meet a method's draw names).
ENC_WEIGHTS = "autocf_enc_weights"  # float32 [E]: Ã_enc on ℰ0 (0 off ℰ_enc)
DEC_ROWS = "autocf_dec_rows"  # int32 [3E + N]: decoder heads, sorted; N on the unused tail
DEC_COLS = "autocf_dec_cols"  # int32 [3E + N]: decoder tails (0 on the unused tail)
DEC_VALID = "autocf_dec_valid"  # float32 [3E + N]: 1 on the deduplicated decoder edges
RESAMPLED = "autocf_resampled"  # bool []: this step resampled (infomax counts)
GRAPH_KEYS = (ENC_WEIGHTS, DEC_ROWS, DEC_COLS, DEC_VALID)

# Draw keys: the raw randomness of a resample, drawn every step and used on resample steps.
GUMBEL_U = "autocf_gumbel_u"  # float32 [N] U[0, 1)
EXTRA_NODES = "autocf_q"  # int32 [floor(N·keep_rate)] in [0, N)
PAIR_U = ("autocf_j_u", "autocf_j2_u")  # float32 [E] U[0, 1) → j = floor(u·|M|)
PAIR_IDS = ("autocf_j", "autocf_j2")  # int [E] in [0, |M|): injected j, j' (override PAIR_U)


def row_normalize(x: jax.Array) -> jax.Array:
    """F.normalize: rows divided by max(‖x‖, 1e-12), with a finite gradient at a zero row.

    sqrt(max(‖x‖², 1e-24)) equals max(‖x‖, 1e-12) for every x, and its gradient vanishes where the
    clamp is active (torch's behaviour), instead of sqrt's 0·∞ at ‖x‖ = 0.
    """
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, 1e-24))


def naive_log_sum_exp(x: jax.Array, z: jax.Array) -> jax.Array:
    """[n]: log Σ_m exp(x_n · z_m), without max-subtraction, as the reference (Q15)."""
    return jnp.log(jnp.sum(jnp.exp(x @ z.T), axis=-1))


def first_occurrences(ids: jax.Array, valid: jax.Array) -> jax.Array:
    """bool [B]: row b is a real row and the first real row holding its id, so the marked rows
    enumerate the sorted unique ids of the batch's real rows (at the fixed size B)."""
    sentinel = jnp.iinfo(jnp.int32).max
    keys = jnp.where(valid > 0, ids.astype(jnp.int32), sentinel)
    order = jnp.argsort(keys, stable=True)
    ordered = keys[order]
    new = jnp.concatenate([jnp.ones(1, bool), ordered[1:] != ordered[:-1]])
    return jnp.zeros(ids.shape[0], bool).at[order].set(new & (ordered != sentinel))


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` over the rows where ``mask`` holds."""
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.sum(mask.astype(values.dtype))


def fp32_row_decode(rows: jax.Array, n_nodes: int) -> jax.Array:
    """The reference's CUDA row decode of a hash h = r·N + c (Q19): trunc(fl32(fl32(r·N) ·
    fl32(1/N))), off by one for some rows when N = 20332. Needs N² < 2³¹ (int32 hashes)."""
    inv_n = jnp.float32(1.0) / jnp.float32(n_nodes)
    scaled = (rows * n_nodes).astype(jnp.float32) * inv_n
    return scaled.astype(jnp.int32)  # truncation (non-negative)


def gt_attention(
    x: jax.Array,
    wq: jax.Array,
    wk: jax.Array,
    wv: jax.Array,
    rows: jax.Array,
    cols: jax.Array,
    heads: int,
    valid: jax.Array | None = None,
) -> jax.Array:
    """AutoCF's graph-transformer layer (§2.6 (c), Q20) on the edges (rows[e], cols[e]).

        q_e = X_{r_e} Wq, k_e = X_{c_e} Wk, v_e = X_{c_e} Wv, split into H contiguous heads;
        s_{e,h} = clamp(q_{e,h}·k_{e,h}, −10, 10)   (no 1/sqrt(dh));
        a_{e,h} = exp(s_{e,h}) / (Σ_{e': r_{e'} = r_e} exp(s_{e',h}) + 1e-8);
        out_n = concat_h Σ_{e: r_e = n} a_{e,h} v_{e,h}   (0 for nodes without edges).

    x [N, d]; wq, wk, wv [d, d]; rows, cols int [E'], rows sorted, a row N marking unused slots;
    valid: optional float [E'] 0/1, edges with 0 take no part. Returns [N, d].
    """
    n_nodes, dim = x.shape
    dh = dim // heads
    gather_rows = jnp.minimum(rows, n_nodes - 1)
    # (X W)[idx] = X[idx] W row by row; projecting the N nodes once is cheaper than per edge.
    q = (x @ wq)[gather_rows].reshape(-1, heads, dh)
    k = (x @ wk)[cols].reshape(-1, heads, dh)
    v = (x @ wv)[cols].reshape(-1, heads, dh)
    # The reference's per-receiver softmax, not jraph.segment_softmax: no max shift (the clamp
    # already bounds exp by e^10) and + 1e-8 in the denominator, which matters when a node's
    # scores sit at the −10 clamp (Σ exp ≈ 4.5e-5 per edge: the shifted softmax differs there by
    # up to ~7e-5 relative, beyond the equivalence tolerance); masked slots weigh exactly 0.
    expo = jnp.exp(jnp.clip(jnp.sum(q * k, axis=-1), -10.0, 10.0))  # [E', H]
    if valid is not None:
        expo = expo * valid[:, None]
    # Segment N + 1 collects the unused slots (row N) and is dropped.
    segments = n_nodes + 1
    denom = jraph.segment_sum(expo, rows, num_segments=segments, indices_are_sorted=True)
    att = expo / (denom[rows] + 1e-8)
    out = jraph.segment_sum(
        att[:, :, None] * v, rows, num_segments=segments, indices_are_sorted=True
    )
    return out[:n_nodes].reshape(n_nodes, dim)


class AutoCF(Backbone):
    """AutoCF: ID embeddings, a masked-graph GCN encoder and graph-transformer decoder layers.

    Parameters: ``user_emb`` [U, d], ``item_emb`` [I, d] (Xavier-uniform), and the GT layers'
    ``gt_wq``, ``gt_wk``, ``gt_wv`` [gt_layer, d, d] (each [d, d] slice Xavier-uniform, used as
    X·W). Static: GCN depth L, GT depth, heads, seed_num, mask_depth, keep_rate (the fraction
    of extra random mask nodes, not an edge dropout), fix_steps, ssl_reg.
    """

    term_names = ("cl",)
    #: added after the method's terms (the reference adds infomax last, Q13).
    late_term_names = ("infomax",)
    rec_name = "rec"

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        num_layers: int,
        *,
        rngs: nnx.Rngs,
        gt_layer: int = 1,
        head_num: int = 4,
        seed_num: int = 100,
        mask_depth: int = 2,
        keep_rate: float = 0.2,
        fix_steps: int = 10,
        ssl_reg: float = 5.0,
        fp32_row_decode: bool = False,
    ):
        n_nodes = n_users + n_items
        if dim % head_num:
            raise ConfigError(f"embedding_size {dim} is not divisible by head_num {head_num}")
        if not 1 <= seed_num <= n_nodes:
            raise ConfigError(f"model.autocf.seed_num must be in [1, {n_nodes}], got {seed_num}")
        if mask_depth < 1 or fix_steps < 1 or gt_layer < 0:
            raise ConfigError("AutoCF needs mask_depth >= 1, fix_steps >= 1 and gt_layer >= 0")
        self.n_users = n_users
        self.n_items = n_items
        self.dim = dim
        self.num_layers = num_layers
        self.gt_layer = gt_layer
        self.head_num = head_num
        self.seed_num = seed_num
        self.mask_depth = mask_depth
        self.keep_rate = keep_rate
        self.fix_steps = fix_steps
        self.ssl_reg = ssl_reg
        self.fp32_row_decode = fp32_row_decode
        self.user_emb = nnx.Param(xavier_uniform(rngs.params(), (n_users, dim)))
        self.item_emb = nnx.Param(xavier_uniform(rngs.params(), (n_items, dim)))

        def stacked():
            layers = [xavier_uniform(rngs.params(), (dim, dim)) for _ in range(gt_layer)]
            return jnp.stack(layers) if layers else jnp.zeros((0, dim, dim), jnp.float32)

        self.gt_wq = nnx.Param(stacked())
        self.gt_wk = nnx.Param(stacked())
        self.gt_wv = nnx.Param(stacked())

    @property
    def final_dim(self) -> int:
        return self.dim

    @property
    def n_nodes(self) -> int:
        return self.n_users + self.n_items

    @property
    def samp_num(self) -> int:
        """|Q| = floor(N · keep_rate), the extra random mask nodes."""
        return int(np.floor(self.n_nodes * self.keep_rate))

    def ego(self) -> jax.Array:
        """E0 = [E_u ; E_i], [N, d]."""
        return concat_ego(self.user_emb, self.item_emb)

    # ------------------------------------------------------------------ (a) seed sampling

    def local_graph(
        self, ego: jax.Array, arrays, gumbel_u: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """LocalGraph on ``ego`` (the unmasked E0) with the uniforms ``gumbel_u`` [N].

        Returns (S0 int32 [seed_num] in top-k order, noisy [N], infomax = −mean(noisy)).
        """
        graph, n_nodes = arrays.graph, self.n_nodes
        ones = jnp.ones_like(graph.weights)

        def a1(x):  # A1 x: the 0/1 adjacency on ℰ0
            return graph.spmm(x, ones)

        heads, tails = graph.receivers, graph.senders

        def row_sums(w):  # Σ_{e: h_e = n} w_e
            return jraph.segment_sum(w, heads, num_segments=n_nodes, indices_are_sorted=True)

        deg = row_sums(ones)
        a1_deg = row_sums(deg[tails])
        deg, a1_deg = deg[:, None], a1_deg[:, None]  # [N, 1]
        fst = a1(ego) - ego
        scd = (a1(fst) - fst) - deg * ego
        scd_num = (a1_deg - deg) - deg
        sub = (fst + scd) / (deg + scd_num + 1e-8)
        cos = jnp.sum(row_normalize(sub) * row_normalize(ego), axis=-1)
        u = jnp.where(gumbel_u == 0, jnp.float32(1e-8), gumbel_u)
        noisy = jnp.log(jax.nn.sigmoid(cos)) - jnp.log(-jnp.log(u))
        _, seeds = jax.lax.top_k(jax.lax.stop_gradient(noisy), self.seed_num)
        return seeds.astype(jnp.int32), noisy, -jnp.mean(noisy)

    def infomax(self, arrays, gumbel_u: jax.Array) -> jax.Array:
        """−mean(noisy) of the current parameters' unmasked E0 (differentiable)."""
        return self.local_graph(self.ego(), arrays, gumbel_u)[2]

    # ------------------------------------------------------------------ (b) subgraph masking

    def mask_nodes(self, arrays, seeds: jax.Array, q: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The ``mask_depth``-hop removal around S0 on ℰ0 and the mask set.

        Returns (keep bool [E]: ℰ_enc within ℰ0, in_mask bool [N]: M = S0 ∪ S1 ∪ … ∪ Q).
        """
        n_nodes = self.n_nodes
        heads, tails = arrays.graph.receivers, arrays.graph.senders
        keep = jnp.ones(heads.shape[0], bool)
        current = jnp.zeros(n_nodes, bool).at[seeds].set(True)
        in_mask = current
        for depth in range(self.mask_depth):
            removed = keep & (current[heads] | current[tails])
            keep = keep & ~removed
            if depth < self.mask_depth - 1:  # S_{k+1}: endpoints of the edges removed now
                hit = removed.astype(jnp.int32)
                count = jnp.zeros(n_nodes, jnp.int32).at[heads].add(hit).at[tails].add(hit)
                current = count > 0
                in_mask = in_mask | current
        in_mask = in_mask.at[q].set(True)
        return keep, in_mask

    def encoder_weights(self, arrays, keep: jax.Array) -> jax.Array:
        """float32 [E]: (1·c_h)·c_t on ℰ_enc and 0 elsewhere, c_n = (deg'_n + 1e-12)^{-1/2}."""
        heads, tails = arrays.graph.receivers, arrays.graph.senders
        degree = jraph.segment_sum(
            keep.astype(jnp.float32), heads, num_segments=self.n_nodes, indices_are_sorted=True
        )
        c = jnp.power(degree + 1e-12, -0.5)
        return jnp.where(keep, (1.0 * c[heads]) * c[tails], 0.0)

    def decoder_edges(
        self, arrays, keep: jax.Array, in_mask: jax.Array, j: jax.Array, j2: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The decoder edges in a fixed buffer of 3E + N slots, sorted by (row, col).

        Candidates: (M[j_k], M[j'_k]), (M[j'_k], M[j_k]), (n, n) for n < N, and ℰ_enc; a slot is
        valid when it holds a candidate different from the previous slot's. j, j' int [E] index
        the sorted mask set M. Returns (rows int32 [3E+N], N past the candidates; cols int32;
        valid float32).
        """
        n_nodes = self.n_nodes
        heads, tails = arrays.graph.receivers, arrays.graph.senders
        mask_sorted = jnp.nonzero(in_mask, size=n_nodes, fill_value=0)[0].astype(jnp.int32)
        a, b = mask_sorted[j], mask_sorted[j2]
        loops = jnp.arange(n_nodes, dtype=jnp.int32)
        rows = jnp.concatenate([a, b, loops, jnp.where(keep, heads, n_nodes)])
        cols = jnp.concatenate([b, a, loops, jnp.where(keep, tails, 0)])
        rows, cols = jax.lax.sort((rows, cols), num_keys=2)
        repeat = (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])
        valid = jnp.concatenate([jnp.ones(1, bool), ~repeat]) & (rows < n_nodes)
        if self.fp32_row_decode:  # monotone in the row, so the order stays sorted
            rows = jnp.where(rows < n_nodes, fp32_row_decode(rows, n_nodes), rows)
        return rows, cols, valid.astype(jnp.float32)

    def pair_indices(self, draws, in_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """j, j' int32 [E] in [0, |M|): injected ones, else floor(u·|M|) of the uniforms."""
        if PAIR_IDS[0] in draws:
            return tuple(jnp.asarray(draws[k], jnp.int32) for k in PAIR_IDS)
        size = jnp.sum(in_mask.astype(jnp.int32))

        def scale(u):
            return jnp.minimum(jnp.floor(u * size.astype(jnp.float32)), size - 1).astype(jnp.int32)

        return tuple(scale(draws[k]) for k in PAIR_U)

    def resample(self, ego: jax.Array, arrays, draws) -> dict[str, jax.Array]:
        """(a) + (b) on the unmasked ``ego`` with this step's draws: the training graphs."""
        seeds, _, _ = self.local_graph(ego, arrays, draws[GUMBEL_U])
        keep, in_mask = self.mask_nodes(arrays, seeds, draws[EXTRA_NODES])
        j, j2 = self.pair_indices(draws, in_mask)
        rows, cols, valid = self.decoder_edges(arrays, keep, in_mask, j, j2)
        return {
            ENC_WEIGHTS: self.encoder_weights(arrays, keep),
            DEC_ROWS: rows,
            DEC_COLS: cols,
            DEC_VALID: valid,
        }

    # ------------------------------------------------------------------ Backbone interface

    def draw(self, key, arrays):
        n_edges = arrays.graph.n_edges
        k_gumbel, k_q, k_j, k_j2 = jax.random.split(key, 4)
        return {
            GUMBEL_U: jax.random.uniform(k_gumbel, (self.n_nodes,), jnp.float32),
            EXTRA_NODES: jax.random.randint(k_q, (self.samp_num,), 0, self.n_nodes, jnp.int32),
            PAIR_U[0]: jax.random.uniform(k_j, (n_edges,), jnp.float32),
            PAIR_U[1]: jax.random.uniform(k_j2, (n_edges,), jnp.float32),
        }

    def init_step_state(self, arrays):
        n_edges = arrays.graph.n_edges
        slots = 3 * n_edges + self.n_nodes
        return {
            ENC_WEIGHTS: jnp.zeros(n_edges, jnp.float32),
            DEC_ROWS: jnp.full(slots, self.n_nodes, jnp.int32),
            DEC_COLS: jnp.zeros(slots, jnp.int32),
            DEC_VALID: jnp.zeros(slots, jnp.float32),
            RESAMPLED: jnp.zeros((), bool),
        }

    def update_step_state(self, state, step_index, draws, arrays):
        """Resample at steps i ≡ 0 (mod fix_steps) of the epoch, else keep the graphs."""
        resampled = (step_index % self.fix_steps) == 0
        ego = jax.lax.stop_gradient(self.ego())
        graphs = jax.lax.cond(
            resampled,
            lambda: self.resample(ego, arrays, draws),
            lambda: {k: state[k] for k in GRAPH_KEYS},
        )
        return {**graphs, RESAMPLED: resampled}

    def propagate(
        self,
        ego: jax.Array,
        arrays,
        enc_weights: jax.Array | None,
        gt_rows: jax.Array,
        gt_cols: jax.Array,
        gt_valid: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """F = X^{(0)} + Σ_l Ã^l X^{(0)} + the GT outputs, added left to right; (F_u, F_i).

        enc_weights [E]: the encoder on ℰ0 (None: Â); gt_*: the GT layers' edge list.
        """
        x = ego
        final = ego
        for _ in range(self.num_layers):
            x = arrays.graph.spmm(x, enc_weights)
            final = final + x
        wq, wk, wv = self.gt_wq[...], self.gt_wk[...], self.gt_wv[...]
        for g in range(self.gt_layer):
            x = gt_attention(x, wq[g], wk[g], wv[g], gt_rows, gt_cols, self.head_num, gt_valid)
            final = final + x
        return final[: self.n_users], final[self.n_users :]

    def cl_loss(self, fu: jax.Array, fi: jax.Array, batch) -> jax.Array:
        """cl = ssl_reg·(con(unique anchors) + con(unique positives)) + cross (Q15).

        con(V) = mean over the sorted unique ids n of log Σ_{m ∈ all rows of V} exp(F_n·F_m);
        cross = mean over the real anchors (duplicates kept) of log Σ_{all items j}
        exp(F_u[anc]·F_i[j]). Raw dot products, naive exp/sum/log.
        """
        valid = batch.valid > 0
        anchors, positives = fu[batch.users], fi[batch.pos]
        con_u = masked_mean(naive_log_sum_exp(anchors, fu), first_occurrences(batch.users, valid))
        con_i = masked_mean(naive_log_sum_exp(positives, fi), first_occurrences(batch.pos, valid))
        cross = masked_mean(naive_log_sum_exp(anchors, fi), valid)
        return self.ssl_reg * (con_u + con_i) + cross

    def train_forward(self, ego, arrays, draws, batch):
        """The forward on the step state's graphs; terms ``cl`` and ``infomax`` (an exact 0 on
        steps that did not resample; else −mean(noisy) of the unmasked E0, with gradient)."""
        if ENC_WEIGHTS not in draws:
            raise KeyError("AutoCF needs its step state in the draws (see update_step_state)")
        fu, fi = self.propagate(
            ego, arrays, draws[ENC_WEIGHTS], draws[DEC_ROWS], draws[DEC_COLS], draws[DEC_VALID]
        )
        terms = {}
        if batch is not None:
            terms["cl"] = self.cl_loss(fu, fi, batch)
            terms["infomax"] = jax.lax.cond(
                draws[RESAMPLED],
                lambda: self.infomax(arrays, draws[GUMBEL_U]),
                lambda: jnp.zeros((), jnp.float32),
            )
        return fu, fi, terms

    def eval_forward(self, arrays):
        graph = arrays.graph
        return self.propagate(self.ego(), arrays, None, graph.receivers, graph.senders)

    def rec_loss(self, users, pos, neg, valid):
        """rec = −(1/B) Σ_b users_b · pos_b over the real rows; negatives ignored (Q14)."""
        del neg
        valid = valid.astype(users.dtype)
        return -jnp.sum(jnp.sum(users * pos, axis=-1) * valid) / jnp.sum(valid)


# ----------------------------------------------------------------------------- declarations


@dataclasses.dataclass(frozen=True)
class AutoCFConfig:
    """``model.autocf``: graph-transformer layers and heads, seeds of the masked subgraphs,
    masking depth, fraction of extra random nodes in the mask set (``keep_rate``, the
    reference's name; not an edge dropout), steps between resamplings, weight of the
    self-supervised terms."""

    gt_layer: int = 1
    head_num: int = 4
    seed_num: int = 100
    mask_depth: int = 2
    keep_rate: float = 0.2
    fix_steps: int = 10
    ssl_reg: float = 2.0
    # Decode the decoder's edge hashes h = r·N + c as the reference's CUDA code does, in float32
    # (rows drift once r·N passes 2^24, so on large graphs some decoder edges land on other
    # rows); False: the exact integer decode. True reproduces the reference bit for bit there.
    fp32_row_decode: bool = False

    def problems(self) -> list[str]:
        return rate_problems("model.autocf.keep_rate", self.keep_rate)


_GT = (("gt_wq", "qTrans"), ("gt_wk", "kTrans"), ("gt_wv", "vTrans"))


def _state_dict_names(params) -> list[tuple[str, str, int | None]]:
    """The ID tables and each GT layer's slice of the stacked Q/K/V (``gtLayers.{g}.*``)."""
    out = embedding_names(params)
    for g in range(int(np.shape(params["gt_wq"])[0])):
        out += [(ours, f"gtLayers.{g}.{name}", g) for ours, name in _GT]
    return out


_AUTOCF_VARIANT = {
    "model.layer_num": (2, 2, 2),
    "model.reg_weight": (1e-6, 1e-8, 1e-6),
    "model.autocf.ssl_reg": (1.0, 1.0, 0.5),
}

SPEC = BackboneSpec(
    name="autocf",
    order=5,
    module=AutoCF,
    config=AutoCFConfig,
    presets={
        "none": per_dataset(
            {
                "model.layer_num": (2, 3, 2),
                "model.reg_weight": (1e-6, 1e-7, 1e-6),
                "model.autocf.ssl_reg": (5.0, 2.0, 0.5),
                "model.autocf.keep_rate": (0.2,) * 3,
            }
        ),
        "rlmrec-con": per_dataset(
            {
                **_AUTOCF_VARIANT,
                "rlmrec.kd_weight": (0.1, 1e-2, 1e-2),
                "rlmrec.kd_temperature": (0.5, 0.1, 0.2),
            }
        ),
        "rlmrec-gen": per_dataset(
            {
                **_AUTOCF_VARIANT,
                "rlmrec.mask_ratio": (0.2,) * 3,
                "rlmrec.recon_weight": (1.0, 0.1, 1.0),
                "rlmrec.recon_temperature": (0.5, 0.1, 0.2),
            }
        ),
    },
    state_dict=_state_dict_names,
    # Drawn by the reference's AutoCF runner on resample steps, in this order.
    draws={GUMBEL_U: "runner", EXTRA_NODES: "runner", PAIR_IDS[0]: "runner", PAIR_IDS[1]: "runner"},
    mask_token="gene_masker.mask_token",
    rlmrec_con_negative=False,  # AutoCF_plus has no negative-item kd term (§3.1)
)
