"""Parameters in the reference's state_dict format (darec_jax.crosscheck.interop,
experiments.state_dict).

Round trips are exact for all 6 backbones × 4 methods and the names are the reference's; a
reference-format checkpoint written by the PyTorch reference evaluates to the same metrics with
our JAX code and with the reference; every bad input fails clearly.
"""

import pickle

import jax
import numpy as np
import pytest

from darec_jax import config as config_lib
from darec_jax.config import BACKBONES
from darec_jax.crosscheck.interop import (
    StateDictError,
    from_state_dict,
    load_state_dict,
    save_state_dict,
    state_dict_names,
    to_state_dict,
)
from darec_jax.methods import make_method
from darec_jax.train.step import init_model
from tests.toy import random_dataset, with_llm_embeddings

torch = pytest.importorskip("torch")
factory = pytest.importorskip("darec_jax.crosscheck.factory")
ref_sd = pytest.importorskip("darec_jax.reference.state_dict")

METHODS = ("none", "rlmrec-con", "rlmrec-gen", "darec")
LLM_DIM = 12
SMALL = {"model.autocf.seed_num": 3, "model.dccf.intent_num": 8, "darec.num_clusters": 4}


@pytest.fixture(scope="module")
def data():
    return with_llm_embeddings(random_dataset(n_users=30, n_items=24, per_user=5, seed=3), LLM_DIM)


def _params(cfg, data, seed):
    cfg = config_lib.apply_overrides(cfg, {"train.seed": seed})
    method = make_method(cfg, data.n_users, data.n_items)
    llm_dim = LLM_DIM if cfg.method != "none" else 0
    return init_model(cfg, data.n_users, data.n_items, method, llm_dim)[1]


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("method", METHODS)
def test_round_trips_are_exact_and_names_are_the_references(backbone, method, data):
    cfg = config_lib.build_config("synthetic", backbone, method, SMALL)
    params, other = _params(cfg, data, 1), _params(cfg, data, 2)
    sd = to_state_dict(cfg, params)
    model, _ = factory.build_reference(cfg, data)
    # The reference's parameters under RLMRec's names, with our shapes.
    theirs = ref_sd.rlmrec_state_dict(model)
    assert sorted(sd) == sorted(theirs) and list(sd) == state_dict_names(cfg, params)
    assert all(sd[k].shape == tuple(theirs[k].shape) for k in sd)
    # JAX -> state_dict -> JAX (into a differently initialised tree) is the identity.
    back = from_state_dict(cfg, sd, other)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    # ... and through the reference model and back.
    ref_sd.load_rlmrec_state_dict(model, sd)
    for k, v in ref_sd.rlmrec_state_dict(model).items():
        np.testing.assert_array_equal(v.numpy(), sd[k])


@pytest.mark.parametrize(
    ("backbone", "method"),
    [("gccf", "none"), ("lightgcn", "rlmrec-con"), ("dccf", "rlmrec-gen"), ("autocf", "darec")],
)
def test_reference_checkpoint_evaluates_the_same_in_both(backbone, method, tmp_path):
    from experiments.state_dict import evaluate_state_dict

    overrides = {
        **SMALL,
        "data.synthetic.n_users": 120,
        "data.synthetic.n_items": 90,
        "data.synthetic.llm_dim": 16,
    }
    cfg = config_lib.build_config("synthetic", backbone, method, overrides)
    from darec_jax.train.trainer import load_data

    model, _ = factory.build_reference(cfg, load_data(cfg))  # the reference's own init
    with torch.no_grad():  # move off the init so that every parameter matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    path = tmp_path / "ref.pt"
    torch.save(ref_sd.rlmrec_state_dict(model), path)
    result = evaluate_state_dict(cfg, path, "test", reference=True)
    assert set(result["jax"]) == {f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)}
    assert result["jax"]["recall@20"] > 0
    for key, value in result["reference"].items():
        assert result["jax"][key] == pytest.approx(value, abs=1e-6), key


