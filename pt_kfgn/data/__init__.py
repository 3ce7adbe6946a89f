"""Data sets of Sec. 5, by name: MNIST (IDX files, cached and verified), CURVES and FACES (regenerated).

>>> X, Y, loss, label = load_dataset("curves", n_train=2000)     # autoencoder: Y is X

Where files are looked up and written: :mod:`pt_kfgn.data.cache` (``$PT_KFGN_DATA``, then ``~/.cache/pt_kfgn``).
"""

from __future__ import annotations

import numpy as np

from pt_kfgn.data.cache import DataError, cache_dir, data_dirs
from pt_kfgn.data.curves import load_curves
from pt_kfgn.data.faces import load_faces
from pt_kfgn.data.mnist import load_mnist, odd_even

DATASETS = ("curves", "mnist", "faces", "mnist-oddeven")
FACES_PER_PERSON = 4140  # 10 images × 414 windows (recipe FACES-v0)


def load_dataset(name: str, n_train: int | None = None, seed: int = 0):
    """``(X, Y, loss, label)`` for a data set of the paper; autoencoder targets are the inputs.

    Parameters
    ----------
    name : {"curves", "mnist", "faces", "mnist-oddeven"}
    n_train : int, optional
        Use ``n_train`` training points: the first ones for MNIST and CURVES; for FACES a random subset
        (seed ``seed``) of all 25 training people's rows, so a small run still sees every person.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not one of {list(DATASETS)}")
    if n_train is not None and (not isinstance(n_train, int) or n_train < 1):
        raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
    if name == "curves":
        X, _ = load_curves(n_train or 20000, 0 if n_train else 10000, seed=0)
        return X, X, "bce", "CURVES (regenerated, recipe CURVES-v0)"
    if name == "mnist":
        X, _ = load_mnist("train", n_train or 50000)
        return X, X, "bce", f"MNIST (first {n_train or 50000})"
    if name == "mnist-oddeven":
        X, labels = load_mnist("train", n_train or 50000)
        return X, odd_even(labels), "mixture", "MNIST odd/even (mixture MIX-v0)"
    X = load_faces(n_people=25, seed=0)
    if n_train and n_train < len(X):
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), n_train, replace=False))]
    return X, X, "mse", "FACES (regenerated, recipe FACES-v0)"


__all__ = ["DATASETS", "DataError", "cache_dir", "data_dirs", "load_curves", "load_dataset", "load_faces",
           "load_mnist", "odd_even"]
