"""experiments.sweep: the grid runs, skips finished cells, resumes unfinished ones, and writes
the paper-style table with means ± std, bold bests and paired t-tests."""

import json

import pytest
from scipy import stats

from darec_jax import config as config_lib
from experiments import sweep

TINY = [
    "--set", "train.epochs=2",
    "--set", "data.synthetic.n_users=120",
    "--set", "data.synthetic.n_items=90",
    "--set", "train.batch_size=256",
    "--set", "darec.num_clusters=4",
]  # fmt: skip


def _metrics(base: float) -> dict[str, float]:
    return {m: base + 0.01 * i for i, m in enumerate(sweep.METRICS)}


def test_table_means_bold_and_paired_t_tests():
    # DaRec beats both baselines on every seed by a varying margin; RLMRec-Con ties none.
    none = {1: _metrics(0.10), 2: _metrics(0.12), 3: _metrics(0.11)}
    con = {1: _metrics(0.101), 2: _metrics(0.119), 3: _metrics(0.112)}
    darec = {1: _metrics(0.13), 2: _metrics(0.16), 3: _metrics(0.15)}
    results = {("gccf", "none"): none, ("gccf", "rlmrec-con"): con, ("gccf", "darec"): darec}
    main, p_table, rows = sweep.tables(results, ["gccf"], ["none", "rlmrec-con", "darec"])
    lines = main.splitlines()
    darec_row = next(line for line in lines if "| darec |" in line)
    # mean ± std of R@5 over the 3 seeds, bold (best) and starred (p < 0.05 against both).
    assert "**0.1467 ± 0.0153*" in darec_row
    none_row = next(line for line in lines if "| none |" in line)
    assert "0.1100 ± 0.0100" in none_row and "**" not in none_row
    expected = stats.ttest_rel([0.13, 0.16, 0.15], [0.10, 0.12, 0.11]).pvalue
    assert f"+ {expected:.3f}*" in next(x for x in p_table.splitlines() if "| none |" in x)
    assert rows[0][:3] == ["backbone", "method", "seeds"] and len(rows) == 4
    assert float(rows[3][3]) == pytest.approx(0.146667, abs=1e-6)


def test_no_star_without_significance_and_nan_with_one_seed():
    results = {
        ("lightgcn", "none"): {1: _metrics(0.10), 2: _metrics(0.12)},
        ("lightgcn", "darec"): {1: _metrics(0.13), 2: _metrics(0.11)},  # mixed signs
    }
    main, p_table, _ = sweep.tables(results, ["lightgcn"], ["none", "darec"])
    assert "*" not in main.replace("**", "")
    one = {("lightgcn", "none"): {1: _metrics(0.1)}, ("lightgcn", "darec"): {1: _metrics(0.2)}}
    _, p_table, _ = sweep.tables(one, ["lightgcn"], ["none", "darec"])
    assert "n/a" in p_table


