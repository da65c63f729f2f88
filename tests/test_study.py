"""The planted study's wiring: worlds per seed, selection apart from evaluation, statistics."""

import json
import math

import numpy as np
import pytest

from darec_jax.data.synthetic import make_planted_world
from darec_jax.errors import DarecError
from experiments import study as st

CELL = st.Cell(cf_weight=1.5, text_weight=0.5)


def test_two_study_seeds_give_two_worlds_with_the_same_shapes():
    a = make_planted_world(st.world_config(CELL, 0))
    b = make_planted_world(st.world_config(CELL, 1))
    again = make_planted_world(st.world_config(CELL, 0))
    pairs = lambda d: set(zip(d.train.users.tolist(), d.train.items.tolist(), strict=True))  # noqa: E731
    assert pairs(a) != pairs(b)
    assert not np.allclose(a.user_emb, b.user_emb)
    assert pairs(a) == pairs(again)
    # Fixed per-user counts: every world has the same array shapes (one compile serves all).
    for split in ("train", "val", "test"):
        assert getattr(a, split).users.shape == getattr(b, split).users.shape
    assert a.train.users.shape[0] == 6 * st.BASE_WORLD["n_users"]


def test_the_cell_sets_the_world_knobs():
    w = st.world_config(st.Cell(3.0, 1.5), 7)
    assert (w.cf_weight, w.text_specific_weight, w.seed) == (3.0, 1.5, 7)


def test_tuning_and_evaluation_worlds_are_disjoint_and_model_seeds_are_apart():
    tune = st.tuning_seeds(50)
    ev = st.evaluation_seeds(200)
    assert not set(tune) & set(ev)
    assert all(st.is_tuning_seed(s) for s in tune) and not any(st.is_tuning_seed(s) for s in ev)
    models = [st.model_seed(s) for s in tune + ev]
    assert len(set(models)) == len(models)
    assert not set(models) & set(tune + ev)
    st.check_evaluation_seeds(ev)
    with pytest.raises(DarecError, match="tuning worlds"):
        st.check_evaluation_seeds([0, 1, tune[3]])


def test_search_gives_every_method_the_same_budget_preset_first():
    for method in st.ALIGNED:
        configs = st.search_configs(method, 8)
        assert len(configs) == 8 and configs[0] == {}
        assert len({json.dumps(c, sort_keys=True) for c in configs}) == 8
        assert configs == st.search_configs(method, 8)  # seeded
        assert all(set(c) <= set(st.SPACES[method]) for c in configs)
    assert st.search_configs("none", 8) == [{}]


class FakeRunner:
    """Stands in for training: validation favours configuration c1, test favours c0, so a
    selection that peeked at test metrics would pick c0."""

    def __init__(self):
        self.calls = []

    def run(self, kind, cell, world_seed, method, tag, overrides, probe=False):
        if kind != "tune":
            st.check_evaluation_seeds([world_seed])
        self.calls.append((kind, world_seed, method, tag))
        val = 0.30 + (0.05 if tag == "c1" else 0.0) + 0.001 * (world_seed % 7)
        test = 0.30 + (0.05 if tag == "c0" else 0.0) + 0.01 * (method == "darec")
        metrics = lambda x: {k: x for k in st.METRIC_KEYS}  # noqa: E731
        return {"world_seed": world_seed, "model_seed": st.model_seed(world_seed),
                "val": metrics(val), "test": metrics(test),
                "probe": {"r2_shared": 0.5, "r2_cf": 0.4}}  # fmt: skip


def test_tuning_chooses_by_validation_on_tuning_worlds_only():
    runner = FakeRunner()
    choice = st.tune(runner, [CELL, st.Cell(3.0, 3.0)], repeats=2, budget=3)
    for method in st.ALIGNED:
        assert choice["chosen"][method]["index"] == 1  # the validation-best, not c0
    assert {k for k, *_ in runner.calls} == {"tune"}
    seeds = {s for _, s, *_ in runner.calls}
    assert seeds == set(st.tuning_seeds(4))
    # The same number of configurations for every aligned method, on the same worlds.
    per_method = {m: {t for _, _, mm, t in runner.calls if mm == m} for m in st.ALIGNED}
    assert all(len(v) == 3 for v in per_method.values())

    runner.calls.clear()
    evaluation = st.evaluate(runner, [CELL], st.evaluation_seeds(3), choice)
    assert {k for k, *_ in runner.calls} == {"eval"}
    assert {s for _, s, *_ in runner.calls} == {0, 1, 2}
    row = st.summarise(evaluation)[CELL.label]
    assert row["darec_minus_con"]["mean"] == pytest.approx(0.01)
    assert row["world_seeds"] == [0, 1, 2]
    with pytest.raises(DarecError, match="tuning worlds"):
        st.evaluate(runner, [CELL], [0, st.TUNE_SEED_BASE], choice)


