"""Data sets of Sec. 5, by name: MNIST (IDX files, cached and verified), CURVES and FACES (regenerated).

>>> X, Y, loss, label = load_dataset("curves", n_train=2000)     # autoencoder: Y is X

Where files are looked up and written: :mod:`pt_kfgn.data.cache` (``$PT_KFGN_DATA``, then ``~/.cache/pt_kfgn``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pt_kfgn.data import curves, faces
from pt_kfgn.data.cache import DataError, cache_dir, data_dirs
from pt_kfgn.data.curves import load_curves
from pt_kfgn.data.faces import load_faces
from pt_kfgn.data.mnist import load_mnist, odd_even

DATASETS = ("curves", "mnist", "faces", "mnist-oddeven")
FACES_PER_PERSON = 4140  # 10 images × 414 windows (recipe FACES-v0)


class DatasetInfo(NamedTuple):
    """What a data set of :func:`load_dataset` is, known without loading it: input and target widths, the
    loss of Sec. 5 and the label for plots and logs."""

    d_in: int
    d_out: int
    loss: str
    label: str


def dataset_info(name: str, n_train: int | None = None) -> DatasetInfo:
    """:class:`DatasetInfo` of ``load_dataset(name, n_train)``, without loading anything: a net can be built and
    its step compiled while the data loads (``pt-kfgn train`` does)."""
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not one of {list(DATASETS)}")
    if n_train is not None and (not isinstance(n_train, int) or n_train < 1):
        raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
    if name == "curves":
        return DatasetInfo(curves.SIDE ** 2, curves.SIDE ** 2, "bce", "CURVES (regenerated, recipe CURVES-v0)")
    if name == "mnist":
        return DatasetInfo(784, 784, "bce", f"MNIST (first {n_train or 50000})")
    if name == "mnist-oddeven":
        return DatasetInfo(784, 1, "mixture", "MNIST odd/even (mixture MIX-v0)")
    return DatasetInfo(faces.SIDE ** 2, faces.SIDE ** 2, "mse", "FACES (regenerated, recipe FACES-v0)")


def load_dataset(name: str, n_train: int | None = None, seed: int = 0):
    """``(X, Y, loss, label)`` for a data set of the paper; autoencoder targets are the inputs.

    Parameters
    ----------
    name : {"curves", "mnist", "faces", "mnist-oddeven"}
    n_train : int, optional
        Use ``n_train`` training points: the first ones for MNIST and CURVES; for FACES a random subset
        (seed ``seed``) of all 25 training people's rows, so a small run still sees every person.

    ``loss`` and ``label`` are :func:`dataset_info`'s.
    """
    info = dataset_info(name, n_train)
    if name == "curves":
        X, _ = load_curves(n_train or 20000, 0 if n_train else 10000, seed=0)
        Y = X
    elif name == "mnist":
        X, _ = load_mnist("train", n_train or 50000)
        Y = X
    elif name == "mnist-oddeven":
        X, labels = load_mnist("train", n_train or 50000)
        Y = odd_even(labels)
    else:
        X = load_faces(n_people=25, seed=0)
        if n_train and n_train < len(X):
            X = X[np.sort(np.random.default_rng(seed).choice(len(X), n_train, replace=False))]
        Y = X
    return X, Y, info.loss, info.label


def load_dataset_in_background(name: str, n_train: int | None = None, seed: int = 0):
    """Start :func:`load_dataset` in a daemon thread and return a function that waits for its ``(X, Y, loss,
    label)`` (or raises its error).

    Generating CURVES or FACES takes seconds that NumPy spends mostly outside the GIL, so a net built from
    :func:`dataset_info` can compile its step meanwhile (``pt-kfgn train`` does).  A daemon thread: a program
    that fails before it needs the data exits without waiting for it.  The arguments are checked at once.
    """
    import threading

    dataset_info(name, n_train)  # bad arguments raise here, not in the thread
    box = {}

    def work():
        try:
            box["value"] = load_dataset(name, n_train, seed)
        except BaseException as err:  # noqa: BLE001 - raised by the caller's wait()
            box["error"] = err

    thread = threading.Thread(target=work, name="pt_kfgn-data", daemon=True)
    thread.start()

    def wait():
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    return wait


__all__ = ["DATASETS", "DataError", "DatasetInfo", "cache_dir", "data_dirs", "dataset_info", "load_curves",
           "load_dataset", "load_dataset_in_background", "load_faces", "load_mnist", "odd_even"]
