"""Interaction datasets in memory, and the loader for RLMRec-format folders (docs/protocol.md).

An RLMRec dataset folder holds

* ``trn_mat.pkl``, ``val_mat.pkl``, ``tst_mat.pkl``: pickled scipy sparse user × item matrices;
  any non-zero entry is an interaction;
* ``usr_emb_np.pkl``, ``itm_emb_np.pkl`` (needed by every method other than the bare backbone):
  pickled numpy float arrays with one row per user / item (RLMRec: 1536 columns; any width works).

Interaction order. Every split is stored in row-major order: users ascending, and the items of a
user ascending; duplicates are summed and pairs whose sum is zero dropped (binarisation). This is
the storage order of the binarised matrix as RLMRec builds it,
``coo_matrix((mat != 0).astype(np.float32))`` (checked with scipy 1.17 on RLMRec's Yelp and
Amazon-book files): scipy's ``!=`` goes through CSR, which sums duplicates and sorts the column
indices, and CSR → COO walks the rows in order. It is also what ``mat.tocoo()`` followed by
``sum_duplicates()`` gives. It is *not* the order of the entries inside RLMRec's pickles, which
are grouped by user but with unsorted items within a user. The training samples of an epoch
follow the order used here (docs/backbones.md §1.1), and it does not depend on how a file stores its
entries.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from darec_jax.data.pickles import safe_load_pickle
from darec_jax.errors import DataError

__all__ = [
    "EMBEDDING_FILES",
    "MATRIX_FILES",
    "InteractionData",
    "Split",
    "load_rlmrec_folder",
]

#: The interaction matrices of a dataset folder: train, validation, test.
MATRIX_FILES: tuple[str, str, str] = ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl")
#: The LLM embeddings of a dataset folder: users, items.
EMBEDDING_FILES: tuple[str, str] = ("usr_emb_np.pkl", "itm_emb_np.pkl")

FOLDER_CONTENTS = (
    "an RLMRec dataset folder must contain trn_mat.pkl, val_mat.pkl and tst_mat.pkl (pickled "
    "scipy sparse user x item matrices) and, for the alignment methods (RLMRec, DaRec), "
    "usr_emb_np.pkl and itm_emb_np.pkl (pickled numpy float arrays, one row per user / item)"
)

_INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class Split:
    """One split of the interactions: parallel arrays of user and item ids.

    Attributes:
      users: int32 [nnz], user ids in ``[0, n_users)``.
      items: int32 [nnz], item ids in ``[0, n_items)``.
    """

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        users, items = np.asarray(self.users), np.asarray(self.items)
        if users.ndim != 1 or items.ndim != 1 or users.shape != items.shape:
            raise DataError(
                f"a split needs two 1-D arrays of equal length, got shapes {users.shape} "
                f"and {items.shape}"
            )
        for label, arr in (("users", users), ("items", items)):
            if arr.size and arr.dtype.kind not in "iu":
                raise DataError(f"split {label} must be integers, got dtype {arr.dtype}")
            if arr.size and (arr.min() < 0 or arr.max() > _INT32_MAX):
                raise DataError(f"split {label} hold ids outside [0, 2^31)")
        # Store int32 (a no-op for arrays that already are).
        object.__setattr__(self, "users", users.astype(np.int32, copy=False))
        object.__setattr__(self, "items", items.astype(np.int32, copy=False))

    @property
    def nnz(self) -> int:
        """The number of interactions in the split."""
        return int(self.users.shape[0])


@dataclass(frozen=True)
class InteractionData:
    """A dataset: interactions split into train/validation/test, and optional LLM embeddings.

    Attributes:
      name: the dataset's name (``"yelp"``, ``"synthetic"``, the folder name, ...).
      n_users, n_items: U and I, from the training matrix's shape.
      train, val, test: the splits, each in row-major order (see the module docstring).
      user_emb: float32 [n_users, d_L] LLM embeddings of the users, or None.
      item_emb: float32 [n_items, d_L] LLM embeddings of the items, or None.
      source: where the data came from (a folder path, or ``"synthetic(seed=..., ...)"``).
    """

    name: str
    n_users: int
    n_items: int
    train: Split
    val: Split
    test: Split
    user_emb: np.ndarray | None
    item_emb: np.ndarray | None
    source: str

    def __post_init__(self) -> None:
        if self.n_users <= 0 or self.n_items <= 0:
            raise DataError(
                f"{self.name}: need at least one user and one item, got "
                f"{self.n_users} x {self.n_items}"
            )
        for label, split in (("train", self.train), ("val", self.val), ("test", self.test)):
            if split.nnz and (
                split.users.max() >= self.n_users or split.items.max() >= self.n_items
            ):
                raise DataError(
                    f"{self.name}: {label} split has ids outside the {self.n_users} users x "
                    f"{self.n_items} items"
                )
        for label, emb, rows in (
            ("user_emb", self.user_emb, self.n_users),
            ("item_emb", self.item_emb, self.n_items),
        ):
            if emb is not None and (emb.ndim != 2 or emb.shape[0] != rows):
                raise DataError(
                    f"{self.name}: {label} has shape {emb.shape}, expected ({rows}, d_L)"
                )

    @property
    def has_embeddings(self) -> bool:
        """Whether both the user and the item LLM embeddings are present."""
        return self.user_emb is not None and self.item_emb is not None

    def summary(self) -> str:
        """A one-line description: sizes, split sizes, embedding width, source."""
        emb = f"d_L={self.user_emb.shape[1]}" if self.user_emb is not None else "no embeddings"
        return (
            f"{self.name}: {self.n_users} users, {self.n_items} items, "
            f"train/val/test {self.train.nnz}/{self.val.nnz}/{self.test.nnz}, {emb} "
            f"[{self.source}]"
        )


# ----------------------------------------------------------------------------- matrices


def _load_matrix(path: Path) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Load one interaction matrix; return its shape and its binarised (rows, cols), row-major."""
    obj = safe_load_pickle(path)
    if not sp.issparse(obj):
        raise DataError(
            f"{path}: expected a pickled scipy sparse matrix, got {type(obj).__module__}."
            f"{type(obj).__qualname__}"
        )
    if obj.ndim != 2:
        raise DataError(f"{path}: expected a 2-D user x item matrix, got shape {obj.shape}")
    shape = (int(obj.shape[0]), int(obj.shape[1]))
    if max(shape) > _INT32_MAX:
        raise DataError(f"{path}: shape {shape} is too large for int32 ids")
    coo = obj.tocoo()
    rows = np.asarray(coo.row, dtype=np.int64)
    cols = np.asarray(coo.col, dtype=np.int64)
    data = np.asarray(coo.data)
    if data.dtype.kind not in "biuf":
        raise DataError(f"{path}: matrix values must be real numbers, got dtype {data.dtype}")
    bad = int(np.count_nonzero(~np.isfinite(data))) if data.dtype.kind == "f" else 0
    if bad:
        raise DataError(f"{path}: {bad} stored value(s) are NaN or infinite")
    # safe_load_pickle already validated the indices through scipy; check again, cheaply, so
    # that the error message is ours whatever produced the matrix.
    for label, idx, bound in (("row (user)", rows, shape[0]), ("column (item)", cols, shape[1])):
        if idx.size and idx.min() < 0:
            raise DataError(f"{path}: negative {label} index {int(idx.min())}")
        if idx.size and idx.max() >= bound:
            raise DataError(
                f"{path}: {label} index {int(idx.max())} is out of range for shape {shape}"
            )
    # Binarise as RLMRec does, (mat != 0): sum duplicate (row, col) entries, then keep the
    # pairs whose sum is non-zero. The key u * n_cols + c sorts row-major; it fits int64
    # because both factors are below 2^31.
    keys = rows * shape[1] + cols
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, weights=data.astype(np.float64), minlength=unique_keys.size)
    unique_keys = unique_keys[sums != 0]
    return shape, unique_keys // shape[1], unique_keys % shape[1]


