"""Checkpoints that cannot run code: one ``.npz`` file of plain arrays plus a JSON document.

A checkpoint is a nested structure of dicts, lists, numbers, strings, numpy arrays and numpy random
Generators (KFAC's sampler, the batch order).  :func:`save` stores every array as an ``.npz`` member and
everything else as JSON (stored as the member ``__state__.json``), written to a temporary file and renamed,
so a crash leaves the old checkpoint or the new one.  :func:`load` reads it with ``allow_pickle=False``:
opening a checkpoint someone shared never unpickles anything, and a truncated, corrupt or foreign file
raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "pt_kfgn-checkpoint-1"
_STATE = "__state__.json"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt, or not a pt_kfgn checkpoint."""


def _encode(obj, arrays: dict):
    if not isinstance(obj, np.ndarray | np.generic) and hasattr(obj, "__array__") and hasattr(obj, "shape"):
        obj = np.asarray(obj)  # a backend's own array type (e.g. JAX's), as numpy
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays cannot be checkpointed")
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, np.random.Generator):
        return {"__generator__": type(obj.bit_generator).__name__, "state": _encode(obj.bit_generator.state, arrays)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("checkpoint dicts need string keys")
        return {k: _encode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v, arrays) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__}")


def _decode(obj, arrays):
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__generator__" in obj:
            bit_gen = getattr(np.random, obj["__generator__"], None)
            if bit_gen is None or not issubclass(bit_gen, np.random.BitGenerator):
                raise CheckpointError(f"unknown bit generator {obj['__generator__']!r}")
            gen = np.random.Generator(bit_gen())
            gen.bit_generator.state = _decode(obj["state"], arrays)
            return gen
        return {k: _decode(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    return obj


def save(path, state: dict) -> None:
    """Write ``state`` atomically to ``path`` (an ``.npz`` file)."""
    path = Path(path)
    arrays: dict = {}
    doc = {"format": FORMAT, "state": _encode(state, arrays)}
    text = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **{_STATE: text}, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path) -> dict:
    """Read a checkpoint written by :func:`save`; :class:`CheckpointError` names the file on any defect."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if _STATE not in names:
                raise CheckpointError(f"{path}: not a pt_kfgn checkpoint (no {_STATE})")
            doc = json.loads(npz[_STATE].tobytes().decode())
            arrays = {k: npz[k] for k in names - {_STATE}}
    except CheckpointError:
        raise
    except FileNotFoundError as err:
        raise CheckpointError(f"{path}: no such checkpoint") from err
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError, UnicodeDecodeError) as err:
        why = "not a NumPy archive" if "pickle" in str(err) else str(err)  # numpy's text suggests allow_pickle
        raise CheckpointError(f"{path}: truncated, corrupt or not a checkpoint ({why})") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    return _decode(doc["state"], arrays)
