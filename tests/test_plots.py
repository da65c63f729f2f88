"""Figures of a run: training curves for every run, PCA maps of DaRec's four spaces coloured by
preference cluster, listed in results.json; a clear note without matplotlib."""

import json

import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax import plots
from darec_jax.train.trainer import train_and_evaluate

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"
TINY = {
    "train.epochs": "4",
    "data.synthetic.n_users": "150",
    "data.synthetic.n_items": "100",
    "train.batch_size": "256",
    "darec.num_clusters": "4",
}


@pytest.fixture(scope="module")
def darec_run(tmp_path_factory):
    cfg = config_lib.build_config("synthetic", "lightgcn", "darec", TINY)
    workdir = tmp_path_factory.mktemp("darec")
    return workdir, train_and_evaluate(cfg, workdir, progress=False, log=lambda _: None)


def test_a_darec_run_draws_and_lists_its_figures(darec_run):
    workdir, results = darec_run
    assert results["plots"] == ["training_curves.png", "darec_spaces.png"]
    assert json.loads((workdir / "results.json").read_text())["plots"] == results["plots"]
    for name in results["plots"]:
        data = (workdir / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


def test_redraw_command(darec_run, tmp_path, capsys):
    from experiments import plots as cli

    workdir, _ = darec_run
    (workdir / "darec_spaces.png").unlink()
    assert cli.main(["--workdir", str(workdir)]) == 0
    assert (workdir / "darec_spaces.png").read_bytes().startswith(PNG)
    assert cli.main(["--workdir", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_darec_spaces_and_clusters():
    import jax

    from darec_jax.train.step import make_step_functions
    from darec_jax.train.trainer import load_data

    cfg = config_lib.build_config("synthetic", "gccf", "darec", TINY)
    fns, arrays, state = make_step_functions(cfg, load_data(cfg))
    spaces = plots.darec_spaces(fns, state.params, arrays, jax.random.key(0))
    for side, n in (("user", 150), ("item", 100)):
        views, assign = spaces[side]
        assert list(views) == ["CF-specific", "CF-shared", "LLM-specific", "LLM-shared"]
        assert all(v.shape == (n, 96) for v in views.values())  # GCCF: 3 × 32 wide
        assert assign.shape == (n,) and set(np.unique(assign)) <= set(range(4))
        assert len(np.unique(assign)) > 1


def test_pca_2d_finds_the_principal_axes():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((500, 2)) * np.array([5.0, 2.0])  # variances 25, 4
    basis, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    x = z @ basis[:2] + 0.01 * rng.standard_normal((500, 6)) + 3.0
    xy = plots.pca_2d(x)
    assert xy.shape == (500, 2)
    var = xy.var(axis=0)
    assert var[0] == pytest.approx(z[:, 0].var(), rel=0.05)
    assert var[1] == pytest.approx(z[:, 1].var(), rel=0.05)


def test_training_curves_from_a_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [
        {"epoch": e, "train": {"bpr": 0.5 / (e + 1), "reg": 1e-3, "loss": 0.5 / (e + 1) + 1e-3}}
        for e in range(5)
    ]
    rows[0]["val"] = {"recall@20": 0.1}
    rows[3]["val"] = {"recall@20": 0.2}
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = plots.training_curves(log, tmp_path / "c.png")
    assert out.read_bytes().startswith(PNG)
    log.write_text("")
    with pytest.raises(ValueError, match="no epochs"):
        plots.training_curves(log, tmp_path / "d.png")


def test_without_matplotlib_the_run_says_so(tmp_path, monkeypatch):
    def missing():
        raise ImportError("plots need matplotlib: pip install matplotlib")

    monkeypatch.setattr(plots, "_pyplot", missing)
    cfg = config_lib.build_config("synthetic", "lightgcn", "none", {**TINY, "train.epochs": "1"})
    notes = []
    results = train_and_evaluate(cfg, tmp_path / "run", progress=False, log=notes.append)
    assert results["plots"] == [] and results["status"] == "finished"
    assert any("pip install matplotlib" in n for n in notes)