def _split(rows: np.ndarray, cols: np.ndarray) -> Split:
    return Split(users=rows.astype(np.int32), items=cols.astype(np.int32))


def _count_overlaps(n_items: int, splits: dict[str, Split]) -> dict[str, int]:
    """Pairs of splits that share (user, item) interactions, with the shared count."""
    keys = {
        label: s.users.astype(np.int64) * n_items + s.items.astype(np.int64)
        for label, s in splits.items()
    }
    labels = list(keys)
    out = {}
    for a_pos, a in enumerate(labels):
        for b in labels[a_pos + 1 :]:
            # Keys are unique within a split, so the intersection size is the shared count.
            shared = np.intersect1d(keys[a], keys[b], assume_unique=True).size
            if shared:
                out[f"{a}/{b}"] = int(shared)
    return out


# ----------------------------------------------------------------------------- embeddings


def _load_embeddings(
    path: Path, rows: int, what: str, train_path: Path, train_shape: tuple[int, int]
) -> np.ndarray:
    """Load an LLM embedding table: a 2-D finite float array with ``rows`` rows, as float32."""
    arr = safe_load_pickle(path)
    if not isinstance(arr, np.ndarray):
        raise DataError(
            f"{path}: expected a pickled numpy array, got {type(arr).__module__}."
            f"{type(arr).__qualname__}"
        )
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataError(f"{path}: expected a 2-D array [{what}, d_L], got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise DataError(f"{path}: expected a real float array, got dtype {arr.dtype}")
    if arr.shape[0] != rows:
        raise DataError(
            f"{path}: shape {arr.shape} does not match the training matrix {train_path.name} of "
            f"shape {train_shape}: the {what} embeddings need one row per {what[:-1]}, "
            f"i.e. {rows} rows"
        )
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if n_nan or n_inf:
        raise DataError(
            f"{path}: {n_nan + n_inf} non-finite value(s) ({n_nan} NaN, {n_inf} infinite)"
        )
    out = np.ascontiguousarray(arr, dtype=np.float32)
    n_overflow = int(np.count_nonzero(~np.isfinite(out)))
    if n_overflow:
        raise DataError(f"{path}: {n_overflow} value(s) overflow float32")
    return out


# ----------------------------------------------------------------------------- loader


def load_rlmrec_folder(
    path: str | os.PathLike[str],
    name: str | None = None,
    require_embeddings: bool = False,
) -> InteractionData:
    """Load a dataset folder in RLMRec format and validate it (docs/protocol.md).

    Args:
      path: the folder (``trn_mat.pkl``, ``val_mat.pkl``, ``tst_mat.pkl`` and optionally
        ``usr_emb_np.pkl``, ``itm_emb_np.pkl``).
      name: the dataset's name; default: the folder's name.
      require_embeddings: fail unless both embedding files are present. Otherwise each is
        loaded when present and left None when not.

    Returns:
      The interactions (each split binarised and row-major, see the module docstring) and the
      embeddings as float32. Users and items without training interactions are allowed.

    Raises:
      DataError: missing files; a file that is not a (safe) pickle of the right kind; val/test
        matrix or embedding shapes that disagree with the training matrix; an empty training
        split; negative or out-of-range indices; NaN or infinite values.

    Warns:
      UserWarning: interactions that appear in more than one split (with their count).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"dataset folder {folder} does not exist or is not a folder; {FOLDER_CONTENTS}"
        )
    needed = MATRIX_FILES + (EMBEDDING_FILES if require_embeddings else ())
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        hint = ""
        if set(missing) <= set(EMBEDDING_FILES):
            hint = " (without LLM embeddings, train the bare backbone with --method none)"
        raise DataError(
            f"dataset folder {folder} lacks {', '.join(missing)}{hint}; {FOLDER_CONTENTS}"
        )

    train_path = folder / MATRIX_FILES[0]
    shape, rows, cols = _load_matrix(train_path)
    n_users, n_items = shape
    if rows.size == 0:
        raise DataError(f"{train_path}: the training split is empty (no non-zero entries)")
    splits = {"train": _split(rows, cols)}
    for label, fname in (("val", MATRIX_FILES[1]), ("test", MATRIX_FILES[2])):
        other_shape, r, c = _load_matrix(folder / fname)
        if other_shape != shape:
            raise DataError(
                f"{folder / fname}: shape {other_shape} does not match the training matrix "
                f"{MATRIX_FILES[0]} of shape {shape}"
            )
        splits[label] = _split(r, c)

    overlaps = _count_overlaps(n_items, splits)
    if overlaps:
        detail = ", ".join(f"{pair}: {n}" for pair, n in overlaps.items())
        warnings.warn(
            f"{folder}: {sum(overlaps.values())} interaction(s) appear in more than one split "
            f"({detail}); RLMRec's splits have none",
            UserWarning,
            stacklevel=2,
        )

    embeddings: list[np.ndarray | None] = []
    for fname, rows_needed, what in (
        (EMBEDDING_FILES[0], n_users, "users"),
        (EMBEDDING_FILES[1], n_items, "items"),
    ):
        emb_path = folder / fname
        if emb_path.is_file():
            embeddings.append(_load_embeddings(emb_path, rows_needed, what, train_path, shape))
        else:
            embeddings.append(None)
    user_emb, item_emb = embeddings
    if user_emb is not None and item_emb is not None and user_emb.shape[1] != item_emb.shape[1]:
        raise DataError(
            f"{folder}: user embeddings have {user_emb.shape[1]} columns but item embeddings "
            f"have {item_emb.shape[1]}; both must have the same width d_L"
        )

    return InteractionData(
        name=name if name is not None else folder.resolve().name,
        n_users=n_users,
        n_items=n_items,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        user_emb=user_emb,
        item_emb=item_emb,
        source=str(folder.resolve()),
    )