def test_export_and_evaluate_a_trained_run(tmp_path):
    from darec_jax.train.trainer import train_and_evaluate
    from experiments import state_dict as cli

    overrides = {
        "train.epochs": "3",
        "data.synthetic.n_users": "150",
        "data.synthetic.n_items": "100",
        "train.batch_size": "256",
    }
    cfg = config_lib.build_config("synthetic", "gccf", "none", overrides)
    res = train_and_evaluate(cfg, tmp_path / "run", progress=False, log=lambda _: None, plots=False)
    for name in ("best.pt", "best.npz"):
        assert (
            cli.main(["export", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / name)])
            == 0
        )
        metrics = cli.evaluate_state_dict(cfg, tmp_path / name)["jax"]
        for key, value in res["test"].items():  # the best state's test metrics
            assert metrics[key] == pytest.approx(value, abs=1e-7), key
    assert (
        cli.main(
            [
                "export",
                "--workdir",
                str(tmp_path / "run"),
                "--checkpoint",
                "latest",
                "--out",
                str(tmp_path / "latest.npz"),
            ]
        )
        == 0
    )
    assert set(load_state_dict(tmp_path / "latest.npz")) == set(
        load_state_dict(tmp_path / "best.npz")
    )


def test_mismatches_and_bad_values_fail_clearly(data):
    cfg = config_lib.build_config("synthetic", "gccf", "rlmrec-gen", SMALL)
    params = _params(cfg, data, 1)
    sd = to_state_dict(cfg, params)
    missing = {k: v for k, v in sd.items() if k != "masker.mask_token"}
    with pytest.raises(StateDictError, match=r"missing \['masker.mask_token'\]"):
        from_state_dict(cfg, missing, params)
    with pytest.raises(StateDictError, match=r"unexpected \['extra'\]"):
        from_state_dict(cfg, {**sd, "extra": np.zeros(3)}, params)
    wrong = {**sd, "user_embeds": np.zeros((5, 32), np.float32)}
    with pytest.raises(StateDictError, match="'user_embeds' has shape"):
        from_state_dict(cfg, wrong, params)
    bad = {**sd, "gcnLayers.0.W": np.full((32, 32), np.nan, np.float32)}
    with pytest.raises(StateDictError, match="NaN or Inf"):
        from_state_dict(cfg, bad, params)
    # A state_dict of another backbone names what is missing.
    lightgcn = config_lib.build_config("synthetic", "lightgcn", "rlmrec-gen", SMALL)
    with pytest.raises(StateDictError, match="gcnLayers"):
        from_state_dict(cfg, to_state_dict(lightgcn, _params(lightgcn, data, 1)), params)


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_files_fail_clearly_and_run_nothing(tmp_path, capsys):
    with pytest.raises(StateDictError, match="no state_dict file"):
        load_state_dict(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(StateDictError, match="not a readable state_dict"):
        load_state_dict(tmp_path / "junk.pt")
    # A pickle that would call a function when unpickled: refused, and nothing runs.
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"user_embeds": _Boom()}))
    with pytest.raises(StateDictError, match="not a readable state_dict"):
        load_state_dict(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(StateDictError, match="does not hold a state_dict"):
        load_state_dict(tmp_path / "list.pt")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(StateDictError, match="expected a .pt"):
        load_state_dict(tmp_path / "w.txt")
    with pytest.raises(StateDictError, match="give a .pt"):
        save_state_dict(tmp_path / "out.json", {})
    np.savez(tmp_path / "obj.npz", a=np.array([object()], dtype=object))
    with pytest.raises(StateDictError, match="not a readable state_dict"):
        load_state_dict(tmp_path / "obj.npz")
    # The CLI reports the problem and exits non-zero.
    from experiments import state_dict as cli

    code = cli.main(
        [
            "evaluate",
            "--state-dict",
            str(tmp_path / "junk.pt"),
            "--dataset",
            "synthetic",
            "--backbone",
            "gccf",
            "--method",
            "none",
        ]
    )
    assert code == 2 and "not a readable state_dict" in capsys.readouterr().err
