"""Config presets and overrides, and the command line (in-process, no subprocess)."""

import json

import pytest

from darec_jax import config as config_lib
from darec_jax.cli import main_run
from darec_jax.errors import ConfigError


def test_presets_and_overrides():
    cfg = config_lib.build_config("steam", "lightgcn", "none")
    assert cfg.model.layer_num == 2 and cfg.model.reg_weight == 1e-6  # docs/backbones.md §2.2
    cfg = config_lib.build_config(
        "yelp",
        "lightgcn",
        "none",
        {
            "train.lr": "5e-4",
            "eval.ks": "1,2",
            "train.criterion": "ndcg@2",
            "data.synthetic.n_users": "10",
        },
    )
    assert cfg.train.lr == 5e-4 and cfg.eval.ks == (1, 2)
    assert cfg.data.synthetic.n_users == 10 and cfg.model.layer_num == 3
    assert config_lib.from_dict(json.loads(config_lib.to_json(cfg))) == cfg


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"dataset": "movielens"}, "valid: amazon, yelp, steam, synthetic"),
        ({"backbone": "ngcf"}, "valid: lightgcn, gccf"),
        ({"method": "kd"}, "valid: none, rlmrec-con"),
        ({"overrides": {"train.lrr": "1"}}, "valid keys: .*train.lr"),
        ({"overrides": {"train.epochs": "many"}}, "bad value 'many' for train.epochs"),
        ({"overrides": {"model.lightgcn.keep_rate": "1.5"}}, "keep_rate"),
        ({"overrides": {"train.criterion": "hr@20"}}, "recall@20"),
    ],
)
def test_bad_names_and_values_are_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        config_lib.build_config(**kwargs)


def test_cli_errors_exit_2_with_message(capsys):
    assert main_run(["--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main_run(["--set", "no_equals_sign"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main_run(["--backbone", "ngcf"]) == 2
    assert "valid: lightgcn, gccf, sgl, simgcl, dccf, autocf" in capsys.readouterr().err
    assert main_run(["--method", "darec", "--set", "darec.score_on=both"]) == 2
    assert "valid: backbone, disentangled" in capsys.readouterr().err
    assert main_run(["--method", "darec", "--set", "darec.recluster_every=0"]) == 2
    assert "recluster_every must be >= 1" in capsys.readouterr().err


def test_cli_list_keys(capsys):
    assert main_run(["--list-keys"]) == 0
    keys = capsys.readouterr().out.split()
    assert "train.lr" in keys and "data.synthetic.seed" in keys


def test_cli_tiny_synthetic_run_and_resume_refusal(tmp_path, capsys):
    args = [
        "--dataset",
        "synthetic",
        "--workdir",
        str(tmp_path / "w"),
        "--no-progress",
        "--seed",
        "3",
        "--set",
        "data.synthetic.n_users=120",
        "--set",
        "data.synthetic.n_items=90",
        "--set",
        "train.epochs=4",
    ]
    assert main_run(args) == 0
    out = capsys.readouterr().out
    assert "[epoch    0]" in out and "test recall@5" in out
    results = json.loads((tmp_path / "w" / "results.json").read_text())
    assert results["seed"] == 3 and results["data"]["n_users"] == 120
    saved = json.loads((tmp_path / "w" / "config.json").read_text())
    assert saved["data"]["synthetic"]["n_items"] == 90
    # Running again into the same workdir without --resume is refused and loses nothing.
    assert main_run(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert json.loads((tmp_path / "w" / "results.json").read_text()) == results
    assert results["method"] == "darec" and results["backbone"] == "lightgcn"  # the defaults


def test_cli_unwritable_workdir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main_run(["--workdir", str(blocker / "run"), "--no-progress"]) == 2
    assert "cannot write to the work directory" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"


def test_cli_corrupt_data_folder_is_a_clear_error(tmp_path, capsys):
    for name in ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl"):
        (tmp_path / name).write_bytes(b"\x80\x04not a pickle")
    args = ["--dataset", "yelp", "--data-dir", str(tmp_path), "--workdir", str(tmp_path / "w")]
    assert main_run(args) == 2
    assert "trn_mat.pkl" in capsys.readouterr().err
