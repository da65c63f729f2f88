"""The planted benchmark's probe: hidden parts of the world and the held-out ridge R²."""

import dataclasses

import numpy as np

from darec_jax.data.synthetic import SyntheticConfig, make_planted_world, planted_latents
from experiments.planted import _world_overrides, ridge_r2


def test_ridge_r2_recovers_linear_maps_and_rejects_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    w = rng.normal(size=(8, 3))
    assert ridge_r2(x, x @ w) > 0.999
    assert ridge_r2(x, x @ w + rng.normal(size=(2000, 3))) < ridge_r2(x, x @ w)
    assert abs(ridge_r2(x, rng.normal(size=(2000, 3)))) < 0.02


def test_latents_are_the_worlds_own():
    cfg = SyntheticConfig(n_users=300, n_items=200, seed=4)
    lat = planted_latents(cfg)
    assert lat.s_user.shape == (300, cfg.shared_dim) and lat.c_item.shape == (200, cfg.cf_dim)
    again = planted_latents(cfg)
    np.testing.assert_array_equal(lat.s_item, again.s_item)
    # The text view is a function of [s ‖ t]: s is far more recoverable from it than c.
    data = make_planted_world(cfg)
    assert ridge_r2(data.user_emb, lat.s_user) > 0.5
    assert ridge_r2(data.user_emb, lat.c_user) < 0.1
    other = planted_latents(dataclasses.replace(cfg, seed=5))
    assert not np.array_equal(other.s_user, lat.s_user)


def test_world_overrides_are_typed():
    assert _world_overrides(["cf_dim=4", "cf_weight=2", "text_signal=false"]) == {
        "cf_dim": 4,
        "cf_weight": 2.0,
        "text_signal": False,
    }
