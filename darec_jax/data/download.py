"""Download RLMRec's data archive once and unpack one dataset from it (docs/protocol.md).

The archive is fetched to ``<cache>/data.zip`` through a temporary file in the same folder that
is renamed only once it is complete (so an interrupted download never leaves a file that looks
finished), then the members of the requested dataset are extracted into ``<cache>/<name>/``
through a temporary folder and an atomic rename. The archive's inner layout is not assumed: the
dataset is the folder that holds ``<name>/trn_mat.pkl``, wherever it lies in the archive.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from darec_jax.data.dataset import EMBEDDING_FILES, MATRIX_FILES
from darec_jax.errors import DataError

__all__ = [
    "ARCHIVE_NAME",
    "ARCHIVE_URL",
    "default_cache_dir",
    "download_archive",
    "extract_dataset",
    "offline_message",
]

#: RLMRec's public data archive (as RLMRec's README gives it).
ARCHIVE_URL = "https://archive.org/download/rlmrec_data/data.zip"
#: The archive's file name inside the cache folder.
ARCHIVE_NAME = "data.zip"

_CHUNK = 1 << 20  # bytes per read while streaming


def default_cache_dir() -> Path:
    """Where downloaded datasets live: ``$DAREC_DATA_DIR`` if set, else
    ``$XDG_CACHE_HOME/darec_jax``, else ``~/.cache/darec_jax``."""
    explicit = os.environ.get("DAREC_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "darec_jax"


def offline_message(name: str, url: str, cache_dir: Path, reason: str) -> str:
    """What to download and where to put it, when the automatic download cannot happen."""
    return (
        f"dataset {name!r} could not be downloaded from {url} ({reason}). Get RLMRec's data "
        f"archive from {url} (or the Google Drive mirror in RLMRec's README) and put the files of "
        f"its {name}/ folder, namely {', '.join(MATRIX_FILES)} and, for the alignment methods "
        f"(RLMRec, DaRec), {', '.join(EMBEDDING_FILES)}, into {cache_dir / name}/ ; or pass "
        f"--data-dir PATH pointing at such a folder; or set DAREC_DATA_DIR to a folder that "
        f"holds {name}/. (You may also put the whole archive at {cache_dir / ARCHIVE_NAME}.)"
    )


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def partial_path(dest: Path) -> Path:
    """Where an unfinished download of ``dest`` is kept (and resumed from)."""
    return dest.parent / f".{dest.name}.partial"


def download_archive(
    url: str,
    dest: Path,
    *,
    name: str = "the dataset",
    timeout: float = 60.0,
    progress: bool = True,
    size: int | None = None,
    sha256: str | None = None,
) -> Path:
    """Stream ``url`` to ``dest``, resumably and atomically; a ``dest`` that exists is reused.

    The bytes go to ``.<dest>.partial`` beside ``dest``. An interrupted transfer (network error,
    time-out, hang-up, Ctrl-C) keeps what arrived there, and the next call asks the server for
    the rest (an HTTP Range request; a server that answers with the whole file starts it over).
    Once complete, the file's size and SHA-256 are checked when known, and that it is a zip
    archive; only then is it renamed to ``dest``, so ``dest`` is never a partial file.

    Args:
      url: what to download.
      dest: the final file.
      name: the dataset wanted (for the error message).
      timeout: seconds to wait for the connection and for each read.
      progress: show a tqdm progress bar.
      size: the archive's size in bytes, when known.
      sha256: its SHA-256 (hex), when known.

    Returns:
      ``dest``.

    Raises:
      DataError: a network or HTTP error, a time-out or a truncated transfer (the partial file
        is kept for the next attempt and the message says so), or a complete download of the
        wrong size or checksum or that is not a zip archive (removed); the message also says
        what to download by hand and where to put it.
    """
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    try:
        _fetch_into(url, partial, dest.name, timeout, progress)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # URLError includes HTTPError; OSError includes time-outs and refused connections;
        # HTTPException includes IncompleteRead; ValueError: a malformed URL.
        if isinstance(exc, urllib.error.HTTPError):
            exc.close()  # an HTTPError holds the open response
        kept = partial.stat().st_size if partial.exists() else 0
        if kept == 0:
            _remove_quietly(partial)
        reason = _describe(exc)
        if kept:
            reason += f"; the {kept} bytes received are kept in {partial} and the next attempt "
            reason += "resumes from them"
        raise DataError(offline_message(name, url, dest.parent, reason)) from exc
    problem = _check_complete(partial, size, sha256)
    if problem:
        _remove_quietly(partial)
        raise DataError(offline_message(name, url, dest.parent, problem))
    os.replace(partial, dest)
    return dest


def _fetch_into(url: str, partial: Path, label: str, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``partial`` (from its current size)."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "darec_jax"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the partial file is complete
            exc.close()
            return
        raise
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = None if remaining is None else offset + remaining
        received = 0
        with (
            open(partial, "ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"downloading {label}",
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if remaining is not None and received != remaining:
            raise http.client.IncompleteRead(b"", remaining - received)


def _check_complete(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why the finished download is unusable, or None."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"the download has {actual} bytes, expected {size}"
    if sha256 is not None:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
        if digest.hexdigest() != sha256.lower():
            return f"the download's SHA-256 is {digest.hexdigest()}, expected {sha256.lower()}"
    if not zipfile.is_zipfile(path):
        return "the download is not a zip archive"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP error {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "the connection timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"transfer incomplete ({exc.expected} more bytes were expected)"
    return f"{type(exc).__name__}: {exc}"


def _dataset_prefix(members: list[str], name: str) -> str:
    """The archive folder (with trailing '/') that holds ``<name>/trn_mat.pkl``."""
    candidates = []
    for member in members:
        parts = PurePosixPath(member).parts
        if parts[-2:] == (name, MATRIX_FILES[0]) and "__MACOSX" not in parts:
            candidates.append(parts[:-1])
    if not candidates:
        found = sorted(
            {
                PurePosixPath(m).parts[-2]
                for m in members
                if PurePosixPath(m).name == MATRIX_FILES[0] and len(PurePosixPath(m).parts) > 1
            }
        )
        raise DataError(
            f"the archive has no {name}/{MATRIX_FILES[0]}; datasets found in it: "
            f"{', '.join(found) or 'none'}"
        )
    # Several copies: take the shallowest (then the first by name), for a stable choice.
    best = min(candidates, key=lambda parts: (len(parts), parts))
    return "/".join(best) + "/"


def extract_dataset(archive: Path, name: str, dest: Path) -> Path:
    """Unpack the folder ``<name>/`` of ``archive`` (wherever it lies) into ``dest``.

    Files are written to a temporary folder beside ``dest``, which is then renamed to ``dest``
    (or, when ``dest`` already exists, the files it lacks are moved in one by one; files
    already there are kept). Members that would land outside the folder (absolute paths,
    ``..``) are refused.

    Returns:
      ``dest``.

    Raises:
      DataError: a corrupt archive, no ``<name>/trn_mat.pkl`` in it, or an unsafe member path.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"))
    try:
        with zipfile.ZipFile(archive) as zf:
            prefix = _dataset_prefix(zf.namelist(), name)
            root = staging.resolve()
            for info in zf.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                relative = info.filename[len(prefix) :]
                parts = PurePosixPath(relative.replace("\\", "/")).parts
                target = root.joinpath(*parts).resolve() if parts else root
                # Zip-slip: the member must stay inside the staging folder.
                if (
                    not parts
                    or relative.startswith(("/", "\\"))
                    or ".." in parts
                    or not target.is_relative_to(root)
                    or target == root
                ):
                    raise DataError(
                        f"{archive}: refusing member {info.filename!r}, whose path leaves the "
                        "dataset folder"
                    )
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
        _publish(staging, dest)
    except DataError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(
            f"{archive}: cannot unpack {name}/ ({type(exc).__name__}: {exc}); delete the archive "
            "to download it again"
        ) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _publish(staging: Path, dest: Path) -> None:
    """Move the unpacked folder into place: one atomic rename if ``dest`` does not exist."""
    try:
        os.rename(staging, dest)
        return
    except OSError:
        if not dest.is_dir():
            raise
    # dest exists (files a user put there, or a concurrent extraction): add what it lacks.
    for src in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = dest / src.relative_to(staging)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, target)
    shutil.rmtree(staging, ignore_errors=True)
