"""experiments.benchmark --methods: each side's per-method epoch timing and the table, in-process
on a toy dataset (the subprocess per (side, method) would spend most of the time importing)."""

import math

import numpy as np
import pytest

from experiments import benchmark
from tests.toy import random_dataset

torch = pytest.importorskip("torch")

LLM_DIM = 8


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Tiny tensors: on a busy 2-core machine torch's thread hand-offs cost more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(tmp_path):
    return benchmark.parse_args(
        [
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--methods",
            *benchmark.METHODS,
            "--llm-dim",
            str(LLM_DIM),
            "--out",
            str(tmp_path),
        ]
    )


def _timing(side: str, method: str, seconds: float) -> dict:
    return {
        "side": side,
        "method": method,
        "version": "x",
        "device": "cpu",
        "threads": 1,
        "steps_per_epoch": 1,
        "epoch_seconds": [seconds],
        "first_epoch_seconds": seconds,
        "peak_rss_mb": 1.0,
    }


def test_standin_llm_is_seeded_and_shaped():
    data = random_dataset(n_users=20, n_items=18, per_user=4)
    a = benchmark.with_standin_llm(data, LLM_DIM)
    b = benchmark.with_standin_llm(data, LLM_DIM)
    assert a.user_emb.shape == (20, LLM_DIM) and a.item_emb.shape == (18, LLM_DIM)
    assert a.user_emb.dtype == np.float32 and a.item_emb.dtype == np.float32
    np.testing.assert_array_equal(a.user_emb, b.user_emb)
    np.testing.assert_array_equal(a.item_emb, b.item_emb)


@pytest.mark.slow  # 19 s: both sides of every method; the per-backbone test covers the machinery
def test_per_method_sides_and_table(tmp_path):
    args = _args(tmp_path)
    data = random_dataset(n_users=40, n_items=30, per_user=6, seed=3)
    results = {"jax": {}, "torch": {}}
    # Every reference model runs a real epoch (their per-step inputs and DaRec's reclustering).
    for method in benchmark.METHODS:
        results["torch"][method] = benchmark.run_torch_method(args, method, data)
    # JAX: the method with the most machinery (per-epoch clustering, pair subsets) compiles and
    # runs for real; the others' compilation is covered by the training tests.
    results["jax"]["darec"] = benchmark.run_jax_method(args, "darec", data)
    for side in ("jax", "torch"):
        for method, res in results[side].items():
            assert res["side"] == side and res["method"] == method
            assert len(res["epoch_seconds"]) == args.epochs
            assert all(math.isfinite(t) and t > 0 for t in res["epoch_seconds"])
            assert math.isfinite(res["first_epoch_seconds"]) and res["first_epoch_seconds"] > 0


def test_methods_table_ratios(tmp_path):
    args = _args(tmp_path)
    seconds = {
        "jax": {"none": 0.5, "rlmrec-con": 2.0, "rlmrec-gen": 1.0, "darec": 4.0},
        "torch": {"none": 2.0, "rlmrec-con": 4.0, "rlmrec-gen": 10.0, "darec": 8.0},
    }
    results = {
        side: {m: _timing(side, m, s) for m, s in per.items()} for side, per in seconds.items()
    }
    table = benchmark._methods_table(results, args)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| method |")
    cells = {r.split("|")[1].strip(): r.strip("|").split("|")[1:] for r in rows[1:]}
    assert list(cells) == list(benchmark.METHODS)
    # JAX s, JAX ÷ JAX none, reference s, reference ÷ reference none, JAX ÷ reference
    assert [float(c) for c in cells["none"]] == [0.5, 1.0, 2.0, 1.0, 0.25]
    assert [float(c) for c in cells["rlmrec-con"]] == [2.0, 4.0, 4.0, 2.0, 0.5]
    assert [float(c) for c in cells["rlmrec-gen"]] == [1.0, 2.0, 10.0, 5.0, 0.1]
    assert [float(c) for c in cells["darec"]] == [4.0, 8.0, 8.0, 4.0, 0.5]


def test_parse_args_defaults_keep_the_lightgcn_table():
    args = benchmark.parse_args([])
    assert args.methods is None and args.llm_dim == 1536 and args.side is None
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--side", "torch-rlmrec", "--side-method", "darec"])


