"""One typed configuration: frozen dataclasses, presets and dotted overrides.

A run is fully described by a :class:`Config`. It is built in three layers, mirroring RLMRec's
per-model YAML files with per-dataset blocks:

1. the dataclass defaults below;
2. the preset for (dataset, backbone, method) from :data:`PRESETS` (the reference's values);
3. user overrides ``section.field=value`` (``--set train.lr=5e-4`` on the command line).

The resolved config is saved beside the results of every run.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from darec_jax.data.synthetic import SyntheticConfig
from darec_jax.errors import ConfigError
from darec_jax.models import SPECS as _model_specs

DATASETS = ("amazon", "yelp", "steam", "synthetic")
BACKBONES = tuple(_model_specs)
METHODS = ("none", "rlmrec-con", "rlmrec-gen", "darec")
# What this version of the package implements; the rest raise a clear error.
IMPLEMENTED_BACKBONES = BACKBONES
IMPLEMENTED_METHODS = ("none", "rlmrec-con", "rlmrec-gen", "darec")


@dataclass(frozen=True)
class DataConfig:
    """Where the interactions (and LLM embeddings) come from."""

    name: str = "synthetic"
    # An RLMRec-format folder; overrides the cache / download lookup.
    data_dir: str | None = None
    # Cache folder for downloaded datasets; None = $DAREC_DATA_DIR or the per-user cache.
    cache_dir: str | None = None
    download: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass(frozen=True)
class _ModelCommon:
    """The fields every backbone has (docs/backbones.md §2)."""

    backbone: str = "lightgcn"
    embedding_size: int = 32
    layer_num: int = 3
    reg_weight: float = 1e-6
    # How graph products run (the same numbers either way): "segment_sum" (one XLA segment sum
    # over all edges, autodiff backward: a scatter over senders), "transposed" (the same sorted
    # segment sum, backward over the transposed graph: a second sorted segment sum, no
    # scatter), "blocked" (receiver blocks of spmm_block_edges edges, transposed-graph
    # backward), "native" (C++ CSR kernel through XLA's FFI; CPU only), or "auto" (native on
    # CPU when it builds, else blocked; segment_sum on accelerators and multi-device meshes).
    spmm_impl: str = "auto"
    spmm_block_edges: int = 10_000


#: The graph backbone: the common fields above, then one section per backbone
#: (``model.<name>.<option>``), each declared by its model file (``models/<name>.py``).
ModelConfig = dataclasses.make_dataclass(
    "ModelConfig",
    [(name, s.config, field(default_factory=s.config)) for name, s in _model_specs.items()],
    bases=(_ModelCommon,),
    frozen=True,
    namespace={"__module__": __name__},
)
ModelConfig.__doc__ = (
    "The graph backbone: common fields (backbone, embedding_size, layer_num, reg_weight, "
    "spmm_impl, spmm_block_edges) and one section per backbone: "
    + ", ".join(f"``{n}``" for n in _model_specs)
    + "."
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and early stopping (docs/protocol.md)."""

    lr: float = 1e-3
    batch_size: int = 4096
    epochs: int = 3000
    # Validate after epochs 0, test_step, 2*test_step, ...
    test_step: int = 3
    # Stop after this many evaluations without strict improvement of the criterion.
    patience: int = 5
    criterion: str = "recall@20"
    seed: int = 2023
    # "highest" keeps float32 matmuls exact on accelerators; "default" allows TF32/bf16 passes.
    matmul_precision: str = "highest"
    # A loss term or parameter that becomes NaN / Inf: "stop" (say which term, epoch and step;
    # keep the last good checkpoint) or "rollback" (restart from the last good checkpoint with
    # fresh batches and draws, at most max_rollbacks times).
    on_nonfinite: str = "stop"
    max_rollbacks: int = 3


