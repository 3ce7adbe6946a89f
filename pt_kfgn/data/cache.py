"""Data cache: where files live, checksum verification, downloads (as torchvision does).

The cache directory is ``$PT_KFGN_DATA`` if set, else ``$XDG_CACHE_HOME/pt_kfgn`` (``~/.cache/pt_kfgn``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.request
from pathlib import Path


class DataError(RuntimeError):
    """A data file is missing, truncated, corrupt or fails its checksum."""


def cache_dir() -> Path:
    root = os.environ.get("PT_KFGN_DATA")
    if root is None:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pt_kfgn"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


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


def fetch(name: str, expected: str, urls, sources=()) -> Path:
    """A verified local copy of ``name`` in the cache: copied from a local ``sources`` folder, or
    downloaded from the first working URL (written to a temporary file, verified, then renamed)."""
    dest = cache_dir() / name
    if dest.exists():
        verify(dest, expected)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    errors = []
    for src in sources:
        candidate = Path(src) / Path(name).name
        if candidate.exists():
            shutil.copyfile(candidate, tmp)
            break
    else:
        for url in urls:
            try:
                with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as fh:
                    shutil.copyfileobj(r, fh)
                break
            except OSError as err:
                errors.append(f"{url}: {err}")
        else:
            tmp.unlink(missing_ok=True)
            raise DataError(f"could not obtain {name}: " + "; ".join(errors or ["no source"]))
    try:
        verify(tmp, expected)
    except DataError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return dest
