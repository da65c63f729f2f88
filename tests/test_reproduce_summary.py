"""experiments.reproduce --summary: one block per backbone, ours beside RLMRec's Table 1."""

import json

from experiments import reproduce


def _run(seed, r20, best=10, epochs=26, wall=50.0):
    test = {m: 0.01 * (i + 1) for i, m in enumerate(reproduce.METRICS)}
    test["recall@20"] = r20
    return {"seed": seed, "test": test, "best_epoch": best, "epochs_run": epochs,
            "wall_seconds": wall}  # fmt: skip


def test_summary_rows_and_relative_difference(tmp_path):
    paper_r20 = reproduce.RLMREC_TABLE1[("yelp", "sgl")][2]
    (tmp_path / "reproduce_yelp_sgl.json").write_text(
        json.dumps([_run(1, paper_r20 * 1.02), _run(2, paper_r20 * 1.04, 13, 29, 70.0)])
    )
    dccf = {**_run(2023, 0.1), "provenance": {"commit": "abcdef0123456789"}}
    (tmp_path / "reproduce_yelp_dccf.json").write_text(json.dumps([dccf]))
    table = reproduce.main(["--summary", "--dataset", "yelp", "--out", str(tmp_path)])
    assert table == 0
    intro, blank, *lines = (tmp_path / "reproduce_yelp_summary.md").read_text().splitlines()
    # How it was made, and where each row's seeds came from (a seed without provenance says so).
    assert intro.startswith("Made by `python -m experiments.reproduce --summary --dataset yelp")
    assert "sgl: `reproduce_yelp_sgl.json` (commit not recorded)" in intro
    assert "dccf: `reproduce_yelp_dccf.json` (commit abcdef0)" in intro and blank == ""
    sgl = next(x for x in lines if x.startswith("| sgl |"))
    assert "ours, mean of seeds 1, 2" in sgl and "+3.0 %" in sgl and "| 10, 13 | 26, 29 |" in sgl
    assert lines[lines.index(sgl) + 1].startswith("| | RLMRec Table 1 | 0.0432 |")
    # Backbones in the paper's order, only those measured.
    assert [x.split("|")[1].strip() for x in lines[2:] if not x.startswith("| |")] == [
        "sgl",
        "dccf",
    ]