@dataclass(frozen=True)
class EvalConfig:
    """Full-ranking evaluation (docs/backbones.md §1.10)."""

    ks: tuple[int, ...] = (5, 10, 20)
    # Users scored per device chunk; bounds memory at user_chunk x n_items scores.
    user_chunk: int = 1024
    # "gt": RLMRec's Recall@k = hits / |GT|.  "min_k_gt": hits / min(k, |GT|).
    recall_denominator: str = "gt"


@dataclass(frozen=True)
class RlmrecConfig:
    """RLMRec's alignment baselines (docs/backbones.md §3.1–3.3)."""

    # rlmrec-con: InfoNCE between CF embeddings and an MLP projection of the LLM embeddings.
    kd_weight: float = 1e-2
    kd_temperature: float = 0.2
    # rlmrec-gen: reconstruct the LLM embeddings of masked nodes from their CF embeddings.
    mask_ratio: float = 0.05
    recon_weight: float = 0.01
    recon_temperature: float = 0.1


@dataclass(frozen=True)
class DarecConfig:
    """DaRec (docs/darec.md). Every choice the paper leaves open is a named option here."""

    # Width of the four projection heads' outputs; 0 = the CF embedding size d.
    head_dim: int = 0
    # Weights of the four terms; 0 switches a term off and skips its computation. docs/darec.md
    # suggests 0.1 / 0.1 / 0.1 / 0.01. These defaults (λ_un = 0) are the planted study's choice
    # on its tuning worlds (benchmarks/study/tuning.json): against seven configurations drawn
    # from the search space, by mean validation Recall@20.
    lambda_or: float = 0.1
    lambda_un: float = 0.0
    lambda_gl: float = 0.1
    lambda_lo: float = 0.01
    global_loss: str = "mse"  # "mse" or "kl"
    global_temperature: float = 1.0  # τ_g of the "kl" form
    local_temperature: float = 0.2  # τ_l
    num_clusters: int = 16
    kmeans_iters: int = 10
    # Recompute the preference clusters before every n-th epoch (1 = every epoch, "adaptive");
    # in between the assignments are kept (and checkpointed with the train state).
    recluster_every: int = 1
    # Rows per set drawn (without replacement) for the pairwise terms; 0 = all rows.
    pair_sample: int = 1024
    # "joint": one k-means on [CF ‖ LLM] shared parts serves both views; "matched": k-means per
    # view, LLM clusters paired with CF clusters by an exact assignment on centre cosines.
    local_assign: str = "joint"
    # "backbone": BPR and ranking use E^C; "disentangled": they use [E^C_sp ‖ E^C_sh].
    score_on: str = "backbone"


@dataclass(frozen=True)
class MeshConfig:
    """The device mesh (``darec_jax.parallel``): a data axis, and a model axis that shards the
    embedding tables (and the LLM embeddings) by rows. Results do not depend on it beyond float
    summation order, so a run may resume on another mesh."""

    # Devices along the data axis (batches, edges and evaluated users); 0 = all devices left after
    # the model axis.
    data: int = 0
    # Devices along the model axis: tables whose row count it divides are split by rows.
    model: int = 1


@dataclass(frozen=True)
class Config:
    """Everything a run needs."""

    method: str = "none"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rlmrec: RlmrecConfig = field(default_factory=RlmrecConfig)
    darec: DarecConfig = field(default_factory=DarecConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)


# Reference hyper-parameters, per (dataset, backbone, method), as dotted overrides applied on top
# of the defaults: each backbone declares its own (``SPEC.presets`` in ``models/<name>.py``,
# docs/backbones.md §2 and §3.3). "synthetic" uses the yelp values. DaRec takes its backbone's bare
# values (DaRec's own options keep their defaults unless listed).
PRESETS: dict[tuple[str, str, str], dict[str, Any]] = {
    (dataset, name, method): s.preset(dataset, method)
    for name, s in _model_specs.items()
    for dataset in DATASETS
    for method in METHODS
}


