"""Safe unpickling of dataset files (PROTOCOL.md §1: pickles are untrusted input).

RLMRec ships its data as pickles: scipy sparse matrices (``trn_mat.pkl`` …) and numpy arrays
(``usr_emb_np.pkl`` …). ``pickle.load`` on such a file can run any callable the file names, so
this module unpickles through an allow-list instead:

* numpy arrays, dtypes and scalars: the reconstruction functions numpy's own ``__reduce__``
  emits (``_reconstruct``, ``_frombuffer``, ``scalar``, under both the numpy 2 module
  ``numpy._core`` and the numpy 1 module ``numpy.core``), the ``ndarray`` and ``dtype`` types,
  and ``_codecs.encode`` restricted to latin-1 (protocol-2 pickles store array bytes that way);
* scipy sparse matrices and arrays in COO, CSR and CSC format, under their current module names
  (``scipy.sparse._coo`` …), the pre-1.8 names (``scipy.sparse.coo`` …) and ``scipy.sparse``.

The scipy classes are never instantiated by the unpickler. Each one is replaced by a stub that
only records the pickled attribute dict; after loading, the stubs are rebuilt through scipy's
public constructors with a full format check (index ranges, ``indptr`` monotonicity), so no
scipy method ever runs on unvalidated attributes. Everything else is refused with a
:class:`~darec_jax.errors.DataError` that names the file and the refused ``module.name``.
Only pickle protocols 2-5 are supported for sparse matrices (RLMRec's files are protocol 4).
"""

from __future__ import annotations

import operator
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from darec_jax.errors import DataError

__all__ = ["ALLOWED_GLOBALS", "safe_load_pickle"]


class _Refused(Exception):
    """Raised inside the unpickler; turned into a DataError that names the file."""


def _latin1_encode(text: object, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 numpy pickles use it: ``encode(str, 'latin1')`` only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Refused(
            f"_codecs.encode(encoding={encoding!r}) (only encode(str, 'latin1') is allowed)"
        )
    return text.encode("latin-1")


# (module, name) -> the object the unpickler gets. numpy 1.x wrote "numpy.core.*", numpy 2.x
# writes "numpy._core.*"; both resolve to the numpy 2 objects without importing the deprecated
# numpy.core shim.
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("numpy._core", "numpy.core"):
    _NUMPY_GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
    _NUMPY_GLOBALS[(f"{_module}.multiarray", "scalar")] = _np_multiarray.scalar
    _NUMPY_GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _np_numeric._frombuffer


class _SparseStub:
    """Stand-in for a pickled scipy sparse object: records the attribute dict, runs nothing."""

    target: type = sp.coo_matrix  # the scipy class it stands for (set per subclass)
    fmt: str = "coo"  # its storage format: "coo", "csr" or "csc"

    def __setstate__(self, state: object) -> None:
        # Default object pickling stores either __dict__ or (__dict__, slots dict).
        if isinstance(state, tuple) and len(state) == 2:
            merged: dict[Any, Any] = {}
            for part in state:
                if part is not None:
                    if not isinstance(part, dict):
                        raise pickle.UnpicklingError("malformed sparse matrix state")
                    merged.update(part)
            state = merged
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("malformed sparse matrix state")
        self.__dict__["_pickled_state"] = state


_SPARSE_CLASSES: dict[str, type] = {
    "coo_matrix": sp.coo_matrix,
    "coo_array": sp.coo_array,
    "csr_matrix": sp.csr_matrix,
    "csr_array": sp.csr_array,
    "csc_matrix": sp.csc_matrix,
    "csc_array": sp.csc_array,
}
# (module, name) -> class name; current module names, the pre-1.8 ones, and the package.
_SPARSE_GLOBALS: dict[tuple[str, str], str] = {
    (module, name): name
    for name in _SPARSE_CLASSES
    for module in (f"scipy.sparse._{name[:3]}", f"scipy.sparse.{name[:3]}", "scipy.sparse")
}

#: Every ``module.name`` a dataset pickle may reference.
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    f"{module}.{name}" for module, name in (*_NUMPY_GLOBALS, *_SPARSE_GLOBALS)
)


class _AllowListUnpickler(pickle.Unpickler):
    """An Unpickler whose only reachable globals are the allow-list above."""

    def __init__(self, file: Any) -> None:
        super().__init__(file, encoding="latin1")  # latin1: numpy pickles written by Python 2
        self.stubs: list[_SparseStub] = []  # every stub instance this load created
        self._stub_classes: dict[str, type] = {}

    def _stub_class(self, name: str) -> type:
        """A stub class for scipy class ``name`` that registers each instance it creates."""
        if name not in self._stub_classes:
            created = self.stubs

            def __new__(cls: type, *args: Any, **kwargs: Any) -> _SparseStub:
                instance = object.__new__(cls)
                created.append(instance)
                return instance

            self._stub_classes[name] = type(
                f"_Stub_{name}",
                (_SparseStub,),
                {"target": _SPARSE_CLASSES[name], "fmt": name[:3], "__new__": __new__},
            )
        return self._stub_classes[name]

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[key]
        if key in _SPARSE_GLOBALS:
            return self._stub_class(_SPARSE_GLOBALS[key])
        raise _Refused(repr(f"{module}.{name}"))

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


