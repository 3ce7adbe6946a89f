"""Data cache: where files live, checksum verification, downloads (as torchvision does).

Files are looked up in the folders of ``$PT_KFGN_DATA`` (one folder, or several joined by ``os.pathsep``
like ``PATH``; a read-only folder of downloaded files works) and then in the user cache
``$XDG_CACHE_HOME/pt_kfgn`` (``~/.cache/pt_kfgn``).  Downloads and generated data sets are written to the
first writable folder of that list.  A file lives at ``<folder>/<name>``, e.g. ``mnist/train-images-idx3-ubyte.gz``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path


class DataError(RuntimeError):
    """A data file is missing, truncated, corrupt or fails its checksum."""


def data_dirs() -> list[Path]:
    """The folders searched for data, in order: ``$PT_KFGN_DATA``'s, then the user cache."""
    env = os.environ.get("PT_KFGN_DATA")
    dirs = [Path(p) for p in env.split(os.pathsep) if p] if env else []
    return dirs + [Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pt_kfgn"]


def cache_dir() -> Path:
    """The first writable folder of :func:`data_dirs` (created if need be): where new files are written."""
    for path in data_dirs():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    raise DataError(f"none of the data folders is writable: {[str(p) for p in data_dirs()]}")


def find(name: str) -> Path | None:
    """The first existing ``<folder>/<name>`` over :func:`data_dirs`, or None."""
    for path in data_dirs():
        if (path / name).exists():
            return path / name
    return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise :class:`DataError` unless ``path`` exists and has the sha256 ``expected``."""
    if not path.exists():
        raise DataError(f"{path} does not exist")
    got = sha256(path)
    if got != expected:
        raise DataError(f"{path}: sha256 {got} does not match the expected {expected} "
                        "(corrupt or truncated download: delete it and try again)")


def fetch(name: str, expected: str, urls) -> Path:
    """A verified local copy of ``name``: found in :func:`data_dirs`, or downloaded from the first working
    URL into :func:`cache_dir` (written to a temporary file, verified, then renamed)."""
    found = find(name)
    if found is not None:
        verify(found, expected)
        return found
    dest = cache_dir() / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as fh:
                shutil.copyfileobj(r, fh)
            break
        except OSError as err:
            errors.append(f"{url}: {err}")
    else:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not obtain {name}: " + "; ".join(errors or ["no source"]) +
                        f" (or place the file at <folder>/{name} for a folder in $PT_KFGN_DATA)")
    try:
        verify(tmp, expected)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return dest
