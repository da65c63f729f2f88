"""python -m experiments.equivalence: the user-facing comparison with the PyTorch reference.

It passes for every backbone × method on a small planted world over two steps (AutoCF: a
resample, then a step that reuses it; three steps, with the next resample, in
test_checks_cover_every_quantity); the negative controls fail it (every kind of check, for every
backbone) when a reference weight that reaches predictions is perturbed on purpose; a parameter
difference caused by a gradient difference is not absorbed by Adam's allowance; bad input exits 2.
"""

import json

import numpy as np
import pytest

from darec_jax import config as config_lib

pytest.importorskip("torch")
harness = pytest.importorskip("darec_jax.crosscheck.harness")
from experiments import equivalence  # noqa: E402

SMALL = [
    "--set", "data.synthetic.n_users=80",
    "--set", "data.synthetic.n_items=60",
    "--set", "data.synthetic.llm_dim=16",
    "--set", "train.batch_size=64",
    "--set", "model.dccf.intent_num=8",
    "--set", "model.autocf.fix_steps=2",
    "--set", "darec.num_clusters=4",
    "--set", "darec.pair_sample=16",
    # SimGCL-Gen's Yelp mask ratio (0.01) masks a single node of this small world, whose recon
    # term is then log(1 − ~1e-9): a float32 rounding residue, not a comparable number.
    "--set", "rlmrec.mask_ratio=0.1",
    # At Yelp's τ = 0.1 SGL's two dropout views of this small world nearly coincide and its
    # InfoNCE is logsumexp(s/τ) − s⁺/τ ≈ 10.04 − 10: a cancellation that leaves ~1e-5 relative
    # float32 rounding in a term of ~8e-5 (measured 1.7e-5 at one step). At 0.2 the term is
    # ~2e-3 and both sides agree to ~2e-7.
    "--set", "model.sgl.cl_temperature=0.2",
]  # fmt: skip