def test_evaluation_refuses_to_run_before_tuning(tmp_path):
    with pytest.raises(DarecError, match="tuning phase first"):
        st.load_choice(tmp_path)


def test_paired_interval_and_worlds_needed():
    a, b = [0.30, 0.32, 0.31, 0.35], [0.29, 0.30, 0.31, 0.32]
    d = st.paired_interval(a, b)
    diffs = np.subtract(a, b)
    assert d["mean"] == pytest.approx(diffs.mean())
    assert d["sd"] == pytest.approx(diffs.std(ddof=1))
    assert d["half_width"] == pytest.approx(3.182446 * diffs.std(ddof=1) / 2, rel=1e-5)
    assert st.worlds_needed(0.01) == math.ceil((1.96 * 0.01 / 0.005) ** 2) == 16
    assert st.worlds_needed(float("nan")) == -1


def test_diagnose_runs_each_ablation_on_evaluation_worlds_with_the_tuned_darec():
    from experiments.study_diagnose import ABLATIONS

    runner = FakeRunner()
    runner.inspect = lambda cell, seed, overrides: {"seed": seed, "overrides": overrides}
    choice = {
        "chosen": {
            "none": {"overrides": {}},
            "rlmrec-con": {"overrides": {"rlmrec.kd_weight": 0.5}},
            "darec": {"overrides": {"darec.lambda_gl": 0.3}},
        }
    }
    out = st.diagnose(runner, [CELL], [0, 1], choice)[CELL.label]
    assert {k for k, *_ in runner.calls} == {"eval", "ablation"}
    assert {s for _, s, *_ in runner.calls} == {0, 1}
    ablations = {t for k, _, m, t in runner.calls if k == "ablation"}
    assert ablations == {label.replace("=", "-") for label in ABLATIONS}
    assert out["inspect"][0]["overrides"] == {"darec.lambda_gl": 0.3}
    assert set(out["runs"]) == {"none", "rlmrec-con", "darec"} | {f"darec {a}" for a in ABLATIONS}
    text = "\n".join(st.diagnosis_report({CELL.label: {**out, "inspect": [{}, {}]}}))
    assert "lambda_gl=0" in text and "| darec |" in text
    with pytest.raises(DarecError, match="tuning worlds"):
        st.diagnose(runner, [CELL], [st.TUNE_SEED_BASE], choice)


def test_diagnosis_measures():
    from experiments.study_diagnose import effective_rank, mean_cos2, similarity_agreement

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 8))
    assert effective_rank(x) == pytest.approx(8, rel=0.1)
    assert effective_rank(np.outer(rng.standard_normal(400), rng.standard_normal(8))) == (
        pytest.approx(1.0, abs=1e-6)
    )
    assert mean_cos2(x, 3 * x) == pytest.approx(1.0)
    y = np.stack([x[:, 1], -x[:, 0]], 1)  # orthogonal to x[:, :2] row by row
    assert mean_cos2(x[:, :2], y) == pytest.approx(0.0, abs=1e-12)
    assert similarity_agreement(x, 2 * x, rows=100) == pytest.approx(1.0)
    assert abs(similarity_agreement(x, rng.standard_normal((400, 8)), rows=100)) < 0.1


def test_every_runs_resolved_config_is_stored_and_rebuilds_exactly(tmp_path):
    from darec_jax import config as config_lib

    def write(folder, method, overrides):
        cfg = config_lib.build_config("synthetic", "lightgcn", method, overrides)
        path = tmp_path / folder
        path.mkdir(parents=True)
        (path / "config.json").write_text(config_lib.to_json(cfg))
        (path / "study_result.json").write_text("{}")
        return json.loads(config_lib.to_json(cfg))

    written = {
        "eval/3x0.5/w17/none-tuned": write("eval/3x0.5/w17/none-tuned", "none", {}),
        "eval/3x0.5/w18/darec-tuned": write(
            "eval/3x0.5/w18/darec-tuned", "darec", {"train.seed": 7, "darec.lambda_gl": 0.5}
        ),
        "curve/3x0.5/w18/darec-x10": write(
            "curve/3x0.5/w18/darec-x10", "darec", {"train.seed": 7, "darec.lambda_gl": 5.0}
        ),
    }
    (tmp_path / "eval/3x0.5/w19/none-tuned").mkdir(parents=True)  # unfinished: no result
    configs = st.run_configs(tmp_path)
    assert sorted(configs["runs"]) == sorted(written)
    # Compact: each run stores only the fields where it differs from the common base.
    for folder, cfg in written.items():
        assert len(configs["runs"][folder]) < len(st._flatten(cfg)) // 2
    record = json.loads(st._configs_json({**configs, "made_by": {"commit": "x"}}))
    for folder, cfg in written.items():
        assert st.resolved_config(record, folder) == cfg
    with pytest.raises(DarecError, match="no resolved config"):
        st.resolved_config(record, "eval/3x0.5/w19/none-tuned")
