"""Loss primitives of the LLM-alignment methods (docs/backbones.md §1.5, §1.7, §3.1–3.2;
docs/darec.md).

Pure functions of arrays; the method layer that wires them to backbones builds on these. Each
states its equation and the shapes of its arguments. Two normalisations appear, as in the
reference (Q7):

    x̃ = x / sqrt(1e-8 + ‖x‖²)          (cal_infonce, and every DaRec term)
    x̂ = x / max(‖x‖, 1e-12)            (ssl_con_loss, torch's F.normalize)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from darec_jax.nn import LeakyMLP, Params


def normalize_eps(x: jax.Array) -> jax.Array:
    """Rows divided by sqrt(1e-8 + ‖x‖²)."""
    return x / jnp.sqrt(1e-8 + jnp.sum(jnp.square(x), axis=-1, keepdims=True))


def normalize_clamped(x: jax.Array) -> jax.Array:
    """Rows divided by max(‖x‖, 1e-12) (torch.nn.functional.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cal_infonce(
    x: jax.Array,
    y: jax.Array,
    z: jax.Array,
    temperature: float,
    row_mask: jax.Array | None = None,
    z_mask: jax.Array | None = None,
) -> jax.Array:
    """Σ_b [ −(x̃_b·ỹ_b)/τ + log Σ_{rows z} exp(x̃_b·z̃/τ) ]   (a SUM over the B rows).

    x, y: [B, d] anchors and positives; z: [M, d] the denominator's rows (the positive counts
    when it is a row of z). Naive exp / sum / log without max subtraction, as the reference.
    row_mask [B] / z_mask [M]: 0/1 masks of real rows in padded inputs (padding rows neither
    count as anchors nor enter the denominators).
    """
    xn, yn, zn = normalize_eps(x), normalize_eps(y), normalize_eps(z)
    positive = jnp.sum(xn * yn, axis=-1) / temperature
    similarities = jnp.exp(xn @ zn.T / temperature)
    if z_mask is not None:
        similarities = similarities * z_mask[None, :]
    per_row = -positive + jnp.log(jnp.sum(similarities, axis=-1))
    if row_mask is not None:
        per_row = jnp.where(row_mask > 0, per_row, 0.0)
    return jnp.sum(per_row)


def ssl_con_loss(x: jax.Array, y: jax.Array, temperature: float) -> jax.Array:
    """−(1/M) Σ_m log( exp(x̂_m·ŷ_m/τ) / (Σ_{m'} exp(x̂_m·ŷ_{m'}/τ) + 1e-8) + 1e-8 ).

    x, y: [M, d]; the other rows of y are the negatives (a MEAN over the M rows).
    """
    xn, yn = normalize_clamped(x), normalize_clamped(y)
    positive = jnp.exp(jnp.sum(xn * yn, axis=-1) / temperature)
    total = jnp.sum(jnp.exp(xn @ yn.T / temperature), axis=-1)
    return -jnp.mean(jnp.log(positive / (total + 1e-8) + 1e-8))


def rlmrec_con_kd(
    user_final: jax.Array,
    item_final: jax.Array,
    user_proj: jax.Array,
    item_proj: jax.Array,
    anc: jax.Array,
    pos: jax.Array,
    neg: jax.Array,
    kd_weight: float,
    temperature: float,
    with_negative_term: bool = True,
    valid: jax.Array | None = None,
) -> jax.Array:
    """RLMRec-Con's kd term (§3.1), CF side as the anchor:

        kd = (kd_weight / B) · [ infonce(F_u[anc], P_u[anc], P_u)          all users
                               + infonce(F_i[pos], P_i[pos], P_i[pos])     the batch's rows
                               + infonce(F_i[neg], P_i[neg], P_i[neg]) ]   (not for AutoCF)

    user_final [U, d], item_final [I, d]: the backbone's final embeddings; user_proj [U, d],
    item_proj [I, d]: the MLP projections of the LLM embeddings; anc, pos, neg: [B] ids.
    valid: optional [B] 0/1 mask of real rows of a padded batch; B is then Σ valid.
    """
    neg_proj = item_proj[neg] if with_negative_term else None
    return rlmrec_con_kd_rows(
        user_final,
        item_final,
        user_proj,
        item_proj[pos],
        neg_proj,
        anc,
        pos,
        neg,
        kd_weight,
        temperature,
        valid,
    )


def rlmrec_con_kd_rows(
    user_final: jax.Array,
    item_final: jax.Array,
    user_proj: jax.Array,
    pos_proj: jax.Array,
    neg_proj: jax.Array | None,
    anc: jax.Array,
    pos: jax.Array,
    neg: jax.Array,
    kd_weight: float,
    temperature: float,
    valid: jax.Array | None = None,
) -> jax.Array:
    """:func:`rlmrec_con_kd` from the item projections of the batch's rows only: pos_proj [B, d]
    = P_i[pos], neg_proj [B, d] = P_i[neg] (None: no negative term). The item terms use no other
    item rows, so a caller projects 2B LLM rows per step instead of all I."""
    total = cal_infonce(user_final[anc], user_proj[anc], user_proj, temperature, valid)
    total = total + cal_infonce(item_final[pos], pos_proj, pos_proj, temperature, valid, valid)
    if neg_proj is not None:
        total = total + cal_infonce(item_final[neg], neg_proj, neg_proj, temperature, valid, valid)
    batch = anc.shape[0] if valid is None else jnp.sum(valid)
    return kd_weight * (total / batch)


def node_mask(ego: jax.Array, seeds: jax.Array, token: jax.Array) -> jax.Array:
    """NodeMask (§1.5): E0'_n = m_n·E0_n + (1 − m_n)·t, m_n = 0 for n in ``seeds``.

    ego [N, d]; seeds [M] distinct node ids; token [1, d].
    """
    mask = jnp.ones((ego.shape[0], 1), ego.dtype).at[seeds].set(0.0)
    return mask * ego + (1.0 - mask) * token


def rlmrec_gen_recon(
    final_all: jax.Array,
    semantic_all: jax.Array,
    seeds: jax.Array,
    mlp_params: Params,
    recon_weight: float,
    temperature: float,
) -> jax.Array:
    """RLMRec-Gen's reconstruction (§3.2): recon_weight · ssl_con(MLP(F[S]), S_sem[S], τ).

    final_all [N, d] and semantic_all [N, d_L] are indexed by global node ids (users first);
    mlp_params: MLP_gen's parameters (:class:`~darec_jax.nn.LeakyMLP`, d -> d_L).
    """
    predicted = LeakyMLP.from_params(mlp_params)(final_all[seeds])
    return recon_weight * ssl_con_loss(predicted, semantic_all[seeds], temperature)
