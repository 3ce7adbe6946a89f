"""FACES (regenerated): recipe FACES-v0 [ours for the details the paper leaves open],
as restated below.

From the 400 Olivetti faces (64×64, person k // 10): for each image, 414 random (rotation θ ~ U(−90°, 90°),
scale s ~ U(1.4, 1.8)) pairs — angles drawn first, then scales — give 25×25 windows of side 64/s source
pixels, anti-aliased by a Gaussian (σ = 0.5·step) and sampled bilinearly.  Rows are person-major
(row = k·414 + j); the first 25 people (103,500 rows) are the paper's training set.  Normalisation: subtract
the per-pixel mean and divide by √mean(x²) over the generated rows.  Label results "FACES (regenerated)".
"""

from __future__ import annotations

import numpy as np

from pt_kfgn.data.cache import DataError, cache_dir, fetch

OLIVETTI = "olivetti/olivettifaces.mat"
OLIVETTI_SHA256 = "b1988d02c72fe5b8ee82b5ef3bb7982eafc74f1e1ff0ae0ade35061ad0af534d"
OLIVETTI_URLS = ("https://cs.nyu.edu/~roweis/data/olivettifaces.mat",)
PAIRS, SIDE, SRC = 414, 25, 64


def load_olivetti() -> np.ndarray:
    """The 400 Olivetti faces as float64 (400, 64, 64), raw grey levels, person k // 10."""
    from scipy.io import loadmat

    path = fetch(OLIVETTI, OLIVETTI_SHA256, OLIVETTI_URLS)
    try:
        faces = loadmat(path)["faces"]
    except (ValueError, KeyError, OSError) as err:
        raise DataError(f"{path}: not a readable Olivetti .mat file ({err})") from err
    return faces.T.reshape(400, SRC, SRC).transpose(0, 2, 1).astype(np.float64)


def transform_faces(F: np.ndarray, n_images: int, seed: int = 0, pairs: int = PAIRS) -> np.ndarray:
    """Rotated, scaled 25×25 windows (n_images·pairs, 625) float32, before normalisation."""
    from scipy.ndimage import affine_transform, gaussian_filter

    rng = np.random.default_rng(seed)
    out = np.empty((n_images * pairs, SIDE * SIDE), dtype=np.float32)
    c_in, c_out = (SRC - 1) / 2, (SIDE - 1) / 2
    for k in range(n_images):  # per-image draws: angles first, then scales (recipe step 2)
        angles = np.deg2rad(rng.uniform(-90.0, 90.0, pairs))
        scales = rng.uniform(1.4, 1.8, pairs)
        for j, (th, s) in enumerate(zip(angles, scales)):
            step = (SRC / SIDE) / s
            R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            M = step * R
            src = gaussian_filter(F[k], sigma=0.5 * step)
            img = affine_transform(src, M, offset=c_in - M @ np.array([c_out, c_out]),
                                   output_shape=(SIDE, SIDE), order=1, mode="nearest")
            out[k * pairs + j] = img.ravel()
    return out


def normalise(X: np.ndarray) -> np.ndarray:
    """Zero per-pixel mean, then unit mean per-pixel variance (one global scale)."""
    Xc = X - X.mean(axis=0, keepdims=True)
    return (Xc / np.sqrt(np.mean(Xc.astype(np.float64) ** 2))).astype(np.float32)


def load_faces(n_people: int = 25, seed: int = 0, cache: bool = True) -> np.ndarray:
    """The paper's FACES training set: first ``n_people`` people, (n_people·10·414, 625), normalised."""
    if not 1 <= n_people <= 40:
        raise ValueError(f"n_people must lie in 1..40, got {n_people}")
    path = cache_dir() / f"faces_v0_seed{seed}_{n_people}.npy"
    if cache and path.exists():
        return np.load(path)
    X = normalise(transform_faces(load_olivetti(), 10 * n_people, seed))
    if cache:
        tmp = path.with_name(path.stem + ".tmp.npy")
        np.save(tmp, X)
        tmp.replace(path)
    return X
