"""Fuzzing the dataset loader with untrusted files: mutated, truncated and forged pickles.

Every input either loads as a valid dataset or fails with a DataError naming the file; nothing
else escapes, nothing in a file runs (a forged pickle that would create a marker file through
``os.system`` / ``builtins.exec`` / ``subprocess`` never does), and huge declared sizes fail
without allocating them. The default run tries FUZZ_EXAMPLES inputs (200; the longer campaign:
``DAREC_FUZZ_EXAMPLES=20000 python -m pytest -q tests/test_fuzz_loader.py -s``), and the corpus
below keeps the interesting cases as fixed tests.
"""

import os
import pickle
import pickletools
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darec_jax.data.dataset import load_rlmrec_folder
from darec_jax.errors import DataError

FUZZ_EXAMPLES = int(os.environ.get("DAREC_FUZZ_EXAMPLES", "200"))
# The default run draws the same examples every time (a failure reproduces); the long campaign
# may draw fresh ones with DAREC_FUZZ_RANDOM=1.
DERANDOMIZE = os.environ.get("DAREC_FUZZ_RANDOM", "") != "1"
FILES = ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl", "usr_emb_np.pkl", "itm_emb_np.pkl")


def _valid_objects(protocol: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    users, items = 12, 9
    dense = (rng.random((users, items)) < 0.35).astype(np.float32)
    dense[np.arange(users), np.arange(users) % items] = 1.0  # every user has a train item
    val = sp.coo_matrix((rng.random((users, items)) < 0.1).astype(np.float32))
    tst = sp.coo_matrix((rng.random((users, items)) < 0.1).astype(np.float32))
    objs = {
        "trn_mat.pkl": sp.coo_matrix(dense),
        "val_mat.pkl": val,
        "tst_mat.pkl": tst,
        "usr_emb_np.pkl": rng.standard_normal((users, 5)).astype(np.float32),
        "itm_emb_np.pkl": rng.standard_normal((items, 5)).astype(np.float32),
    }
    return {k: pickle.dumps(v, protocol=protocol) for k, v in objs.items()}


VALID = {p: _valid_objects(p) for p in (2, 4, 5)}


def _forged(module: str, name: str, arg: str) -> bytes:
    """A protocol-2 pickle that calls module.name(arg) when loaded."""
    return (
        b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
        + pickle.dumps(arg, protocol=2)[2:-1] + b"\x85R."
    )  # fmt: skip


def _marker_payloads(marker: Path) -> list[bytes]:
    cmd = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w').close()"
    return [
        _forged("os", "system", cmd),
        _forged("posix", "system", cmd),
        _forged("builtins", "exec", code),
        _forged("builtins", "eval", code),
        _forged("subprocess", "getoutput", cmd),
        _forged("numpy", "load", str(marker)),
    ]


def _check_folder(folder: Path, marker: Path | None = None) -> str:
    """Load the folder; 'loaded' or 'refused' (a DataError naming a file); anything else fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_rlmrec_folder(folder)
    except DataError as exc:
        message = str(exc)
        assert any(name in message for name in FILES) or str(folder) in message, message
        outcome = "refused"
    else:
        # What loads is a valid dataset: ids in range, finite embeddings.
        assert data.train.users.max() < data.n_users and data.train.items.max() < data.n_items
        for emb in (data.user_emb, data.item_emb):
            assert emb is None or np.isfinite(emb).all()
        outcome = "loaded"
    if marker is not None:
        assert not marker.exists(), "a data file executed code"
    return outcome


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)


def _mutate(files: dict[str, bytes], target: str, mutation: str, position: float, payload: bytes):
    """``files[target]`` mutated: truncated, a byte flipped, bytes inserted or deleted, replaced,
    or with a piece of another file spliced in, at ``position`` (0..1) of its length."""
    blob = files[target]
    at = int(position * (len(blob) - 1))
    if mutation == "truncate":
        return blob[:at]
    if mutation == "flip":
        return blob[:at] + bytes([blob[at] ^ payload[0]]) + blob[at + 1 :]
    if mutation == "insert":
        return blob[:at] + payload + blob[at:]
    if mutation == "delete":
        return blob[:at] + blob[at + len(payload) :]
    if mutation == "random":
        return payload
    other = files[FILES[(FILES.index(target) + 1) % len(FILES)]]
    return blob[:at] + other[at:]


MUTATIONS = st.sampled_from(["truncate", "flip", "insert", "delete", "random", "splice"])


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    protocol=st.sampled_from([2, 4, 5]),
    target=st.sampled_from(FILES),
    mutation=MUTATIONS,
    position=st.floats(0.0, 1.0),
    payload=st.binary(min_size=1, max_size=64),
)
def test_mutated_pickles(tmp_path_factory, protocol, target, mutation, position, payload):
    files = dict(VALID[protocol])
    files[target] = _mutate(files, target, mutation, position, payload)
    folder = tmp_path_factory.mktemp("fuzz")
    _write(folder, files)
    _check_folder(folder)


@settings(max_examples=max(FUZZ_EXAMPLES // 4, 25), deadline=None, derandomize=DERANDOMIZE)
@given(
    target=st.sampled_from(FILES),
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
        | st.binary(max_size=8),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.tuples(inner, inner),
        max_leaves=12,
    ),
)  # fmt: skip
def test_pickles_of_other_objects(tmp_path_factory, target, value):
    files = dict(VALID[4])
    files[target] = pickle.dumps(value, protocol=4)
    folder = tmp_path_factory.mktemp("objects")
    _write(folder, files)
    assert _check_folder(folder) == "refused"


# ---------------------------------------------------------------------- the corpus


def _corpus(marker: Path) -> dict[str, tuple[str, bytes]]:
    rng = np.random.default_rng(1)
    cases: dict[str, tuple[str, bytes]] = {}
    for i, blob in enumerate(_marker_payloads(marker)):
        for target in ("trn_mat.pkl", "usr_emb_np.pkl"):
            cases[f"forged-{i}-{target}"] = (target, blob)
    huge = sp.coo_matrix(
        (np.ones(1, np.float32), (np.array([0]), np.array([0]))), shape=(10**12, 10**12)
    )
    cases["huge-declared-shape"] = ("trn_mat.pkl", pickle.dumps(huge, protocol=4))
    too_wide = sp.coo_matrix(
        (np.ones(1, np.float32), (np.array([0]), np.array([0]))), shape=(12, 10**10)
    )
    cases["huge-item-count"] = ("val_mat.pkl", pickle.dumps(too_wide, protocol=4))
    cases["object-array"] = ("usr_emb_np.pkl", pickle.dumps(np.array([object()] * 3), protocol=4))
    cases["complex-embeddings"] = (
        "itm_emb_np.pkl",
        pickle.dumps(rng.standard_normal((9, 5)).astype(np.complex64), protocol=4),
    )
    nan = rng.standard_normal((12, 5)).astype(np.float32)
    nan[3, 1] = np.nan
    cases["nan-embeddings"] = ("usr_emb_np.pkl", pickle.dumps(nan, protocol=4))
    inf = rng.standard_normal((9, 5)).astype(np.float32)
    inf[0, 0] = np.inf
    cases["inf-embeddings"] = ("itm_emb_np.pkl", pickle.dumps(inf, protocol=4))
    cases["3d-embeddings"] = ("usr_emb_np.pkl", pickle.dumps(np.zeros((12, 5, 2)), protocol=4))
    cases["empty-file"] = ("trn_mat.pkl", b"")
    cases["protocol-0"] = ("trn_mat.pkl", pickle.dumps([1, 2, 3], protocol=0))
    cases["dense-matrix"] = ("trn_mat.pkl", pickle.dumps(np.ones((12, 9)), protocol=4))
    negative = sp.coo_matrix((np.ones(1), (np.array([1]), np.array([0]))), shape=(12, 9))
    negative.row[0] = -1  # past scipy's constructor check, as a forged file would be
    cases["negative-index"] = ("tst_mat.pkl", pickle.dumps(negative, protocol=2))
    blob = VALID[4]["trn_mat.pkl"]
    cases["truncated-header"] = ("trn_mat.pkl", blob[:5])
    cases["no-stop-opcode"] = ("trn_mat.pkl", blob[:-1])
    ops = [op for op, _, _ in pickletools.genops(blob)]
    assert ops[-1].name == "STOP"
    return cases


@pytest.mark.parametrize("case", sorted(_corpus(Path("/nonexistent")).keys()))
def test_corpus(tmp_path, case):
    marker = tmp_path / "executed"
    target, blob = _corpus(marker)[case]
    files = dict(VALID[4])
    files[target] = blob
    _write(tmp_path / "data", files)
    assert _check_folder(tmp_path / "data", marker) == "refused"


def test_valid_folders_load(tmp_path):
    for protocol, files in VALID.items():
        _write(tmp_path / str(protocol), files)
        assert _check_folder(tmp_path / str(protocol)) == "loaded"


def test_seeded_mutations_reach_both_outcomes(tmp_path):
    """A fixed, seeded set of mutations (independent of hypothesis and of test order): every one
    loads as a valid dataset or is refused with a DataError naming the file, and both outcomes
    occur, so the campaign exercises the refusal paths and the loader's tolerance alike."""
    rng = np.random.default_rng(20261203)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(60):
        files = dict(VALID[int(rng.choice([2, 4, 5]))])
        target = FILES[int(rng.integers(len(FILES)))]
        files[target] = _mutate(
            files, target, ("truncate", "flip", "insert", "delete", "random", "splice")[i % 6],
            float(rng.random()), rng.bytes(int(rng.integers(1, 65))),
        )  # fmt: skip
        _write(tmp_path / str(i), files)
        outcomes[_check_folder(tmp_path / str(i))] += 1
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0, outcomes


class _ForgedDtype:
    """Pickles as numpy.dtype('f4') with forged flags in its state: numpy's own unpickling
    applies them, giving a float32 that claims to hold Python object references."""

    def __reduce__(self):
        return (np.dtype, ("f4", False, True), (3, "<", None, None, None, -1, -1, 63))


def test_forged_dtype_state_is_refused_and_float32_survives(tmp_path):
    from darec_jax.data.pickles import safe_load_pickle

    path = tmp_path / "dtype.pkl"
    path.write_bytes(pickle.dumps(_ForgedDtype(), protocol=2))
    with pytest.raises(DataError, match="malformed state"):
        safe_load_pickle(path)
    assert np.dtype("float32").flags == 0
    assert float(np.ones(4, np.float32).sum()) == 4.0
    # The canonical state of a real dtype (and arrays of it) still loads.
    path.write_bytes(pickle.dumps(np.arange(6, dtype=">f8").reshape(2, 3), protocol=2))
    loaded = safe_load_pickle(path)
    assert loaded.dtype == np.dtype(">f8") and loaded.tolist() == [[0, 1, 2], [3, 4, 5]]
