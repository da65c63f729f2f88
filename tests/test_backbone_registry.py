"""Backbones declare themselves in their files; the registries, the config and the reference
read those declarations."""

from __future__ import annotations

import dataclasses

import pytest

from darec_jax import config as config_lib
from darec_jax.errors import ConfigError
from darec_jax.models import SPECS, spec
from darec_jax.reference.spec import reference_spec


def test_every_declared_backbone_is_in_the_config_and_has_a_reference():
    assert tuple(SPECS) == config_lib.BACKBONES
    assert set(SPECS) == {"lightgcn", "gccf", "sgl", "simgcl", "dccf", "autocf"}
    model = config_lib.ModelConfig()
    for name, declared in SPECS.items():
        section = getattr(model, name)
        assert isinstance(section, declared.config)
        assert reference_spec(name).name == name
        bare, con, gen = reference_spec(name).classes()
        # One file per backbone: its variants live beside it.
        assert {bare.__module__, con.__module__, gen.__module__} == {f"darec_jax.reference.{name}"}


def test_sections_are_the_module_keyword_arguments():
    """The builder passes a section's fields to the module as keywords: every field must be one."""
    import inspect

    for declared in SPECS.values():
        accepted = inspect.signature(declared.module.__init__).parameters
        for f in dataclasses.fields(declared.config):
            assert f.name in accepted, (declared.name, f.name)


@pytest.mark.parametrize(
    ("dataset", "backbone", "method", "key", "value"),
    [  # the reference hyper-parameters (RLMRec's per-model YAML files)
        ("yelp", "sgl", "none", "model.sgl.cl_weight", 1e-3),
        ("yelp", "sgl", "none", "model.sgl.cl_temperature", 0.1),
        ("yelp", "sgl", "rlmrec-con", "model.sgl.cl_weight", 0.1),
        ("steam", "simgcl", "none", "model.simgcl.eps", 0.2),
        ("steam", "dccf", "rlmrec-gen", "model.layer_num", 3),
        ("yelp", "autocf", "none", "model.layer_num", 3),
        ("yelp", "autocf", "rlmrec-con", "model.layer_num", 2),
        ("yelp", "autocf", "rlmrec-con", "model.reg_weight", 1e-8),
        ("amazon", "gccf", "rlmrec-gen", "model.reg_weight", 1e-7),
        ("steam", "lightgcn", "none", "model.layer_num", 2),
        ("steam", "lightgcn", "rlmrec-con", "rlmrec.kd_temperature", 0.1),
        ("synthetic", "autocf", "darec", "model.autocf.ssl_reg", 2.0),  # yelp's bare values
    ],
)
def test_presets_come_from_the_declarations(dataset, backbone, method, key, value):
    cfg = config_lib.build_config(dataset, backbone, method)
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    assert node == pytest.approx(value)


def test_a_flat_backbone_option_points_to_its_section():
    with pytest.raises(ConfigError, match=r"model\.dccf\.intent_num"):
        config_lib.build_config("synthetic", "dccf", "none", {"model.intent_num": 8})
    with pytest.raises(ConfigError, match=r"model\.lightgcn\.keep_rate or model\.sgl\.keep_rate"):
        config_lib.build_config("synthetic", "lightgcn", "none", {"model.keep_rate": 0.5})


def test_bad_section_values_are_refused_in_any_section():
    with pytest.raises(ConfigError, match=r"model\.autocf\.keep_rate"):
        config_lib.build_config("synthetic", "lightgcn", "none", {"model.autocf.keep_rate": 0})
    with pytest.raises(ConfigError, match=r"model\.dccf\.intent_num"):
        config_lib.build_config("synthetic", "dccf", "none", {"model.dccf.intent_num": 0})


def test_a_config_saved_flat_migrates_into_the_sections():
    """A run folder from before the sections (every backbone's options flat in ``model``)."""
    cfg = config_lib.build_config("yelp", "sgl", "none", {"model.sgl.cl_weight": 0.25})
    saved = config_lib.to_dict(cfg)
    model = saved["model"]
    for name in SPECS:
        model.pop(name)
    model.update(keep_rate=0.7, cl_weight=0.25, cl_temperature=0.1, eps=0.9, intent_num=128)
    model.update(gt_layer=1, head_num=4, seed_num=100, mask_depth=2, fix_steps=10, ssl_reg=5.0)
    restored = config_lib.from_dict(saved)
    assert restored.model.sgl == dataclasses.replace(cfg.model.sgl, keep_rate=0.7)
    # The other backbones' flat options are not the saved backbone's: they do not move.
    assert restored.model.dccf == config_lib.ModelConfig().dccf
    assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg


def test_declarations_drive_the_state_dict_names():
    """The backbone part of the state_dict names comes from ``SPEC.state_dict``."""
    import jax.numpy as jnp

    pairs = spec("gccf").state_dict({"user_emb": 0, "item_emb": 0, "layer_weight_2": 0,
                                     "layer_weight_1": 0})  # fmt: skip
    assert [name for _, name, _ in pairs] == [
        "user_embeds", "item_embeds", "gcnLayers.0.W", "gcnLayers.1.W"
    ]  # fmt: skip
    stacked = {"user_emb": 0, "item_emb": 0, "gt_wq": jnp.zeros((2, 4, 4))}
    names = [name for _, name, _ in spec("autocf").state_dict(stacked)]
    assert names[2:5] == ["gtLayers.0.qTrans", "gtLayers.0.kTrans", "gtLayers.0.vTrans"]
    assert names[-1] == "gtLayers.1.vTrans"
    assert [n for _, n, _ in spec("dccf").state_dict({})][:2] == [
        "user_embeds.weight", "item_embeds.weight"
    ]  # fmt: skip


def test_gccf_self_loop_rule_is_one_declaration():
    gccf = spec("gccf")
    assert gccf.self_loops("none") and not gccf.self_loops("darec")
    assert gccf.build_options("none") == {"self_loops": True}
    assert not any(spec(n).self_loops("none") for n in SPECS if n != "gccf")