def test_per_backbone_sides_and_table(tmp_path):
    args = benchmark.parse_args(
        ["--dataset", "synthetic", "--epochs", "1", "--evals", "1", "--out", str(tmp_path)]
    )
    # More nodes than AutoCF's preset seed count (100).
    data = random_dataset(n_users=80, n_items=60, per_user=6, seed=3)
    results = {"jax": {}, "torch": {}}
    # Every reference backbone trains a real epoch (AutoCF through its resampling trainer) and
    # evaluates; on the JAX side the two with per-step state or draws compile and run here.
    for backbone in benchmark.BACKBONES:
        results["torch"][backbone] = benchmark.run_torch(args, "vectorised", backbone, data)
    for backbone in ("sgl", "autocf"):
        results["jax"][backbone] = benchmark.run_jax(args, backbone, data)
    for side in ("jax", "torch"):
        for backbone, res in results[side].items():
            assert res["side"] == side and res["backbone"] == backbone
            for key in ("epoch_seconds", "eval_seconds"):
                assert len(res[key]) == 1 and all(math.isfinite(t) and t > 0 for t in res[key])
    table = benchmark._backbones_table(
        {"jax": results["jax"], "torch": {b: results["torch"][b] for b in results["jax"]}}, args
    )
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["sgl", "autocf"]
    for row, backbone in zip(rows[1:], ("sgl", "autocf"), strict=True):
        cells = [float(c) for c in row.strip("|").split("|")[1:7]]
        jx, tr = results["jax"][backbone], results["torch"][backbone]
        assert cells[0] == pytest.approx(jx["epoch_seconds"][0], abs=5e-4)
        assert cells[1] == pytest.approx(tr["epoch_seconds"][0], abs=5e-4)
        assert cells[3] == pytest.approx(jx["eval_seconds"][0], abs=5e-4)
        ratio = jx["epoch_seconds"][0] / tr["epoch_seconds"][0]
        assert cells[2] == pytest.approx(ratio, abs=5e-4)


def test_parse_args_backbones():
    args = benchmark.parse_args(["--backbones", "sgl", "autocf"])
    assert args.backbones == ["sgl", "autocf"] and args.methods is None
    for bad in (
        ["--backbones", "mf"],
        ["--backbones", "sgl", "--methods", "darec"],
        ["--side", "torch-rlmrec", "--side-backbone", "sgl"],
        ["--epochs", "0"],
    ):
        with pytest.raises(SystemExit):
            benchmark.parse_args(bad)


def test_alignment_flops_are_the_projections_counted():
    """RLMRec-Con's counted FLOPs per step (XLA's cost analysis) equal, within the element-wise
    work, what its matmuls must cost: the projection MLP over every user row and the batch's 2B
    item rows, forward (two layers) and backward (both weight gradients and the hidden
    gradient; the LLM inputs are constants), plus the three InfoNCE similarity blocks."""
    from darec_jax import config as config_lib
    from darec_jax.train.step import make_step_functions

    n, llm, batch = 300, 512, 128
    data = benchmark.with_standin_llm(random_dataset(n_users=n, n_items=n, per_user=8), llm)
    cfg = config_lib.build_config(
        "synthetic", "lightgcn", "rlmrec-con", {"train.batch_size": batch}
    )
    fns, arrays, state = make_step_functions(cfg, data)
    work = benchmark.alignment_work(fns, arrays, state.params, repeats=1)
    d = cfg.model.embedding_size
    hidden = (llm + d) // 2
    rows = n + 2 * batch  # all users, the batch's positives and negatives (2B < I)
    projections = 2 * rows * (2 * llm * hidden + 3 * hidden * d)
    similarities = 3 * 2 * d * (batch * n + 2 * batch * batch)  # forward + two gradients each
    expected = projections + similarities
    assert 0.95 * expected <= work["step_flops"] <= 1.3 * expected
    assert work["epoch_flops"] == pytest.approx(work["step_flops"] * fns.n_batches)
    assert work["epoch_state_flops"] == 0.0 and work["step_seconds"] > 0


def test_scaling_dataset_and_table(tmp_path):
    data = benchmark.scaling_dataset(20_000)
    nnz = data.train.users.shape[0]
    assert 9_000 < nnz <= 10_000 and data.n_users == data.n_items == 10_000 // 15
    pairs = zip(data.train.users.tolist(), data.train.items.tolist(), strict=True)
    assert len(set(pairs)) == nnz
    # One tiny size end to end in this process (the table's bookkeeping, not its timings).
    args = benchmark.parse_args(["--epochs", "1", "--evals", "1", "--out", str(tmp_path)])
    row = benchmark.run_scaling(args, 4_000)
    assert row["edges"] == 2 * row["interactions"] and row["steps_per_epoch"] == 1
    assert not row["epoch_projected"] and row["step_seconds"] > 0
    assert row["step_bytes_floor"] == benchmark.step_bytes_floor(
        row["edges"], 2 * row["users"], 32, 3
    )
    table = benchmark._scaling_table([row], args)
    cells = [line for line in table.splitlines() if line.startswith("| ")][-1].split("|")
    assert cells[1].strip() == f"{row['edges']:,}"
    floor_seconds = row["step_bytes_floor"] / (row["bandwidth_gbs"] * 1e9)
    assert float(cells[11]) == pytest.approx(row["step_seconds"] / floor_seconds, abs=0.051)


def test_every_saved_table_records_how_it_was_made(tmp_path):
    import json

    from experiments import benchmark

    benchmark._save(str(tmp_path), "speed_x", "| a |", {"jax": {}}, [("yelp", "gccf", "none")])
    md = (tmp_path / "speed_x.md").read_text()
    assert md.startswith("Made by `python -m experiments.benchmark") and "at commit `" in md
    saved = json.loads((tmp_path / "speed_x.json").read_text())
    made = saved["provenance"]
    assert {"commit", "command", "machine", "configs"} <= set(made)
    assert made["configs"]["yelp/gccf/none"]["model"]["backbone"] == "gccf"
    assert saved["results"] == {"jax": {}}
