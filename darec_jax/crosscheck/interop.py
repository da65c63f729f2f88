"""Parameters in the PyTorch reference implementation's ``state_dict`` format, both ways.

RLMRec's models name their parameters (all float32; linear layers in torch's [out, in] layout;
each backbone declares its names in ``models/<name>.py``, ``SPEC.state_dict``):

==================  =======================================================================
backbone / method   names
==================  =======================================================================
every backbone      ``user_embeds`` [U, d], ``item_embeds`` [I, d]
DCCF                ``user_embeds.weight``, ``item_embeds.weight`` (``nn.Embedding``),
                    ``user_intent`` [d, K], ``item_intent`` [d, K]
GCCF                ``gcnLayers.{l}.W`` [d, d] for l = 0 … L−1
AutoCF              ``gtLayers.{g}.qTrans`` / ``kTrans`` / ``vTrans`` [d, d] for g < gt_layer
RLMRec-Con / -Gen   ``mlp.0.weight``, ``mlp.0.bias``, ``mlp.2.weight``, ``mlp.2.bias``
RLMRec-Gen          ``masker.mask_token`` [1, d] (AutoCF: ``gene_masker.mask_token``)
DaRec               ``cf_specific.{0,2}.{weight,bias}``, likewise ``cf_shared``,
                    ``llm_specific``, ``llm_shared`` (this project's reference names)
==================  =======================================================================

:func:`to_state_dict` turns our parameter tree into that flat dict of NumPy arrays and
:func:`from_state_dict` back; both are exact (a copy of the values, no arithmetic).
:func:`save_state_dict` / :func:`load_state_dict` read and write it as a torch file (``.pt`` /
``.pth``; needs PyTorch, loaded with ``weights_only=True`` so nothing in the file is executed) or
as NumPy ``.npz`` (no pickle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from darec_jax.errors import DarecError

__all__ = [
    "StateDictError",
    "from_state_dict",
    "load_state_dict",
    "save_state_dict",
    "state_dict_names",
    "to_state_dict",
]

HEADS = ("cf_specific", "cf_shared", "llm_specific", "llm_shared")
_MLP = (("w1", "0.weight"), ("b1", "0.bias"), ("w2", "2.weight"), ("b2", "2.bias"))


class StateDictError(DarecError, ValueError):
    """A state_dict does not fit the model: missing or unexpected names, wrong shapes, bad file."""


def _pairs(backbone: str, method: str, params: dict) -> list[tuple[tuple, str, int | None]]:
    """[(path in our tree, reference name, index along a stacked leading axis or None)]: the
    backbone's names from its declaration (``SPEC.state_dict``), then the method's."""
    from darec_jax.models import spec

    declared = spec(backbone)
    out: list[tuple[tuple, str, int | None]] = [
        (("backbone", ours), name, index)
        for ours, name, index in declared.state_dict(params["backbone"])
    ]
    if method in ("rlmrec-con", "rlmrec-gen"):
        out += [(("method", "mlp", ours), f"mlp.{name}", None) for ours, name in _MLP]
    if method == "rlmrec-gen":
        out.append((("method", "mask_token"), declared.mask_token, None))
    if method == "darec":
        for head in HEADS:
            out += [(("method", head, ours), f"{head}.{name}", None) for ours, name in _MLP]
    return out


def _get(tree: dict, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def state_dict_names(cfg, params: dict) -> list[str]:
    """The reference names of ``params`` for ``cfg``'s backbone and method."""
    return [name for _, name, _ in _pairs(cfg.model.backbone, cfg.method, params)]


def to_state_dict(cfg, params: dict) -> dict[str, np.ndarray]:
    """Our parameters as the reference's ``state_dict`` (NumPy float32 arrays, copies)."""
    out = {}
    for path, name, index in _pairs(cfg.model.backbone, cfg.method, params):
        leaf = np.asarray(_get(params, path))
        out[name] = np.array(leaf if index is None else leaf[index], dtype=np.float32)
    return out


