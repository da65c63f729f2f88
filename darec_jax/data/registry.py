"""Datasets by name: RLMRec's three (downloaded and cached) and the synthetic planted world.

Where ``amazon``, ``yelp`` and ``steam`` come from, in order (docs/protocol.md):

1. ``data_dir``, when given: an RLMRec folder, or a folder that holds ``<name>/``;
2. the cache, ``<cache_dir>/<name>/`` (``cache_dir`` defaults to :func:`default_cache_dir`);
3. RLMRec's archive, downloaded once to ``<cache_dir>/data.zip`` and unpacked into
   ``<cache_dir>/<name>/`` (only that dataset).
"""

from __future__ import annotations

import os
from pathlib import Path

from darec_jax.data import download as _download
from darec_jax.data.dataset import (
    EMBEDDING_FILES,
    FOLDER_CONTENTS,
    MATRIX_FILES,
    InteractionData,
    load_rlmrec_folder,
)
from darec_jax.data.download import ARCHIVE_NAME, default_cache_dir, offline_message
from darec_jax.data.synthetic import SyntheticConfig, make_planted_world
from darec_jax.errors import DataError

__all__ = ["DATASETS", "load_dataset"]

#: Every dataset name :func:`load_dataset` accepts.
DATASETS: tuple[str, ...] = ("amazon", "yelp", "steam", "synthetic")


def _has_files(folder: Path, names: tuple[str, ...]) -> bool:
    return all((folder / n).is_file() for n in names)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    require_embeddings: bool = False,
    synthetic: SyntheticConfig | None = None,
    download: bool = True,
    *,
    url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> InteractionData:
    """Load a dataset by name.

    Args:
      name: one of :data:`DATASETS`.
      data_dir: an RLMRec-format folder to read instead of the cache (``--data-dir``); a folder
        that contains ``<name>/trn_mat.pkl`` is accepted too. Not used for ``synthetic``.
      cache_dir: the download cache; default :func:`default_cache_dir` (``$DAREC_DATA_DIR``, …).
      require_embeddings: fail unless the LLM embeddings are present (the alignment methods).
      synthetic: the planted world's knobs for ``name="synthetic"`` (default
        ``SyntheticConfig()``); ignored for the other names.
      download: whether a dataset missing from the cache may be downloaded.
      url: the archive to download; default :data:`~darec_jax.data.download.ARCHIVE_URL`.
      progress: show a progress bar while downloading.
      timeout: network timeout in seconds (connection and each read).

    Returns:
      The validated dataset (see :func:`~darec_jax.data.dataset.load_rlmrec_folder`).

    Raises:
      DataError: an unknown name; a folder that is not a valid dataset; a failed download (the
        message says what to download and where to put it).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if name == "synthetic":
        if data_dir is not None:
            raise DataError(
                "the synthetic dataset is generated, not read: drop data_dir (--data-dir), "
                "or name the dataset the folder holds"
            )
        return make_planted_world(synthetic if synthetic is not None else SyntheticConfig())

    needed = MATRIX_FILES + (EMBEDDING_FILES if require_embeddings else ())
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if (folder / MATRIX_FILES[0]).is_file():
            return load_rlmrec_folder(folder, name=name, require_embeddings=require_embeddings)
        if (folder / name / MATRIX_FILES[0]).is_file():
            return load_rlmrec_folder(
                folder / name, name=name, require_embeddings=require_embeddings
            )
        raise DataError(
            f"data_dir {folder} holds neither {MATRIX_FILES[0]} nor {name}/{MATRIX_FILES[0]}; "
            f"{FOLDER_CONTENTS}"
        )

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache / name
    if not _has_files(target, needed):
        archive_url = url if url is not None else _download.ARCHIVE_URL
        if not download:
            raise DataError(
                offline_message(
                    name, archive_url, cache, f"{target} is incomplete and download=False"
                )
            )
        archive = _download.download_archive(
            archive_url, cache / ARCHIVE_NAME, name=name, timeout=timeout, progress=progress
        )
        _download.extract_dataset(archive, name, target)
    return load_rlmrec_folder(target, name=name, require_embeddings=require_embeddings)
