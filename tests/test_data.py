"""Tests of darec_jax.data: safe unpickling, the RLMRec loader, the planted world, downloads.

No test touches the internet: downloads are served by a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from darec_jax.data import (
    DATASETS,
    InteractionData,
    Split,
    SyntheticConfig,
    default_cache_dir,
    load_dataset,
    load_rlmrec_folder,
    make_planted_world,
    safe_load_pickle,
)
from darec_jax.data.pickles import ALLOWED_GLOBALS
from darec_jax.errors import ConfigError, DataError
from tests.toy import SHARED_DATA

# ----------------------------------------------------------------------------- helpers

N_USERS, N_ITEMS = 4, 6
# Disjoint train / val / test interactions of a tiny dataset: (user, item) pairs.
TRAIN = [(0, 0), (0, 3), (1, 1), (2, 2), (2, 5), (3, 4)]
VAL = [(0, 1), (1, 2), (3, 5)]
TEST = [(0, 2), (2, 0), (3, 0)]


def _coo(pairs: list[tuple[int, int]], shape: tuple[int, int] = (N_USERS, N_ITEMS)):
    rows = np.array([p[0] for p in pairs], dtype=np.int32)
    cols = np.array([p[1] for p in pairs], dtype=np.int32)
    return sp.coo_matrix((np.ones(len(pairs)), (rows, cols)), shape=shape)


def _dump(path: Path, obj: object, protocol: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def _make_folder(
    folder: Path,
    train: object = None,
    val: object = None,
    test: object = None,
    user_emb: object = None,
    item_emb: object = None,
) -> Path:
    """A small RLMRec folder; matrices default to TRAIN/VAL/TEST, embeddings to none."""
    _dump(folder / "trn_mat.pkl", _coo(TRAIN) if train is None else train)
    _dump(folder / "val_mat.pkl", _coo(VAL) if val is None else val)
    _dump(folder / "tst_mat.pkl", _coo(TEST) if test is None else test)
    if user_emb is not None:
        _dump(folder / "usr_emb_np.pkl", user_emb)
    if item_emb is not None:
        _dump(folder / "itm_emb_np.pkl", item_emb)
    return folder


def _embeddings(rows: int, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim))


def _pairs(split: Split) -> list[tuple[int, int]]:
    return list(zip(split.users.tolist(), split.items.tolist(), strict=True))


# ----------------------------------------------------------------------------- real data


@pytest.mark.parametrize(
    ("name", "users", "items", "sizes"),
    [
        ("yelp", 11091, 11010, (166620, 55479, 55436)),
        ("amazon", 11000, 9332, (120464, 40290, 40106)),
    ],
)
def test_real_rlmrec_folder(name: str, users: int, items: int, sizes: tuple[int, ...]) -> None:
    folder = SHARED_DATA / name
    if not (folder / "trn_mat.pkl").is_file():
        pytest.skip(f"{folder} not present")
    data = load_rlmrec_folder(folder)
    assert (data.name, data.n_users, data.n_items) == (name, users, items)
    assert (data.train.nnz, data.val.nnz, data.test.nnz) == sizes
    assert data.train.users.dtype == np.int32 and data.train.items.dtype == np.int32
    assert data.user_emb is None and data.item_emb is None
    # The training order is RLMRec's: coo_matrix((mat != 0).astype(float32)) (trusted file).
    with open(folder / "trn_mat.pkl", "rb") as fh:
        reference = sp.coo_matrix((pickle.load(fh) != 0).astype(np.float32))
    np.testing.assert_array_equal(data.train.users, reference.row)
    np.testing.assert_array_equal(data.train.items, reference.col)


# ----------------------------------------------------------------------------- safe unpickling


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize(
    "obj",
    [
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.ones((3, 2), dtype=np.float32)),
        np.float32(2.5),
        sp.coo_matrix(np.eye(3)),
        sp.coo_array(np.eye(3)),
        sp.csr_matrix(np.eye(3)),
        sp.csr_array(np.eye(3)),
        sp.csc_matrix(np.eye(3)),
        sp.csc_array(np.eye(3)),
    ],
    ids=lambda o: type(o).__name__,
)
def test_safe_load_pickle_round_trips(tmp_path: Path, protocol: int, obj: object) -> None:
    loaded = safe_load_pickle(_dump(tmp_path / "x.pkl", obj, protocol))
    assert type(loaded) is type(obj)
    if sp.issparse(obj):
        assert loaded.shape == obj.shape and (loaded != obj).nnz == 0
    else:
        np.testing.assert_array_equal(loaded, obj)
        assert loaded.dtype == obj.dtype


def test_safe_load_pickle_sparse_inside_containers(tmp_path: Path) -> None:
    obj = {"a": [sp.csr_matrix(np.eye(2))], "b": (sp.coo_matrix(np.eye(2)), np.zeros(2))}
    loaded = safe_load_pickle(_dump(tmp_path / "x.pkl", obj))
    assert isinstance(loaded["a"][0], sp.csr_matrix)
    assert isinstance(loaded["b"][0], sp.coo_matrix)
    assert (loaded["b"][0] != sp.eye(2)).nnz == 0


def test_allow_list_is_small() -> None:
    # Only numpy / scipy reconstruction paths, plus the latin-1 _codecs.encode numpy needs.
    modules = {g.rsplit(".", 1)[0] for g in ALLOWED_GLOBALS}
    assert all(m.startswith(("numpy", "scipy.sparse")) or m == "_codecs" for m in modules)
    assert "builtins.eval" not in ALLOWED_GLOBALS and "posix.system" not in ALLOWED_GLOBALS


class _Exploit:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refused_class_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _dump(tmp_path / "evil.pkl", _Exploit(marker))
    with pytest.raises(DataError) as info:
        safe_load_pickle(path)
    assert f"{os.system.__module__}.system" in str(info.value)  # posix.system on Linux
    assert "evil.pkl" in str(info.value)
    assert not marker.exists()


def test_refused_class_inside_a_dataset_folder(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _make_folder(tmp_path / "ds", val=[_coo(VAL), _Exploit(marker)])
    with pytest.raises(DataError, match="system") as info:
        load_rlmrec_folder(folder)
    assert "val_mat.pkl" in str(info.value)
    assert not marker.exists()


def test_codecs_encode_only_latin1(tmp_path: Path) -> None:
    # A hand-made pickle calling _codecs.encode("x", "rot13"): refused although _codecs.encode
    # is on the allow-list (only its latin-1 use by numpy is admitted).
    payload = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    path = tmp_path / "codec.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="latin1"):
        safe_load_pickle(path)


def test_truncated_pickle(tmp_path: Path) -> None:
    full = pickle.dumps(_coo(TRAIN), protocol=4)
    path = tmp_path / "trunc.pkl"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="truncated") as info:
        safe_load_pickle(path)
    assert "trunc.pkl" in str(info.value)


def test_garbage_and_missing_pickles(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match="garbage.pkl"):
        safe_load_pickle(path)
    with pytest.raises(DataError, match="not found"):
        safe_load_pickle(tmp_path / "nope.pkl")


# ----------------------------------------------------------------------------- loader


def test_small_folder_loads(tmp_path: Path) -> None:
    folder = _make_folder(
        tmp_path / "tiny", user_emb=_embeddings(N_USERS), item_emb=_embeddings(N_ITEMS)
    )
    data = load_rlmrec_folder(folder)
    assert isinstance(data, InteractionData)
    assert (data.name, data.n_users, data.n_items) == ("tiny", N_USERS, N_ITEMS)
    assert _pairs(data.train) == sorted(TRAIN)
    assert _pairs(data.val) == sorted(VAL) and _pairs(data.test) == sorted(TEST)
    assert data.user_emb.dtype == np.float32 and data.user_emb.shape == (N_USERS, 3)
    np.testing.assert_allclose(data.item_emb, _embeddings(N_ITEMS), rtol=1e-6)
    assert data.source == str(folder.resolve())
    assert data.has_embeddings


def test_binarisation_and_row_major_order(tmp_path: Path) -> None:
    # Unsorted entries, a duplicate (summed), an explicit zero (dropped), values other than 1,
    # and CSR storage: the split is the set of non-zero pairs, row-major.
    rows = np.array([2, 0, 2, 0, 1, 3, 1])
    cols = np.array([5, 3, 2, 3, 1, 4, 0])
    vals = np.array([1.0, 2.0, 4.0, 1.0, 0.0, 7.0, -1.0])
    train = sp.coo_matrix((vals, (rows, cols)), shape=(N_USERS, N_ITEMS))
    folder = _make_folder(tmp_path / "b", train=train.tocsr())
    data = load_rlmrec_folder(folder)
    assert _pairs(data.train) == [(0, 3), (1, 0), (2, 2), (2, 5), (3, 4)]


def test_missing_files(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "m")
    (folder / "val_mat.pkl").unlink()
    (folder / "tst_mat.pkl").unlink()
    with pytest.raises(DataError) as info:
        load_rlmrec_folder(folder)
    message = str(info.value)
    assert "val_mat.pkl" in message and "tst_mat.pkl" in message and "must contain" in message
    with pytest.raises(DataError, match="not a folder"):
        load_rlmrec_folder(tmp_path / "does-not-exist")


def test_require_embeddings(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "e", user_emb=_embeddings(N_USERS))
    data = load_rlmrec_folder(folder)  # optional: loads what is there
    assert data.user_emb is not None and data.item_emb is None and not data.has_embeddings
    with pytest.raises(DataError, match=r"itm_emb_np.pkl \(without LLM embeddings.*--method none"):
        load_rlmrec_folder(folder, require_embeddings=True)


def test_wrong_val_shape(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "s", val=_coo(VAL, shape=(N_USERS, N_ITEMS + 2)))
    with pytest.raises(DataError) as info:
        load_rlmrec_folder(folder)
    message = str(info.value)
    assert "val_mat.pkl" in message
    assert str((N_USERS, N_ITEMS + 2)) in message and str((N_USERS, N_ITEMS)) in message


def test_embedding_row_count_mismatch(tmp_path: Path) -> None:
    folder = _make_folder(
        tmp_path / "r", user_emb=_embeddings(N_USERS), item_emb=_embeddings(N_ITEMS - 1)
    )
    with pytest.raises(DataError) as info:
        load_rlmrec_folder(folder)
    message = str(info.value)
    assert "itm_emb_np.pkl" in message
    assert str((N_ITEMS - 1, 3)) in message and str((N_USERS, N_ITEMS)) in message


def test_nan_embeddings(tmp_path: Path) -> None:
    emb = _embeddings(N_USERS)
    emb[0, 0], emb[2, 1], emb[3, 2] = np.nan, np.nan, np.inf
    folder = _make_folder(tmp_path / "n", user_emb=emb, item_emb=_embeddings(N_ITEMS))
    with pytest.raises(DataError, match=r"3 non-finite value\(s\) \(2 NaN, 1 infinite\)"):
        load_rlmrec_folder(folder)


@pytest.mark.parametrize(
    "bad",
    [np.ones((N_USERS, 3), dtype=np.int64), np.ones(N_USERS), _coo(TRAIN)],
    ids=["int", "1-D", "sparse"],
)
def test_embeddings_must_be_2d_float_arrays(tmp_path: Path, bad: object) -> None:
    folder = _make_folder(tmp_path / "f", user_emb=bad)
    with pytest.raises(DataError, match="usr_emb_np.pkl"):
        load_rlmrec_folder(folder)


@pytest.mark.parametrize(("row", "word"), [(N_USERS + 3, "exceeds"), (-1, "negative")])
def test_out_of_range_and_negative_indices(tmp_path: Path, row: int, word: str) -> None:
    train = _coo(TRAIN)
    train.row[1] = row  # bypasses scipy's constructor check, as a crafted file would
    folder = _make_folder(tmp_path / "o", train=train)
    with pytest.raises(DataError, match=word) as info:
        load_rlmrec_folder(folder)
    assert "trn_mat.pkl" in str(info.value)


def test_empty_train_split(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "z", train=sp.coo_matrix((N_USERS, N_ITEMS)))
    with pytest.raises(DataError, match="training split is empty"):
        load_rlmrec_folder(folder)


def test_matrix_must_be_sparse(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "d", train=np.ones((N_USERS, N_ITEMS)))
    with pytest.raises(DataError, match="scipy sparse"):
        load_rlmrec_folder(folder)


def test_overlap_warns_with_count(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path / "w", val=_coo(VAL + TRAIN[:2]), test=_coo(TEST + VAL[:1]))
    with pytest.warns(UserWarning, match="3 interaction") as record:
        data = load_rlmrec_folder(folder)
    assert "train/val: 2" in str(record[0].message) and "val/test: 1" in str(record[0].message)
    assert data.val.nnz == len(VAL) + 2  # loading still succeeds


def test_users_without_training_interactions_are_allowed(tmp_path: Path) -> None:
    train = _coo([p for p in TRAIN if p[0] != 3])
    data = load_rlmrec_folder(_make_folder(tmp_path / "c", train=train))
    assert data.n_users == N_USERS and 3 not in data.train.users


# ----------------------------------------------------------------------------- planted world


@pytest.fixture(scope="module")
def world() -> InteractionData:
    return make_planted_world(SyntheticConfig())


def _all_pairs(data: InteractionData) -> tuple[np.ndarray, np.ndarray]:
    users = np.concatenate([data.train.users, data.val.users, data.test.users])
    items = np.concatenate([data.train.items, data.val.items, data.test.items])
    return users, items


def test_world_shapes_and_sparsity(world: InteractionData) -> None:
    cfg = SyntheticConfig()
    assert (world.name, world.n_users, world.n_items) == ("synthetic", cfg.n_users, cfg.n_items)
    assert world.user_emb.shape == (cfg.n_users, cfg.llm_dim)
    assert world.item_emb.shape == (cfg.n_items, cfg.llm_dim)
    assert world.user_emb.dtype == np.float32 and np.isfinite(world.user_emb).all()
    users, items = _all_pairs(world)
    per_user = np.bincount(users, minlength=world.n_users)
    assert abs(per_user.mean() - cfg.interactions_per_user) < 0.5
    assert per_user.min() >= cfg.min_interactions and per_user.max() <= cfg.n_items // 4
    assert per_user.max() >= 4 * cfg.interactions_per_user  # heavy tail
    # Sampled without replacement: no (user, item) pair twice, within or across splits.
    keys = users.astype(np.int64) * world.n_items + items
    assert np.unique(keys).size == keys.size
    assert world.source.startswith("synthetic(seed=0, ")


def test_world_split_proportions(world: InteractionData) -> None:
    total = world.train.nnz + world.val.nnz + world.test.nnz
    assert world.train.nnz / total == pytest.approx(0.6, abs=0.02)
    assert world.val.nnz / total == pytest.approx(0.2, abs=0.02)
    assert world.test.nnz / total == pytest.approx(0.2, abs=0.02)
    for split in (world.train, world.val, world.test):
        assert np.bincount(split.users, minlength=world.n_users).min() >= 1
        keys = split.users.astype(np.int64) * world.n_items + split.items
        assert np.all(np.diff(keys) > 0)  # row-major, like the loader


def test_world_is_deterministic(world: InteractionData) -> None:
    again = make_planted_world(SyntheticConfig(seed=0))
    other = make_planted_world(SyntheticConfig(seed=1))
    for a, b in ((world.train, again.train), (world.val, again.val), (world.test, again.test)):
        np.testing.assert_array_equal(a.users, b.users)
        np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(world.user_emb, again.user_emb)
    np.testing.assert_array_equal(world.item_emb, again.item_emb)
    assert not np.array_equal(world.train.items, other.train.items[: world.train.nnz])
    assert not np.allclose(world.user_emb, other.user_emb)


def test_popularity_is_skewed(world: InteractionData) -> None:
    _, items = _all_pairs(world)
    degree = np.sort(np.bincount(items, minlength=world.n_items))[::-1]
    top_decile = degree[: world.n_items // 10].sum() / degree.sum()
    assert top_decile > 0.2  # uniform popularity would give about 0.1


def test_text_signal_switch() -> None:
    # A smaller world for speed. Turning the text signal off keeps the interactions and
    # removes what the embeddings know about them.
    small = SyntheticConfig(n_users=600, n_items=500, llm_dim=32, seed=3)
    on = make_planted_world(small)
    off = make_planted_world(dataclasses.replace(small, text_signal=False))
    np.testing.assert_array_equal(on.train.items, off.train.items)
    np.testing.assert_array_equal(on.test.users, off.test.users)
    assert on.user_emb.shape == off.user_emb.shape

    def gap(data: InteractionData) -> float:
        """Mean text similarity of interacting pairs minus that of random pairs."""
        u, i = _all_pairs(data)
        rng = np.random.default_rng(0)
        ru, ri = rng.integers(data.n_users, size=u.size), rng.integers(data.n_items, size=u.size)
        sim = lambda a, b: np.sum(data.user_emb[a] * data.item_emb[b], axis=1).mean()
        return float(sim(u, i) - sim(ru, ri))

    assert gap(on) > 5.0 * max(abs(gap(off)), 0.05)


def test_count_knob_moves_the_mean() -> None:
    cfg = SyntheticConfig(n_users=800, n_items=600, interactions_per_user=14.0, seed=2)
    users, _ = _all_pairs(make_planted_world(cfg))
    assert np.bincount(users, minlength=cfg.n_users).mean() == pytest.approx(14.0, abs=1.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"n_users": 0},
        {"interactions_per_user": 4.0},
        {"min_interactions": 2},
        {"n_items": 12},  # n_items // 4 = 3 < min_interactions
        {"temperature": 0.0},
        {"text_noise": -1.0},
    ],
)
def test_bad_synthetic_config(bad: dict) -> None:
    with pytest.raises(ConfigError):
        SyntheticConfig(**bad)


# ----------------------------------------------------------------------------- registry


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("netflix", cache_dir=tmp_path)
    assert all(name in str(info.value) for name in DATASETS)


def test_load_synthetic_by_name() -> None:
    cfg = SyntheticConfig(n_users=100, n_items=80, llm_dim=8)
    data = load_dataset("synthetic", synthetic=cfg)
    assert (data.n_users, data.n_items, data.user_emb.shape[1]) == (100, 80, 8)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DAREC_DATA_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DAREC_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "darec_jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "darec_jax"


def test_data_dir_direct_and_nested(tmp_path: Path) -> None:
    _make_folder(tmp_path / "root" / "yelp")
    direct = load_dataset("yelp", data_dir=tmp_path / "root" / "yelp", download=False)
    nested = load_dataset("yelp", data_dir=tmp_path / "root", download=False)
    assert direct.name == nested.name == "yelp"
    assert _pairs(direct.train) == _pairs(nested.train) == sorted(TRAIN)
    with pytest.raises(DataError, match="neither"):
        load_dataset("amazon", data_dir=tmp_path / "root")


# ----------------------------------------------------------------------------- downloads


class _Routes(dict):
    """path -> bytes served, and every request's (path, Range header) in ``ranges``."""

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[str, str | None]] = []


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes``: path -> bytes, with HTTP Range requests (206) except on paths
    ending in 'norange.zip'. Paths ending in 'short.zip' lie about their length and hang up
    early (a truncated transfer); 'flaky.zip' does so on its first request only; 'slow.zip'
    waits 3 s before answering. Every request's Range header is logged in ``routes.ranges``."""

    def do_GET(self) -> None:
        body = self.server.routes.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        if self.path.endswith("slow.zip"):
            time.sleep(3)
        wanted = self.headers.get("Range")
        self.server.routes.ranges.append((self.path, wanted))
        start = 0
        if wanted and not self.path.endswith("norange.zip"):
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        first = sum(1 for path, _ in self.server.routes.ranges if path == self.path) == 1
        truncated = self.path.endswith("short.zip") or (self.path.endswith("flaky.zip") and first)
        rest = body[start:]
        self.close_connection = True
        try:
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            self.wfile.write(rest[: len(rest) // 2] if truncated else rest)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (time-out test)
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[str, dict[str, bytes]]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = _Routes()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.routes
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/data.zip"


def _archive(members: dict[str, object | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, obj in members.items():
            zf.writestr(name, obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=4))
    return buffer.getvalue()


def _rlmrec_archive(prefix: str = "data/") -> bytes:
    members: dict[str, object | bytes] = {}
    for name in ("yelp", "amazon"):
        members[f"{prefix}{name}/trn_mat.pkl"] = _coo(TRAIN)
        members[f"{prefix}{name}/val_mat.pkl"] = _coo(VAL)
        members[f"{prefix}{name}/tst_mat.pkl"] = _coo(TEST)
        members[f"{prefix}{name}/usr_emb_np.pkl"] = _embeddings(N_USERS)
        members[f"{prefix}{name}/itm_emb_np.pkl"] = _embeddings(N_ITEMS)
    members["__MACOSX/data/yelp/trn_mat.pkl"] = b"resource fork junk"
    return _archive(members)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_download_nested_archive(server, tmp_path: Path) -> None:
    base, routes = server
    routes["/rlmrec/data.zip"] = _rlmrec_archive("data/")
    cache = tmp_path / "cache"
    data = load_dataset(
        "yelp",
        cache_dir=cache,
        url=f"{base}/rlmrec/data.zip",
        require_embeddings=True,
        progress=False,
    )
    assert (data.name, data.n_users, data.n_items) == ("yelp", N_USERS, N_ITEMS)
    assert data.has_embeddings and _pairs(data.train) == sorted(TRAIN)
    assert (cache / "data.zip").read_bytes() == routes["/rlmrec/data.zip"]
    assert sorted(p.name for p in (cache / "yelp").iterdir()) == [
        "itm_emb_np.pkl",
        "trn_mat.pkl",
        "tst_mat.pkl",
        "usr_emb_np.pkl",
        "val_mat.pkl",
    ]
    assert not (cache / "amazon").exists()  # only the dataset asked for is unpacked
    assert _leftovers(cache) == []  # no temporary file or folder left
    # Second dataset: from the cached archive, with no network at all.
    amazon = load_dataset("amazon", cache_dir=cache, url=_closed_port_url(), progress=False)
    assert amazon.train.nnz == len(TRAIN)
    # And the cached folder itself needs no archive.
    (cache / "data.zip").unlink()
    assert load_dataset("yelp", cache_dir=cache, url=_closed_port_url()).n_items == N_ITEMS


def test_download_flat_archive(server, tmp_path: Path) -> None:
    base, routes = server
    routes["/data.zip"] = _rlmrec_archive("")
    data = load_dataset("amazon", cache_dir=tmp_path, url=f"{base}/data.zip", progress=False)
    assert data.val.nnz == len(VAL) and (tmp_path / "amazon" / "trn_mat.pkl").is_file()


def test_truncated_download_keeps_only_the_partial_file(server, tmp_path: Path) -> None:
    base, routes = server
    routes["/short.zip"] = _rlmrec_archive()
    with pytest.raises(DataError, match="transfer incomplete") as info:
        load_dataset("yelp", cache_dir=tmp_path, url=f"{base}/short.zip", progress=False)
    assert "next attempt resumes" in str(info.value)
    # No data.zip: only the hidden partial file, for the next attempt.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".data.zip.partial"]
    assert 0 < (tmp_path / ".data.zip.partial").stat().st_size < len(routes["/short.zip"])


def test_interrupted_download_resumes(server, tmp_path: Path) -> None:
    base, routes = server
    archive = _rlmrec_archive()
    routes["/flaky.zip"] = archive
    url = f"{base}/flaky.zip"
    with pytest.raises(DataError, match="resumes"):
        load_dataset("yelp", cache_dir=tmp_path, url=url, progress=False)
    kept = (tmp_path / ".data.zip.partial").stat().st_size
    data = load_dataset("yelp", cache_dir=tmp_path, url=url, progress=False)
    assert data.train.nnz == len(TRAIN)
    assert (tmp_path / "data.zip").read_bytes() == archive
    ranges = [r for path, r in routes.ranges if path == "/flaky.zip"]
    assert ranges == [None, f"bytes={kept}-"]  # the second request asked only for the rest
    assert _leftovers(tmp_path) == []


def test_server_without_ranges_starts_over(server, tmp_path: Path) -> None:
    base, routes = server
    archive = _rlmrec_archive()
    routes["/norange.zip"] = archive
    (tmp_path / ".data.zip.partial").write_bytes(b"stale bytes from another file")
    data = load_dataset("yelp", cache_dir=tmp_path, url=f"{base}/norange.zip", progress=False)
    assert data.val.nnz == len(VAL) and (tmp_path / "data.zip").read_bytes() == archive


def test_size_and_checksum(server, tmp_path: Path) -> None:
    import hashlib

    from darec_jax.data.download import download_archive

    base, routes = server
    archive = _rlmrec_archive()
    routes["/data.zip"] = archive
    url = f"{base}/data.zip"
    with pytest.raises(DataError, match="SHA-256 is"):
        download_archive(url, tmp_path / "a.zip", sha256="0" * 64, progress=False)
    with pytest.raises(DataError, match=f"has {len(archive)} bytes, expected 5"):
        download_archive(url, tmp_path / "a.zip", size=5, progress=False)
    assert list(tmp_path.iterdir()) == []  # a complete but wrong file is removed
    good = hashlib.sha256(archive).hexdigest()
    path = download_archive(url, tmp_path / "a.zip", size=len(archive), sha256=good, progress=False)
    assert path.read_bytes() == archive


def test_timeout(server, tmp_path: Path) -> None:
    from darec_jax.data.download import download_archive

    base, routes = server
    routes["/slow.zip"] = _rlmrec_archive()
    with pytest.raises(DataError, match="timed out"):
        download_archive(f"{base}/slow.zip", tmp_path / "a.zip", timeout=0.5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error(server, tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DataError, match="404") as info:
        load_dataset("yelp", cache_dir=tmp_path, url=f"{base}/missing.zip", progress=False)
    assert f"{base}/missing.zip" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_not_a_zip(server, tmp_path: Path) -> None:
    base, routes = server
    routes["/data.zip"] = b"<html>a captive portal</html>"
    with pytest.raises(DataError, match="not a zip"):
        load_dataset("yelp", cache_dir=tmp_path, url=f"{base}/data.zip", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_archive_without_the_dataset(server, tmp_path: Path) -> None:
    base, routes = server
    routes["/data.zip"] = _rlmrec_archive()
    with pytest.raises(DataError, match="no steam/trn_mat.pkl") as info:
        load_dataset("steam", cache_dir=tmp_path, url=f"{base}/data.zip", progress=False)
    assert "amazon" in str(info.value) and "yelp" in str(info.value)
    assert not (tmp_path / "steam").exists() and _leftovers(tmp_path) == []


def test_zip_slip_is_refused(server, tmp_path: Path) -> None:
    base, routes = server
    routes["/data.zip"] = _archive(
        {
            "data/yelp/trn_mat.pkl": _coo(TRAIN),
            "data/yelp/../../../escaped.pkl": b"outside",
        }
    )
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="leaves the dataset folder"):
        load_dataset("yelp", cache_dir=cache, url=f"{base}/data.zip", progress=False)
    assert not list(tmp_path.rglob("escaped.pkl"))
    assert not (cache / "yelp").exists() and _leftovers(cache) == []


def test_offline_message(tmp_path: Path) -> None:
    url = _closed_port_url()
    with pytest.raises(DataError) as info:
        load_dataset("yelp", cache_dir=tmp_path, url=url, require_embeddings=True, timeout=5)
    message = str(info.value)
    assert "could not be downloaded" in message and url in message
    for needed in ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl", "usr_emb_np.pkl", "itm_emb_np.pkl"):
        assert needed in message
    assert str(tmp_path / "yelp") in message
    assert "--data-dir" in message and "DAREC_DATA_DIR" in message
    assert _leftovers(tmp_path) == [] and not (tmp_path / "data.zip").exists()


def test_no_download_when_disabled(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="download=False") as info:
        load_dataset("amazon", cache_dir=tmp_path, download=False)
    assert str(tmp_path / "amazon") in str(info.value)
    assert list(tmp_path.iterdir()) == []