def _as_index_array(value: object, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iu":
        raise ValueError(f"{what} must be a 1-D integer numpy array")
    return value


def _rebuild_sparse(stub: _SparseStub) -> sp.sparray | sp.spmatrix:
    """Build the real scipy object from a stub's recorded state, with full validation."""
    state = stub.__dict__.get("_pickled_state")
    if state is None:
        raise ValueError("sparse matrix has no state")
    target, fmt = type(stub).target, type(stub).fmt
    shape_value = state.get("_shape", state.get("shape"))
    if not isinstance(shape_value, tuple) or len(shape_value) != 2:
        raise ValueError(f"shape must be a 2-tuple, got {shape_value!r}")
    shape = tuple(operator.index(n) for n in shape_value)
    if min(shape) < 0:
        raise ValueError(f"negative shape {shape}")
    data = state.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 1 or data.dtype.kind not in "biufc":
        raise ValueError("data must be a 1-D numeric numpy array")
    if fmt == "coo":
        if "coords" in state:
            coords = state["coords"]
            if not isinstance(coords, tuple) or len(coords) != 2:
                raise ValueError("coords must be a pair of index arrays")
            row, col = coords
        else:
            row, col = state.get("row"), state.get("col")
        row = _as_index_array(row, "row")
        col = _as_index_array(col, "col")
        if not row.shape == col.shape == data.shape:
            raise ValueError("row, col and data have different lengths")
        # The COO constructor checks that every index lies in [0, shape).
        return target((data, (row, col)), shape=shape)
    indices = _as_index_array(state.get("indices"), "indices")
    indptr = _as_index_array(state.get("indptr"), "indptr")
    matrix = target((data, indices, indptr), shape=shape)
    # Index range, indptr length / monotonicity, before anything else touches the arrays.
    matrix.check_format(full_check=True)
    return matrix


def _replace_stubs(obj: Any, memo: dict[int, Any]) -> Any:
    """Swap stubs for scipy objects inside (nested) lists, tuples and dicts."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _SparseStub):
        memo[key] = result = _rebuild_sparse(obj)
        return result
    if isinstance(obj, list):
        memo[key] = obj
        obj[:] = [_replace_stubs(x, memo) for x in obj]
        return obj
    if isinstance(obj, dict):
        memo[key] = obj
        for k in list(obj):
            obj[k] = _replace_stubs(obj[k], memo)
        return obj
    if isinstance(obj, tuple):
        memo[key] = result = tuple(_replace_stubs(x, memo) for x in obj)
        return result
    return obj


def safe_load_pickle(path: str | os.PathLike[str]) -> object:
    """Unpickle a dataset file, admitting only numpy arrays and scipy sparse matrices.

    Args:
      path: the pickle file.

    Returns:
      The unpickled object: typically a ``scipy.sparse`` COO/CSR/CSC matrix or array, or a
      numpy array (or containers of them).

    Raises:
      DataError: the file is missing or unreadable; it references a global outside
        :data:`ALLOWED_GLOBALS` (the message names the refused ``module.name``; nothing it
        names is executed); it is truncated or corrupt; or a sparse matrix in it is invalid.
    """
    path = Path(path)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot open file ({exc})") from None
    with handle:
        unpickler = _AllowListUnpickler(handle)
        try:
            obj = unpickler.load()
        except _Refused as exc:
            raise DataError(
                f"{path}: refused to unpickle {exc}: dataset pickles may only hold "
                "numpy arrays and scipy sparse matrices (COO/CSR/CSC); pickles are untrusted "
                "input, so nothing else is loaded or executed"
            ) from None
        except Exception as exc:  # any failure of a corrupt pickle
            raise DataError(
                f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc})"
            ) from exc
    if unpickler.stubs:
        memo: dict[int, Any] = {}
        try:
            obj = _replace_stubs(obj, memo)
        except (ValueError, TypeError, OverflowError, MemoryError) as exc:
            raise DataError(f"{path}: invalid scipy sparse matrix ({exc})") from exc
        # A stub the walk did not reach (inside a set, an object array, another matrix's
        # attributes, ...) would be handed out unvalidated: refuse the file instead.
        if any(id(stub) not in memo for stub in unpickler.stubs):
            raise DataError(
                f"{path}: a scipy sparse matrix is stored where it cannot be validated "
                "(only top-level or inside lists, tuples and dicts is supported)"
            )
    return obj