@pytest.mark.parametrize("backbone", config_lib.BACKBONES)
def test_every_method_passes(backbone, capsys, tmp_path):
    summary = tmp_path / "summary.md"
    code = equivalence.main(
        ["--backbone", backbone, "--method", "all", "--steps", "2", *SMALL,
         "--summary", str(summary)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("PASS") == len(config_lib.METHODS) and "**NO**" not in out
    for kind in ("term", "grad", "param", "embedding", "metric"):
        assert f"| {kind} |" in out
    rows = [r for r in summary.read_text().splitlines() if r.startswith(f"| {backbone} |")]
    assert [r.split(" | ")[1] for r in rows] == list(config_lib.METHODS)
    for row in rows:  # PASS, then five errors below the tolerances they passed
        cells = row.strip("| ").split(" | ")
        assert cells[2] == "PASS" and all(0 <= float(c) < 1e-4 for c in cells[3:]), row
    assert "at commit `" in summary.read_text()
    record = json.loads(summary.with_suffix(".json").read_text())
    assert [c["method"] for c in record["combinations"]] == list(config_lib.METHODS)
    for combo in record["combinations"]:  # the resolved config rebuilds, and holds the overrides
        cfg = config_lib.from_dict(combo["config"])
        got = (cfg.model.backbone, cfg.method, cfg.train.batch_size)
        assert got == (backbone, combo["method"], 64)
        assert combo["ok"] and all(c["ok"] for c in combo["checks"]) and combo["checks"]


def test_checks_cover_every_quantity():
    cfg = config_lib.build_config(
        "synthetic",
        "autocf",
        "darec",
        config_lib.parse_set_args([s for s in SMALL if s != "--set"]),
    )
    from darec_jax.train.trainer import load_data

    checks = harness.compare_training(cfg, load_data(cfg), steps=3)
    names = {(c.kind, c.name) for c in checks if c.step == 1}
    assert {
        ("term", t) for t in ("rec", "reg", "cl", "orth", "global", "local", "infomax")
    } <= names
    assert ("grad", "gtLayers.0.qTrans") in names and ("param", "llm_shared.2.bias") in names
    assert all(c.ok for c in checks) and {c.step for c in checks} == {1, 2, 3}
    # The terms are real numbers, not zeros that would compare trivially (λ_un is 0 by default;
    # infomax is an exact 0 on step 2, which reuses step 1's graphs).
    terms = {(c.step, c.name): c.scale for c in checks if c.kind == "term"}
    assert all(v > 0 for (step, name), v in terms.items() if step == 1 and name != "unif")
    assert terms[(2, "infomax")] == 0 and terms[(3, "infomax")] > 0


@pytest.mark.parametrize("backbone", config_lib.BACKBONES)
def test_negative_control_a_perturbed_embedding_fails_every_kind_of_check(backbone):
    """The user embedding table reaches every prediction: shifted by 0.05 in the reference (and
    the trajectories left to run free, so the shift is not copied away), the loss terms, the
    gradients, the parameters, the scoring embeddings and the validation metrics must all fail."""
    from darec_jax.crosscheck.interop import to_state_dict
    from darec_jax.train.trainer import load_data

    cfg = config_lib.build_config(
        "synthetic", backbone, "none", config_lib.parse_set_args([s for s in SMALL if s != "--set"])
    )
    data = load_data(cfg)
    from darec_jax.train.step import make_step_functions

    names = to_state_dict(cfg, make_step_functions(cfg, data)[2].params)
    (table,) = [n for n in names if n.startswith("user_embeds")]
    checks = harness.compare_training(cfg, data, steps=1, perturb={table: 0.05}, resync=False)
    failed = {c.kind for c in checks if not c.ok}
    assert failed == {"term", "grad", "param", "embedding", "metric"}, failed
    assert not [c for c in checks if c.kind == "param" and c.name == table][0].ok


def test_a_perturbed_weight_fails_with_a_clear_table(capsys, tmp_path):
    summary = tmp_path / "control.md"
    code = equivalence.main(
        ["--backbone", "lightgcn", "--method", "rlmrec-con", "--steps", "1", "--no-resync",
         "--perturb", "user_embeds=0.05", *SMALL, "--summary", str(summary)]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 1
    assert "FAIL" in out.out and "| param | user_embeds |" in out.out and "**NO**" in out.out
    assert "| metric | val recall@20 |" in out.out
    assert "above tolerance: synthetic · lightgcn · rlmrec-con" in out.err
    # One combination: the written summary carries the failing per-check table and exit status.
    text = summary.read_text()
    assert "exit status 1" in text and "| 1 | param | user_embeds |" in text and "**NO**" in text
    record = json.loads(summary.with_suffix(".json").read_text())
    assert record["perturb"] == {"user_embeds": 0.05} and record["resync"] is False
    assert not record["combinations"][0]["ok"]


def test_a_gradient_caused_parameter_difference_fails():
    """Adam's allowance covers only entries whose gradient the gradient check cannot resolve."""
    ref_grad = np.array([1.0, 0.5, -0.2, 1e-9])
    # |Adam(g_ours) − Adam(g_ref)|: large on entry 0 (its gradient differs by 1 %), large on the
    # noise-level entry 3 too (Adam normalises a 1e-9 gradient to a full step).
    amplification = np.array([1e-5, 0.0, 0.0, 1e-3])
    slack = harness.adam_allowance(amplification, ref_grad, rtol=1e-5)
    assert slack.tolist() == [0.0, 0.0, 0.0, 1e-3]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backbone", "mf"], "unknown backbone"),
        (["--perturb", "user_embeds"], "NAME=VALUE"),
        (["--perturb", "nope=1"], "no parameter 'nope'"),
        (["--steps", "0"], "--steps must be"),
    ],
)
def test_bad_input_exits_2(argv, message, capsys):
    assert equivalence.main([*argv, *SMALL]) == 2
    assert message in capsys.readouterr().err