@pytest.mark.slow  # 40 s of training; the default suite covers the tables and world wiring
def test_grid_runs_skips_and_resumes(tmp_path, capsys):
    from darec_jax.train.trainer import load_data, train_and_evaluate

    args = ["--backbones", "lightgcn", "--methods", "none", "darec", "--seeds", "1", "2",
            "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *TINY]  # fmt: skip
    # One cell paused after its first epoch: the sweep must resume it, not restart it.
    cfg = config_lib.build_config(
        "synthetic",
        "lightgcn",
        "darec",
        {
            **config_lib.parse_set_args([s for s in TINY if s != "--set"]),
            "train.seed": 2,
            "data.synthetic.seed": 2,
        },
    )
    paused = sweep.cell_dir(tmp_path / "runs", "synthetic", "lightgcn", "darec", 2)
    status = train_and_evaluate(
        cfg, paused, data=load_data(cfg), progress=False, log=lambda _: None,
        max_epochs_this_process=1, plots=False
    )  # fmt: skip
    assert status["status"] == "paused"
    assert sweep.main(args) == 0
    out = capsys.readouterr().out
    assert "4 cells, 0 finished, 4 to run" in out
    assert "resuming synthetic · lightgcn · darec · 2" in out
    assert "running synthetic · lightgcn · none · 1" in out
    lines = [json.loads(x) for x in (paused / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]  # epoch 0 kept, epoch 1 added
    table = (tmp_path / "out" / "sweep_synthetic.md").read_text()
    assert "| lightgcn | none | 2 |" in table and "| lightgcn | darec | 2 |" in table
    assert (tmp_path / "out" / "sweep_synthetic.csv").read_text().count("\n") == 3
    assert "synthetic seeds 1, 2; one world per seed" in table and "model seeds 1, 2" in table
    # Everything finished: a second call runs nothing.
    assert sweep.main(args) == 0
    assert "4 cells, 4 finished, 0 to run" in capsys.readouterr().out


def test_each_seed_is_its_own_world_unless_one_is_fixed():
    from darec_jax.train.trainer import load_data

    tiny = config_lib.parse_set_args([s for s in TINY if s != "--set"])
    cfgs = [
        config_lib.build_config(
            "synthetic", "lightgcn", "none", sweep.cell_overrides("synthetic", s, tiny)
        )
        for s in (1, 2)
    ]
    assert [c.data.synthetic.seed for c in cfgs] == [1, 2]
    assert [c.train.seed for c in cfgs] == [1, 2]
    a, b = (load_data(c) for c in cfgs)
    assert set(zip(a.train.users.tolist(), a.train.items.tolist(), strict=True)) != set(
        zip(b.train.users.tolist(), b.train.items.tolist(), strict=True)
    )
    fixed = sweep.cell_overrides("synthetic", 5, {**tiny, "data.synthetic.seed": "0"})
    assert fixed["data.synthetic.seed"] == "0" and fixed["train.seed"] == "5"
    assert "data.synthetic.seed" not in sweep.cell_overrides("yelp", 5, {})


def test_bad_names_exit_2(capsys):
    assert sweep.main(["--methods", "nope", "--tables-only"]) == 2
    assert "unknown method nope" in capsys.readouterr().err


def test_tables_record_provenance_every_cells_config_and_the_figures_source(tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "out"
    for method, base in (("none", 0.10), ("darec", 0.13)):
        for seed in (1, 2):
            cfg = config_lib.build_config(
                "synthetic", "lightgcn", method, {"train.seed": seed, "data.synthetic.seed": seed}
            )
            cell = sweep.cell_dir(runs, "synthetic", "lightgcn", method, seed)
            cell.mkdir(parents=True)
            (cell / "config.json").write_text(config_lib.to_json(cfg))
            metrics = _metrics(base + 0.01 * seed)
            (cell / "results.json").write_text(
                json.dumps(
                    {
                        "status": "finished",
                        "best_epoch": 3,
                        "epochs_run": 5,
                        "val": metrics,
                        "test": metrics,
                    }
                )  # fmt: skip
            )
    cell = sweep.cell_dir(runs, "synthetic", "lightgcn", "darec", 1)
    (cell / "training_curves.png").write_bytes(b"curves")
    (cell / "darec_spaces.png").write_bytes(b"spaces")
    argv = ["--tables-only", "--backbones", "lightgcn", "--methods", "none", "darec",
            "--seeds", "1", "2", "--workdir", str(runs), "--out", str(out),
            "--figures", "lightgcn", "darec", "1"]  # fmt: skip
    assert sweep.main(argv) == 0
    capsys.readouterr()
    text = (out / "sweep_synthetic.md").read_text()
    assert text.startswith("Made by `python -m experiments.sweep --tables-only")
    assert "at commit `" in text
    assert "cell `synthetic-lightgcn-darec-seed1`" in text
    assert (out / "lightgcn_darec_seed1_spaces.png").read_bytes() == b"spaces"
    record = json.loads((out / "sweep_synthetic.json").read_text())
    assert sorted(record["cells"]) == [
        "synthetic-lightgcn-darec-seed1", "synthetic-lightgcn-darec-seed2",
        "synthetic-lightgcn-none-seed1", "synthetic-lightgcn-none-seed2",
    ]  # fmt: skip
    two = record["cells"]["synthetic-lightgcn-darec-seed2"]
    assert two["config"]["train"]["seed"] == 2 and two["test"]["recall@5"] == pytest.approx(0.15)
    # A cell without figures: a clear error, exit 2.
    argv[-1] = "2"
    assert sweep.main(argv) == 2
    assert "has no figures" in capsys.readouterr().err
