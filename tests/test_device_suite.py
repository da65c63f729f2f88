"""The device suite's own logic (its full CPU dry run is a CI step: see .ci/run)."""

import json

import pytest

from experiments import device_suite as ds


def test_memory_model_matches_the_documented_bytes_per_edge():
    # 15 interactions per user, as many items as users: N = E / 15 nodes. Per directed edge:
    # 1,536 B per node / 15 + 28 + 36 / 2 + 2 · 4 · 32 = 404.4 B; 148.4 B without messages.
    edges = 15 * 10**6
    m = ds.memory_model_bytes(edges, edges // 15)
    assert m["total"] / edges == pytest.approx(404.4)
    assert m["without_messages"] / edges == pytest.approx(148.4)
    assert m["total"] == m["nodes"] + m["edges"] + m["interactions"] + m["messages"]


def test_markdown_shows_failures_and_errors():
    report = {
        "sections": {
            "correctness": {
                "status": "check failed",
                "seconds": 1.0,
                "result": {
                    "ok": False,
                    "rows": [
                        {"backbone": "gccf", "method": "none", "ok": False,
                         "failed": ["grad user_embedding"], "worst": {"grad": 0.5},
                         "seconds": 2.0},
                    ],
                },
            },
            "speed": {"status": "error", "seconds": 0.5, "error": "Traceback ...\nBoom: no"},
        }
    }  # fmt: skip
    text = ds.markdown(report)
    assert "| correctness | check failed |" in text
    assert "FAIL: grad user_embedding" in text
    assert "**speed failed:**" in text and "Boom: no" in text


def test_missing_data_dir_is_refused(tmp_path, capsys):
    assert ds.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "trn_mat.pkl" in capsys.readouterr().err


def test_environment_section_writes_the_report_with_provenance(tmp_path):
    out = tmp_path / "report"
    argv = ["--dry-run", "--sections", "environment", "--out", str(out), "--commit", "abc123"]
    assert ds.main(argv) == 0
    report = json.loads((out / "device_suite.json").read_text())
    env = report["sections"]["environment"]["result"]
    assert env["provenance"]["commit"] == "abc123"
    assert env["backend"] == "cpu" and env["dry_run"] is True
    assert "jax" in env["versions"]
    assert "commit `abc123`" in (out / "device_suite.md").read_text()


def test_scale_skips_sizes_that_do_not_fit_the_budget(monkeypatch, tmp_path):
    args = ds.parse_args(["--dry-run", "--budget", "0", "--out", str(tmp_path)])
    result = ds.section_scale(ds.Context(args))
    assert result["rows"] == []
    assert [s["edges"] for s in result["skipped"]] == list(ds.DRY.scale_edges)


def test_scale_projection_scales_the_build_and_steps_not_the_start_up():
    row = {"edges": 10**6, "process_seconds": 20.0, "setup_seconds": 2.0,
           "timed_steps": 8, "step_seconds": 0.01}  # fmt: skip
    # fixed 20 − 2 − 0.32 = 17.68 s; build and steps 2.32 s, times 100.
    assert ds.projected_seconds(row, 10**8) == pytest.approx(17.68 + 232.0)
