"""The planted world: a synthetic dataset with exactly the structure DaRec assumes.

Every user and every item has three latent parts:

* shared ``s`` (``shared_dim``): preference clusters, drawn from a mixture of ``n_groups``
  Gaussians whose centres users and items share;
* CF-specific ``c`` (``cf_dim``): taste that only the interactions reveal;
* text-specific ``t`` (``text_dim``): content that only the text reveals and that is irrelevant
  to the interactions.

Interactions come from ``s`` and ``c`` only, plus a power-law item popularity::

    logit(u, i) = (shared_weight · <s_u, s_i> / sqrt(shared_dim)
                   + cf_weight · <c_u, c_i> / sqrt(cf_dim)) / temperature
                  - popularity_exponent · log(rank_i)

where ``rank_i`` is a random permutation of 1..n_items, so that item i's popularity factor is
``rank_i^(-popularity_exponent)`` (Zipf-like). Each user draws a heavy-tailed count ``n_u``
(log-normal, clipped to ``[min_interactions, max_interactions]`` and rounded at random, up with
probability equal to the fractional part; its location is solved so that the expected count is
``interactions_per_user``) and then ``n_u`` distinct items with probability ∝ exp(logit),
without replacement, by the Gumbel top-k trick (the ``n_u`` largest of logit + Gumbel noise are
an exact sample of that process). The user's
items are split at random 3:1:1 into train/val/test (the validation and test counts are
``n_u / 5`` rounded up or down at random so the proportions are exact in expectation, and at
least 1 each, so every user has at least 1 interaction in every split).

The "LLM embeddings" of users and items alike are one fixed random non-linear map of
``[text_shared_weight · s ‖ text_specific_weight · t]``: a two-layer tanh MLP into ``llm_dim``
dimensions, scaled to unit variance per entry, plus Gaussian noise of std ``text_noise``. So the
text view holds the useful shared information ``s`` and the irrelevant ``t``, and the CF view holds
``c``, which the text lacks. With ``text_signal=False`` the ``s`` fed to the map is replaced by
an independent draw from the same mixture (fresh group labels and offsets): the embeddings have the
same distribution but say nothing about the interactions (the "no shared signal" control world).

Determinism: everything derives from ``seed`` through ``numpy.random.SeedSequence(seed).spawn``,
one independent stream per component (centres, user latents, item latents, popularity, counts,
sampling, split, text map, text noise, decoy). Changing a text knob (``llm_dim``, ``text_noise``,
``text_signal`` …) therefore leaves the interactions unchanged, so a control world differs from
its twin only in the embeddings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from darec_jax.data.dataset import InteractionData, Split
from darec_jax.errors import ConfigError

__all__ = ["SyntheticConfig", "make_planted_world"]

# Users per block when sampling (bounds memory at _BLOCK × n_items floats). Fixed, because the
# random stream is consumed block by block: changing it would change the world.
_BLOCK = 256
# Order of the independent random streams spawned from the seed. Append only.
_STREAMS = (
    "centres",
    "user_latent",
    "item_latent",
    "popularity",
    "counts",
    "sampling",
    "split",
    "text_map",
    "text_noise",
    "decoy",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the planted world. The defaults give a sparse world (≈ 8 interactions per user)
    that a small model trains on in minutes on two CPU cores.

    Attributes:
      n_users: number of users.
      n_items: number of items.
      n_groups: G, the number of preference clusters (mixture components of ``s``).
      shared_dim: dimension of the shared part ``s``.
      cf_dim: dimension of the CF-specific part ``c``.
      text_dim: dimension of the text-specific part ``t``.
      llm_dim: d_L, the width of the "LLM embeddings".
      interactions_per_user: mean number of interactions per user (train + val + test).
      count_sigma: log-scale spread of the per-user count (log-normal; larger = heavier tail).
      min_interactions: smallest per-user count (at least 3 so that every split gets one).
      max_interactions: largest per-user count; None means ``n_items // 4``.
      popularity_exponent: exponent of the power-law item popularity (0 = uniform).
      group_spread: std of ``s`` around its group centre (centres are standard normal).
      shared_weight: weight of the shared part ``<s_u, s_i>`` in the interaction logit.
      cf_weight: weight of the CF-specific part ``<c_u, c_i>`` in the interaction logit.
      temperature: divides the preference part of the logit (smaller = more deterministic).
      text_signal: whether the text view sees the true ``s`` (False: an independent decoy).
      text_shared_weight: scale of ``s`` in the input of the text map.
      text_specific_weight: scale of ``t`` in the input of the text map.
      text_noise: std of the Gaussian noise added to the unit-variance text embeddings.
      seed: seed of every random draw.
    """

    n_users: int = 2000
    n_items: int = 1500
    n_groups: int = 8
    shared_dim: int = 16
    cf_dim: int = 16
    text_dim: int = 16
    llm_dim: int = 128
    interactions_per_user: float = 8.0
    count_sigma: float = 1.0
    min_interactions: int = 5
    max_interactions: int | None = None
    popularity_exponent: float = 0.5
    group_spread: float = 0.5
    shared_weight: float = 1.0
    cf_weight: float = 1.0
    temperature: float = 1.0
    text_signal: bool = True
    text_shared_weight: float = 1.0
    text_specific_weight: float = 1.0
    text_noise: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        positive_ints = ("n_users", "n_items", "n_groups", "shared_dim", "cf_dim", "text_dim")
        for key in (*positive_ints, "llm_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"synthetic.{key} must be a positive integer, got {value!r}")
        non_negative = (
            "count_sigma",
            "popularity_exponent",
            "group_spread",
            "shared_weight",
            "cf_weight",
            "text_shared_weight",
            "text_specific_weight",
            "text_noise",
        )
        for key in non_negative:
            value = getattr(self, key)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"synthetic.{key} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.temperature, int | float) and self.temperature > 0):
            raise ConfigError(f"synthetic.temperature must be > 0, got {self.temperature!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"synthetic.seed must be an integer >= 0, got {self.seed!r}")
        if self.min_interactions < 3:
            raise ConfigError(
                f"synthetic.min_interactions must be >= 3 (one per split), got "
                f"{self.min_interactions}"
            )
        hi = self.count_max
        if hi > self.n_items:
            raise ConfigError(f"synthetic.max_interactions ({hi}) exceeds n_items ({self.n_items})")
        if not self.min_interactions < self.interactions_per_user < hi:
            raise ConfigError(
                "synthetic.interactions_per_user must lie strictly between min_interactions "
                f"({self.min_interactions}) and max_interactions ({hi}), got "
                f"{self.interactions_per_user}; with max_interactions=None the maximum is "
                "n_items // 4"
            )

    @property
    def count_max(self) -> int:
        """The largest per-user count (``max_interactions``, or ``n_items // 4`` if None)."""
        return self.n_items // 4 if self.max_interactions is None else self.max_interactions

    def describe(self) -> str:
        """``synthetic(seed=…, n_users=…, …)`` with every knob, for ``InteractionData.source``."""
        fields = [f"seed={self.seed}"] + [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name != "seed"
        ]
        return f"synthetic({', '.join(fields)})"


# ----------------------------------------------------------------------------- counts


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _clipped_lognormal_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """E[clip(X, lo, hi)] for X = exp(N(mu, sigma²))."""
    if sigma == 0:
        return min(max(math.exp(mu), lo), hi)
    a, b = (math.log(lo) - mu) / sigma, (math.log(hi) - mu) / sigma
    # E[X; lo <= X <= hi] = exp(mu + sigma²/2) · (Φ(b - sigma) - Φ(a - sigma)).
    middle = math.exp(mu + 0.5 * sigma**2) * (_phi(b - sigma) - _phi(a - sigma))
    return lo * _phi(a) + middle + hi * (1.0 - _phi(b))


def _lognormal_location(target: float, sigma: float, lo: float, hi: float) -> float:
    """The mu for which the clipped log-normal has mean ``target`` (bisection; the mean is
    increasing in mu)."""
    left, right = math.log(lo) - 10.0 * sigma - 1.0, math.log(hi) + 10.0 * sigma + 1.0
    for _ in range(200):
        mid = 0.5 * (left + right)
        if _clipped_lognormal_mean(mid, sigma, lo, hi) < target:
            left = mid
        else:
            right = mid
    return 0.5 * (left + right)


def _draw_counts(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    lo, hi = cfg.min_interactions, cfg.count_max
    mu = _lognormal_location(cfg.interactions_per_user, cfg.count_sigma, lo, hi)
    raw = np.exp(mu + cfg.count_sigma * rng.standard_normal(cfg.n_users))
    # Stochastic rounding, floor(x + U), is unbiased; with integer bounds it commutes with the
    # clipping, so the mean count is exactly the clipped log-normal's mean.
    rounded = np.floor(np.clip(raw, lo, hi) + rng.random(cfg.n_users))
    return np.clip(rounded, lo, hi).astype(np.int64)


# ----------------------------------------------------------------------------- latents


def _mixture(
    centres: np.ndarray, n: int, spread: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n draws from the equal-weight Gaussian mixture: (group labels, points)."""
    groups = rng.integers(centres.shape[0], size=n)
    points = centres[groups] + spread * rng.standard_normal((n, centres.shape[1]))
    return groups, points


@dataclass(frozen=True)
class Latents:
    """The hidden parts of a planted world: group ids, shared s, CF-specific c, text-specific t
    (one row per user / item) and the item popularity."""

    centres: np.ndarray  # [n_groups, shared_dim]
    user_group: np.ndarray
    item_group: np.ndarray
    s_user: np.ndarray
    s_item: np.ndarray
    c_user: np.ndarray
    c_item: np.ndarray
    t_user: np.ndarray
    t_item: np.ndarray
    log_popularity: np.ndarray  # [n_items], -popularity_exponent · log(rank)


def _draw_latents(cfg: SyntheticConfig, rngs: dict[str, np.random.Generator]) -> Latents:
    centres = rngs["centres"].standard_normal((cfg.n_groups, cfg.shared_dim))
    parts = {}
    for side, n in (("user", cfg.n_users), ("item", cfg.n_items)):
        rng = rngs[f"{side}_latent"]
        group, s = _mixture(centres, n, cfg.group_spread, rng)
        c = rng.standard_normal((n, cfg.cf_dim))
        t = rng.standard_normal((n, cfg.text_dim))
        parts[side] = (group, s, c, t)
    rank = rngs["popularity"].permutation(cfg.n_items) + 1
    return Latents(
        centres=centres,
        user_group=parts["user"][0],
        item_group=parts["item"][0],
        s_user=parts["user"][1],
        s_item=parts["item"][1],
        c_user=parts["user"][2],
        c_item=parts["item"][2],
        t_user=parts["user"][3],
        t_item=parts["item"][3],
        log_popularity=-cfg.popularity_exponent * np.log(rank.astype(np.float64)),
    )


def _logits(cfg: SyntheticConfig, lat: Latents, users: slice) -> np.ndarray:
    """The interaction logits of a block of users against all items: [block, n_items]."""
    shared = lat.s_user[users] @ lat.s_item.T / math.sqrt(cfg.shared_dim)
    cf = lat.c_user[users] @ lat.c_item.T / math.sqrt(cfg.cf_dim)
    return (cfg.shared_weight * shared + cfg.cf_weight * cf) / cfg.temperature + lat.log_popularity


# ----------------------------------------------------------------------------- interactions


def _sample_interactions(
    cfg: SyntheticConfig, lat: Latents, counts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each user u, counts[u] distinct items ∝ exp(logit), without replacement."""
    users_out, items_out = [], []
    for start in range(0, cfg.n_users, _BLOCK):
        block = slice(start, min(start + _BLOCK, cfg.n_users))
        # Gumbel top-k: the k largest of (logit + Gumbel noise) are distributed exactly as k
        # successive draws without replacement with probabilities ∝ exp(logit).
        perturbed = _logits(cfg, lat, block) + rng.gumbel(size=(block.stop - start, cfg.n_items))
        k_max = int(counts[block].max())
        top = np.argpartition(-perturbed, k_max - 1, axis=1)[:, :k_max]
        # Order the k_max candidates of each row by perturbed score, then keep counts[u].
        top_scores = np.take_along_axis(perturbed, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        keep = np.arange(k_max)[None, :] < counts[block][:, None]
        rows = np.broadcast_to(np.arange(start, block.stop)[:, None], top.shape)
        users_out.append(rows[keep])
        items_out.append(top[keep])
    return np.concatenate(users_out), np.concatenate(items_out)


def _split_per_user(
    users: np.ndarray, items: np.ndarray, counts: np.ndarray, rng: np.random.Generator
) -> tuple[Split, Split, Split]:
    """Split each user's items at random 3:1:1; every split gets >= 1 per user."""
    n_users = counts.shape[0]
    # Validation and test counts: n/5 rounded up with probability frac(n/5), so that the
    # expected proportions are exactly 3:1:1; at least 1 each (counts >= 3 keeps train >= 1).
    fifth = counts / 5.0
    n_val = np.maximum(1, np.floor(fifth) + (rng.random(n_users) < fifth - np.floor(fifth)))
    n_test = np.maximum(1, np.floor(fifth) + (rng.random(n_users) < fifth - np.floor(fifth)))
    n_val, n_test = n_val.astype(np.int64), n_test.astype(np.int64)
    n_train = counts - n_val - n_test
    # Random order within each user (users stay grouped), then position → split.
    order = np.lexsort((rng.random(users.shape[0]), users))
    users, items = users[order], items[order]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(users.shape[0]) - np.repeat(first, counts)
    label = np.where(
        position < n_train[users], 0, np.where(position < (n_train + n_val)[users], 1, 2)
    )
    splits = []
    for which in range(3):
        u, i = users[label == which], items[label == which]
        row_major = np.lexsort((i, u))  # the order the loader gives real data
        splits.append(
            Split(users=u[row_major].astype(np.int32), items=i[row_major].astype(np.int32))
        )
    return splits[0], splits[1], splits[2]


# ----------------------------------------------------------------------------- text view


def _text_embeddings(
    cfg: SyntheticConfig, lat: Latents, rngs: dict[str, np.random.Generator]
) -> tuple[np.ndarray, np.ndarray]:
    """The "LLM embeddings": one random 2-layer tanh MLP of [s ‖ t] plus noise, users and items."""
    if cfg.text_signal:
        s_user, s_item = lat.s_user, lat.s_item
    else:
        # Control world: an independent draw from the same mixture (same centres), unrelated to
        # the interactions.
        decoy = rngs["decoy"]
        _, s_user = _mixture(lat.centres, cfg.n_users, cfg.group_spread, decoy)
        _, s_item = _mixture(lat.centres, cfg.n_items, cfg.group_spread, decoy)
    x = np.concatenate(
        [
            np.concatenate([s_user, s_item]) * cfg.text_shared_weight,
            np.concatenate([lat.t_user, lat.t_item]) * cfg.text_specific_weight,
        ],
        axis=1,
    )
    d_in, hidden = x.shape[1], cfg.llm_dim
    rng = rngs["text_map"]
    # Variance-preserving random weights: pre-activations have about the input's variance,
    # so tanh is clearly non-linear without saturating.
    w1 = rng.standard_normal((d_in, hidden)) / math.sqrt(d_in)
    b1 = 0.1 * rng.standard_normal(hidden)
    w2 = rng.standard_normal((hidden, cfg.llm_dim)) / math.sqrt(hidden)
    y = np.tanh(x @ w1 + b1) @ w2
    y = (y - y.mean()) / y.std()  # unit variance per entry, users and items together
    y = y + cfg.text_noise * rngs["text_noise"].standard_normal(y.shape)
    y = y.astype(np.float32)
    return y[: cfg.n_users], y[cfg.n_users :]


# ----------------------------------------------------------------------------- entry point


def _streams(cfg: SyntheticConfig) -> dict[str, np.random.Generator]:
    seeds = np.random.SeedSequence(cfg.seed).spawn(len(_STREAMS))
    return {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seeds, strict=True)}


def planted_latents(cfg: SyntheticConfig | None = None) -> Latents:
    """The hidden parts (groups, s, c, t, popularity) behind ``make_planted_world(cfg)``: the
    same draws, for probing what a trained model has recovered."""
    cfg = cfg if cfg is not None else SyntheticConfig()
    return _draw_latents(cfg, _streams(cfg))


def make_planted_world(cfg: SyntheticConfig | None = None) -> InteractionData:
    """Generate the planted world (see the module docstring for the model).

    Args:
      cfg: the knobs; default ``SyntheticConfig()``.

    Returns:
      ``InteractionData`` named ``"synthetic"`` with row-major train/val/test splits, float32
      user and item embeddings of width ``llm_dim``, and ``source = cfg.describe()``. The same
      config (seed included) always gives identical arrays.
    """
    cfg = cfg if cfg is not None else SyntheticConfig()
    rngs = _streams(cfg)
    lat = _draw_latents(cfg, rngs)
    counts = _draw_counts(cfg, rngs["counts"])
    users, items = _sample_interactions(cfg, lat, counts, rngs["sampling"])
    train, val, test = _split_per_user(users, items, counts, rngs["split"])
    user_emb, item_emb = _text_embeddings(cfg, lat, rngs)
    return InteractionData(
        name="synthetic",
        n_users=cfg.n_users,
        n_items=cfg.n_items,
        train=train,
        val=val,
        test=test,
        user_emb=user_emb,
        item_emb=item_emb,
        source=cfg.describe(),
    )
