"""python -m experiments.equivalence: the user-facing comparison with the PyTorch reference.

It passes for every backbone × method on a small planted world over steps that include an
AutoCF resample and a reuse, fails (exit 1, a **NO** row naming the quantity) when a reference
weight is perturbed on purpose, and rejects bad input with exit 2.
"""

import pytest

from darec_jax import config as config_lib

pytest.importorskip("torch")
harness = pytest.importorskip("darec_jax.reference.harness")
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
        ["--backbone", backbone, "--method", "all", "--steps", "3", *SMALL,
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


def test_a_perturbed_weight_fails_with_a_clear_table(capsys):
    code = equivalence.main(
        ["--backbone", "gccf", "--method", "rlmrec-con", "--steps", "1",
         "--perturb", "gcnLayers.0.W=1e-3", *SMALL]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 1
    assert "FAIL" in out.out and "| param | gcnLayers.0.W |" in out.out and "**NO**" in out.out
    assert "above tolerance: synthetic · gccf · rlmrec-con" in out.err


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