def from_state_dict(cfg, state_dict: dict[str, Any], like: dict) -> dict:
    """The reference's ``state_dict`` as our parameter tree.

    Args:
        cfg: the config of the model the state_dict belongs to (backbone, method, sizes).
        state_dict: name → array-like (NumPy arrays or torch tensors).
        like: a parameter tree of the right structure and shapes (e.g. a fresh initialisation
            from ``cfg``); it is not modified.

    Raises:
        StateDictError: names missing or unexpected for this backbone and method, a shape that
            differs from ``like``'s, or a non-finite value; the message lists them.
    """
    import jax.numpy as jnp

    pairs = _pairs(cfg.model.backbone, cfg.method, like)
    expected = {name for _, name, _ in pairs}
    given = {k for k in state_dict if not k.endswith(("usr_emb", "itm_emb"))}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise StateDictError(
            f"the state_dict does not match {cfg.model.backbone} with --method {cfg.method}: "
            f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}. Check the "
            "backbone, method and hyper-parameters (layer counts) it was saved with."
        )
    arrays: dict[tuple, Any] = {}
    for path, name, index in pairs:
        target = _get(like, path)
        value = _as_numpy(state_dict[name])
        want = tuple(np.shape(target))[1:] if index is not None else tuple(np.shape(target))
        if value.shape != want:
            raise StateDictError(
                f"state_dict entry {name!r} has shape {value.shape}, the model expects {want} "
                "(different dataset sizes, embedding width or LLM width?)"
            )
        if not np.isfinite(value).all():
            raise StateDictError(f"state_dict entry {name!r} holds NaN or Inf values")
        if index is None:
            arrays[path] = value.astype(np.float32)
        else:
            stacked = arrays.setdefault(path, np.zeros(np.shape(target), np.float32))
            stacked[index] = value
    out = _copy_tree(like)
    for path, value in arrays.items():
        node = out
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = jnp.asarray(value, dtype=_get(like, path).dtype)
    return out


def _copy_tree(tree):
    if isinstance(tree, dict):
        return {k: _copy_tree(v) for k, v in tree.items()}
    return tree


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def save_state_dict(path: str | os.PathLike, state_dict: dict[str, np.ndarray]) -> Path:
    """Write ``state_dict`` to ``path``: a torch file (``.pt`` / ``.pth``) or ``.npz``. The file
    is written beside the target and renamed into place, so an interrupted write leaves no
    half-written file under ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pt", ".pth", ".npz"):
        raise StateDictError(f"{path}: give a .pt / .pth (torch) or .npz (NumPy) file name")
    tmp = path.with_name(path.name + ".partial")
    try:
        if suffix == ".npz":
            with tmp.open("wb") as f:
                np.savez(f, **state_dict)
        else:
            torch = _torch(path)
            torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StateDictError(f"could not write {path}: {exc}") from exc
    return path


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a state_dict written by the reference (``torch.save(model.state_dict(), path)``) or
    by :func:`save_state_dict`; only tensors / arrays are accepted, nothing in the file runs."""
    path = Path(path)
    if not path.is_file():
        raise StateDictError(f"no state_dict file at {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                return {k: np.array(f[k]) for k in f.files}
        if suffix in (".pt", ".pth"):
            torch = _torch(path)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise StateDictError(f"{path}: expected a .pt / .pth (torch) or .npz file")
    except StateDictError:
        raise
    except Exception as exc:  # torch / numpy raise many kinds on corrupt or foreign files
        raise StateDictError(
            f"{path} is not a readable state_dict ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(loaded, dict) or not all(hasattr(v, "detach") for v in loaded.values()):
        raise StateDictError(f"{path} does not hold a state_dict (a dict of name → tensor)")
    return {str(k): _as_numpy(v) for k, v in loaded.items()}


def _torch(path: Path):
    try:
        import torch
    except ImportError as exc:
        raise StateDictError(
            f"{path}: torch files need PyTorch (pip install torch), or use a .npz file"
        ) from exc
    return torch