def _check_choice(kind: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def validate(cfg: Config) -> Config:
    """Raise :class:`ConfigError` for unknown names and out-of-range values."""
    _check_choice("dataset", cfg.data.name, DATASETS)
    _check_choice("backbone", cfg.model.backbone, BACKBONES)
    _check_choice("method", cfg.method, METHODS)
    _check_choice("train.on_nonfinite", cfg.train.on_nonfinite, ("stop", "rollback"))
    if cfg.model.backbone not in IMPLEMENTED_BACKBONES:
        raise ConfigError(
            f"backbone {cfg.model.backbone!r} is not implemented yet in this version; "
            f"implemented: {', '.join(IMPLEMENTED_BACKBONES)}"
        )
    if cfg.method not in IMPLEMENTED_METHODS:
        raise ConfigError(
            f"method {cfg.method!r} is not implemented yet in this version; "
            f"implemented: {', '.join(IMPLEMENTED_METHODS)}"
        )
    _check_choice(
        "model.spmm_impl",
        cfg.model.spmm_impl,
        ("auto", "segment_sum", "transposed", "blocked", "native"),
    )
    d = cfg.darec
    _check_choice("darec.global_loss", d.global_loss, ("mse", "kl"))
    _check_choice("darec.local_assign", d.local_assign, ("joint", "matched"))
    _check_choice("darec.score_on", d.score_on, ("backbone", "disentangled"))
    if d.recluster_every < 1:
        raise ConfigError("darec.recluster_every must be >= 1 (epochs between reclusterings)")
    if d.num_clusters < 1 or d.kmeans_iters < 0 or d.pair_sample < 0 or d.head_dim < 0:
        raise ConfigError(
            "darec.num_clusters must be >= 1 and darec.kmeans_iters, darec.pair_sample, "
            "darec.head_dim >= 0"
        )
    _check_choice("eval.recall_denominator", cfg.eval.recall_denominator, ("gt", "min_k_gt"))
    _check_choice("train.matmul_precision", cfg.train.matmul_precision, ("highest", "default"))
    criteria = tuple(f"{m}@{k}" for m in ("recall", "ndcg") for k in cfg.eval.ks)
    _check_choice("train.criterion", cfg.train.criterion, criteria)
    checks = [
        (cfg.model.layer_num >= 0, "model.layer_num must be >= 0"),
        (cfg.model.embedding_size > 0, "model.embedding_size must be > 0"),
        (cfg.model.reg_weight >= 0, "model.reg_weight must be >= 0"),
        (cfg.model.spmm_block_edges > 0, "model.spmm_block_edges must be > 0"),
        (cfg.train.lr > 0, "train.lr must be > 0"),
        (cfg.train.batch_size > 0, "train.batch_size must be > 0"),
        (cfg.train.epochs > 0, "train.epochs must be > 0"),
        (cfg.train.test_step > 0, "train.test_step must be > 0"),
        (cfg.train.patience > 0, "train.patience must be > 0"),
        (cfg.train.max_rollbacks >= 0, "train.max_rollbacks must be >= 0"),
        (cfg.eval.user_chunk > 0, "eval.user_chunk must be > 0"),
        (cfg.mesh.data >= 0, "mesh.data must be >= 0 (0 = all devices)"),
        (cfg.mesh.model >= 1, "mesh.model must be >= 1"),
        (len(cfg.eval.ks) > 0 and all(k > 0 for k in cfg.eval.ks), "eval.ks must be positive"),
    ]
    for name in _model_specs:  # every section, so a bad value is caught wherever it is set
        section = getattr(cfg.model, name)
        checks += [(False, message) for message in getattr(section, "problems", list)()]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return cfg


# ----------------------------------------------------------------------------- overrides


def _leaf_paths(obj: Any, prefix: str = "") -> dict[str, Any]:
    """All dotted field paths of a (nested) dataclass, mapped to their type annotations."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out.update(_leaf_paths(value, path + "."))
        else:
            out[path] = hints[f.name]
    return out


def valid_keys(cfg: Config | None = None) -> list[str]:
    """Every key that ``--set`` accepts."""
    return sorted(_leaf_paths(cfg or Config()))


def _parse_value(text: str, annotation: Any, key: str) -> Any:
    """Parse a command-line string into the annotated field type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse_value(text, inner, key)
    try:
        if annotation is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if annotation is str:
            return text
        if origin is tuple:
            parts = [p for p in text.strip("()[] ").split(",") if p.strip()]
            return tuple(_parse_value(p.strip(), args[0], key) for p in parts)
    except ValueError:
        kinds = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        expected = kinds.get(annotation, "a comma-separated list" if origin is tuple else "?")
        raise ConfigError(f"bad value {text!r} for {key}: expected {expected}") from None
    raise ConfigError(f"cannot parse a value for {key} of type {annotation}")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Coerce a Python value (from a preset or a JSON file) to the field type."""
    if isinstance(value, str):
        return _parse_value(value, annotation, key)
    if typing.get_origin(annotation) is tuple and isinstance(value, list | tuple):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Return ``cfg`` with dotted ``section.field`` overrides applied."""
    leaves = _leaf_paths(cfg)
    for key, value in overrides.items():
        if key not in leaves:
            owners = _section_owners(key)
            if owners:
                moved = " or ".join(f"model.{name}.{key.split('.', 1)[1]}" for name in owners)
                raise ConfigError(
                    f"{key!r} is a backbone's own option: set {moved} (each backbone has its "
                    "section model.<backbone>)"
                )
            raise ConfigError(
                f"unknown config key {key!r}; valid keys: {', '.join(sorted(leaves))}"
            )
        cfg = _replace_path(cfg, key.split("."), _coerce(value, leaves[key], key))
    return cfg


def _section_owners(key: str) -> list[str]:
    """The backbones whose section has the option a flat ``model.<option>`` key names (the
    layout of configs saved before the per-backbone sections)."""
    section, _, option = key.partition(".")
    if section != "model" or "." in option:
        return []
    return [
        name
        for name, s in _model_specs.items()
        if option in {f.name for f in dataclasses.fields(s.config)}
    ]


def _replace_path(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    return dataclasses.replace(obj, **{parts[0]: _replace_path(child, parts[1:], value)})


def parse_set_args(items: list[str]) -> dict[str, str]:
    """Turn ``["train.lr=5e-4", ...]`` into a dict, rejecting malformed items."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def build_config(
    dataset: str = "synthetic",
    backbone: str = "lightgcn",
    method: str = "none",
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults, then the (dataset, backbone, method) preset, then user overrides; validated."""
    _check_choice("dataset", dataset, DATASETS)
    _check_choice("backbone", backbone, BACKBONES)
    _check_choice("method", method, METHODS)
    cfg = Config(
        method=method,
        data=DataConfig(name=dataset),
        model=ModelConfig(backbone=backbone),
    )
    cfg = apply_overrides(cfg, PRESETS.get((dataset, backbone, method), {}))
    cfg = apply_overrides(cfg, overrides or {})
    return validate(cfg)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_json(cfg: Config) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=True)


def from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a config saved by :func:`to_dict` (e.g. from a run's ``config.json``)."""
    flat: dict[str, Any] = {}

    def walk(d: dict[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(raw, "")
    # Configs saved before the per-backbone sections held every backbone's options flat in
    # ``model``: the saved backbone's own move into its section, the others' are dropped.
    backbone = flat.get("model.backbone", ModelConfig().backbone)
    for key in [k for k in flat if _section_owners(k)]:
        value = flat.pop(key)
        if backbone in _section_owners(key):
            flat.setdefault(f"model.{backbone}.{key.split('.', 1)[1]}", value)
    return validate(apply_overrides(Config(), flat))
