"""MNIST from the original IDX files (gzip or raw), cached and sha256-verified.

The paper trains on the first 50,000 training images, pixel values x / 255 in [0, 1].
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from pt_kfgn.data.cache import DataError, fetch

FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip-compressed if it ends in .gz); :class:`DataError` if malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: cannot read ({err}); the file is corrupt or truncated") from err
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(DTYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes where the header promises {expected} (truncated or corrupt)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def load_mnist(split: str = "train", n: int | None = None):
    """``(X, labels)``: X float32 (n, 784) in [0, 1], labels int64.  ``split`` "train" or "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r} is not 'train' or 'test'")
    prefix = "train" if split == "train" else "t10k"
    paths = {}
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{prefix}-{kind}-ubyte.gz"
        paths[kind] = fetch(f"mnist/{name}", FILES[name], [m + name for m in MIRRORS])
    images, labels = read_idx(paths["images-idx3"]), read_idx(paths["labels-idx1"])
    if len(images) != len(labels):
        raise DataError("MNIST images and labels differ in length")
    X = images.reshape(len(images), -1).astype(np.float32) / 255.0
    y = labels.astype(np.int64)
    return (X, y) if n is None else (X[:n], y[:n])


def odd_even(labels: np.ndarray) -> np.ndarray:
    """Targets of the mixture experiment (Sec. 5.2): 1 for odd digits, 0 for even, shape (n, 1)."""
    return (np.asarray(labels) % 2).astype(np.float32)[:, None]
