"""Safe unpickling of dataset files (docs/protocol.md: pickles are untrusted input).

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


# numpy's own unpickling runs ``dtype.__setstate__`` and ``ndarray.__setstate__`` on whatever
# state the file holds; a forged dtype state is applied as given: flags that mark the dtype as
# holding Python object references, on a float32 whose bytes are file data, make numpy treat
# those bytes as object pointers (seen: such an array fails when freed). So no numpy
# constructor or __setstate__ sees file data unchecked: dtypes are recorded by a proxy and
# rebuilt from their type string, accepted only when the pickled state is the canonical state
# of that dtype; arrays are rebuilt from their bytes after a size check.

_DTYPE_KINDS = "biufc"  # bool, signed / unsigned integers, floats, complex


class _DtypeProxy:
    """Records a pickled ``numpy.dtype(spec, align, copy)`` and the state BUILD gives it."""

    def __init__(self, spec: object, align: object = False, copy: object = False) -> None:
        self.spec, self.align, self.state = spec, align, None

    def __setstate__(self, state: object) -> None:
        self.state = state

    def resolve(self) -> np.dtype:
        if not isinstance(self.spec, str) or len(self.spec) > 4:
            raise _Refused(f"numpy dtype {self.spec!r} (only numeric type codes)")
        try:
            dtype = np.dtype(self.spec)
        except TypeError:
            raise _Refused(f"numpy dtype {self.spec!r}") from None
        if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype:
            raise _Refused(f"numpy dtype {self.spec!r} (only bool / integer / float / complex)")
        if self.state is not None:
            order = self.state[1] if isinstance(self.state, tuple) and len(self.state) > 1 else ""
            if order not in ("<", ">", "|", "="):
                raise _Refused(f"numpy dtype {self.spec!r} with a malformed state")
            dtype = dtype.newbyteorder(order)
            if self.state != dtype.__reduce__()[2]:
                raise _Refused(f"numpy dtype {self.spec!r} with a malformed state")
        return dtype


def _dtype_of(value: object) -> np.dtype:
    if isinstance(value, _DtypeProxy):
        return value.resolve()
    raise pickle.UnpicklingError("an array's dtype is not a numpy dtype")


def _checked_shape(shape: object) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 8:
        raise pickle.UnpicklingError("malformed array shape")
    dims = tuple(operator.index(n) for n in shape)
    if any(n < 0 for n in dims):
        raise pickle.UnpicklingError(f"negative array shape {dims}")
    return dims


def _array_from_bytes(raw: object, dtype: np.dtype, shape: tuple[int, ...], fortran: bool):
    if isinstance(raw, str):  # protocol 2 / Python 2: bytes stored as latin-1 text
        raw = raw.encode("latin-1")
    if isinstance(raw, pickle.PickleBuffer):
        raw = bytes(raw.raw())
    if not isinstance(raw, bytes | bytearray):
        raise pickle.UnpicklingError("array data is not bytes")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != len(raw):  # Python ints: a huge declared shape cannot wrap
        raise pickle.UnpicklingError(
            f"array of shape {shape} and dtype {dtype} needs {count * dtype.itemsize} bytes, "
            f"the file holds {len(raw)}"
        )
    flat = np.frombuffer(bytes(raw), dtype=dtype)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")


class _ArrayType:
    """What the global ``numpy.ndarray`` resolves to: accepted only as ``_reconstruct``'s type."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise _Refused("'numpy.ndarray' called directly")


class _ArrayProxy:
    """Records a pickled array (``_reconstruct`` + BUILD) until it is rebuilt from its bytes."""

    def __setstate__(self, state: object) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed array state")
        _, shape, dtype, fortran, raw = state if len(state) == 5 else (1, *state)
        dtype = _dtype_of(dtype)
        self.__dict__["array"] = _array_from_bytes(raw, dtype, _checked_shape(shape), bool(fortran))


def _reconstruct(subtype: object, shape: object, typecode: object) -> _ArrayProxy:
    if subtype is not _ArrayType:
        raise _Refused("numpy _reconstruct of a type other than numpy.ndarray")
    return _ArrayProxy()


def _scalar(dtype: object, raw: object = None) -> np.generic:
    dtype = _dtype_of(dtype)
    return _array_from_bytes(raw, dtype, (), False)[()]


def _frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"array order {order!r}")
    return _array_from_bytes(buf, _dtype_of(dtype), _checked_shape(shape), order == "F")


# (module, name) -> the object the unpickler gets. numpy 1.x wrote "numpy.core.*", numpy 2.x
# writes "numpy._core.*"; both resolve to the checked stand-ins above.
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _ArrayType,
    ("numpy", "dtype"): _DtypeProxy,
    ("_codecs", "encode"): _latin1_encode,
}
for _module in ("numpy._core", "numpy.core"):
    _NUMPY_GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _reconstruct
    _NUMPY_GLOBALS[(f"{_module}.multiarray", "scalar")] = _scalar
    _NUMPY_GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _frombuffer


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
    """Swap stubs for scipy objects and array proxies for their arrays inside (nested) lists,
    tuples and dicts (and a sparse stub's recorded attributes)."""
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, _ArrayProxy):
        if "array" not in obj.__dict__:
            raise ValueError("an array without data")
        memo[key] = result = obj.__dict__["array"]
        return result
    if isinstance(obj, _DtypeProxy):
        memo[key] = result = obj.resolve()
        return result
    if isinstance(obj, _SparseStub):
        state = obj.__dict__.get("_pickled_state")
        if isinstance(state, dict):
            for k in list(state):
                state[k] = _replace_stubs(state[k], memo)
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


def _holds_proxy(obj: Any, depth: int = 0) -> bool:
    """Whether an unresolved proxy is left (e.g. inside an object array)."""
    if isinstance(obj, _ArrayProxy | _DtypeProxy | _SparseStub):
        return True
    if depth > 50:
        return False
    if isinstance(obj, list | tuple):
        return any(_holds_proxy(x, depth + 1) for x in obj)
    if isinstance(obj, dict):
        return any(_holds_proxy(x, depth + 1) for x in obj.values())
    return False


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
    memo: dict[int, Any] = {}
    try:
        obj = _replace_stubs(obj, memo)
    except _Refused as exc:
        raise DataError(
            f"{path}: refused to unpickle {exc}: dataset pickles may only hold numpy arrays "
            "and scipy sparse matrices (COO/CSR/CSC)"
        ) from None
    except (ValueError, TypeError, OverflowError, MemoryError) as exc:
        kind = "scipy sparse matrix" if unpickler.stubs else "numpy array"
        raise DataError(f"{path}: invalid {kind} ({exc})") from exc
    if _holds_proxy(obj):
        raise DataError(
            f"{path}: a numpy array is stored where it cannot be validated (only top-level or "
            "inside lists, tuples and dicts is supported)"
        )
    if unpickler.stubs:
        # A stub the walk did not reach (inside a set, an object array, another matrix's
        # attributes, ...) would be handed out unvalidated: refuse the file instead.
        if any(id(stub) not in memo for stub in unpickler.stubs):
            raise DataError(
                f"{path}: a scipy sparse matrix is stored where it cannot be validated "
                "(only top-level or inside lists, tuples and dicts is supported)"
            )
    return obj
