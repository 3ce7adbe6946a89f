"""CURVES (regenerated): recipe CURVES-v0 [ours, as restated below], vectorised.

Per image: three points ``P ~ U([m, 27 − m]²)`` (pixel coordinates, x = column, y = row, m = 2); the
quadratic through them with chord-length nodes (0, t₁, 1), sampled at 200 values of s; ink
``exp(−d²/2σ²)`` with ``d`` the distance of each pixel centre to the nearest curve sample, σ = 0.75.
The training set (20,000) is drawn first, then the test set (10,000), from one ``default_rng(seed)``
stream.  Not the original ``digs3pts_1.mat``: label results "CURVES (regenerated)".

[ours] Ink below float32's smallest normal number (≈ 1.2e-38) is set to exactly 0: about 5 % of the pixels
would otherwise be float32 *subnormals*, on which x86 BLAS kernels run about ten times slower. No statistic of the recipe changes at any printed precision.
"""

from __future__ import annotations

import numpy as np

SIDE, MARGIN, SIGMA, N_S = 28, 2.0, 0.75, 200
TINY = np.finfo(np.float32).tiny


def _render(P: np.ndarray, chunk: int = 100) -> np.ndarray:
    """Images (n, 784) float32 for point triples P (n, 3, 2)."""
    n = len(P)
    a = np.linalg.norm(P[:, 1] - P[:, 0], axis=1)
    b = np.linalg.norm(P[:, 2] - P[:, 1], axis=1)
    t1 = np.where(a + b > 0, a / np.where(a + b > 0, a + b, 1.0), 0.5)
    t1 = np.clip(t1, 1e-6, 1 - 1e-6)
    s = np.linspace(0.0, 1.0, N_S)[None, :]
    t = t1[:, None]
    L0 = (s - t) * (s - 1) / t
    L1 = s * (s - 1) / (t * (t - 1))
    L2 = s * (s - t) / (1 - t)
    C = L0[..., None] * P[:, None, 0] + L1[..., None] * P[:, None, 1] + L2[..., None] * P[:, None, 2]  # (n,S,2)
    yy, xx = np.meshgrid(np.arange(SIDE, dtype=float), np.arange(SIDE, dtype=float), indexing="ij")
    q = np.stack([xx.ravel(), yy.ravel()], axis=1)  # (784, 2) as (x, y), row-major image order
    out = np.empty((n, SIDE * SIDE), dtype=np.float32)
    qq = (q ** 2).sum(1)[None, :, None]
    for i in range(0, n, chunk):  # chunks bound the (chunk, 784, 200) distance tensor
        c = C[i:i + chunk]
        # |q − c|² = |q|² − 2 q·c + |c|², the cross term as one batched matrix product
        d2 = qq - 2.0 * np.matmul(q[None], c.transpose(0, 2, 1)) + (c ** 2).sum(-1)[:, None, :]
        ink = np.exp(-np.maximum(d2.min(-1), 0.0) / (2 * SIGMA ** 2))
        ink[ink < TINY] = 0.0  # no float32 subnormals (see the module docstring)
        out[i:i + chunk] = ink
    return out


def generate_curves(n_train: int = 20000, n_test: int = 10000, seed: int = 0):
    """``(X_train, X_test)`` float32 in [0, 1], shapes (n_train, 784) and (n_test, 784)."""
    if n_train < 0 or n_test < 0:
        raise ValueError("sizes must be non-negative")
    rng = np.random.default_rng(seed)
    P = rng.uniform(MARGIN, SIDE - 1 - MARGIN, size=(n_train + n_test, 3, 2))
    X = _render(P)
    return X[:n_train], X[n_train:]


def load_curves(n_train: int = 20000, n_test: int = 10000, seed: int = 0, cache: bool = True):
    """Generated CURVES, cached as ``.npz`` in the data cache (see :mod:`pt_kfgn.data.cache`)."""
    from pt_kfgn.data.cache import cache_dir

    path = cache_dir() / f"curves_v0ftz_seed{seed}_{n_train}_{n_test}.npz"
    if cache and path.exists():
        with np.load(path) as f:
            return f["train"], f["test"]
    train, test = generate_curves(n_train, n_test, seed)
    if cache:
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, train=train, test=test)
        tmp.replace(path)
    return train, test
