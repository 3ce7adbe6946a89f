"""Data: IDX reader, cache and checksums, CURVES and FACES generators, real MNIST when present."""

import gzip
import hashlib

import numpy as np
import pytest

from pt_kfgn.data import cache, mnist
from pt_kfgn.data.cache import DataError
from pt_kfgn.data.curves import generate_curves
from pt_kfgn.data.faces import normalise, transform_faces


def _idx_bytes(arr):
    code = {np.uint8: 0x08, np.int32: 0x0C}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype).tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reader_roundtrip(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.idx.gz" if gz else "x.idx")
    (gzip.open if gz else open)(path, "wb").write(_idx_bytes(arr))
    out = mnist.read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8 and np.array_equal(out, arr)
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    (tmp_path / "i.idx").write_bytes(_idx_bytes(ints))
    assert np.array_equal(mnist.read_idx(tmp_path / "i.idx"), ints)


def test_idx_reader_rejects_truncated_and_corrupt_files(tmp_path):
    data = _idx_bytes(np.zeros((5, 4), np.uint8))
    (tmp_path / "short.idx").write_bytes(data[:-3])
    with pytest.raises(DataError, match="truncated"):
        mnist.read_idx(tmp_path / "short.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02" + data[2:])
    with pytest.raises(DataError, match="magic"):
        mnist.read_idx(tmp_path / "magic.idx")
    gz = gzip.compress(data)
    (tmp_path / "cut.idx.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        mnist.read_idx(tmp_path / "cut.idx.gz")


def test_fetch_verifies_checksums_and_never_keeps_a_bad_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PT_KFGN_DATA", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"hello")
    url = [(src / "f.bin").as_uri()]
    good = hashlib.sha256(b"hello").hexdigest()
    with pytest.raises(DataError, match="does not match"):
        cache.fetch("d/f.bin", "0" * 64, url)
    assert not (tmp_path / "cache" / "d" / "f.bin").exists()
    path = cache.fetch("d/f.bin", good, url)
    assert path == tmp_path / "cache" / "d" / "f.bin" and path.read_bytes() == b"hello"
    path.write_bytes(b"hellp")  # corrupted later in the cache
    with pytest.raises(DataError, match="does not match"):
        cache.fetch("d/f.bin", good, url)
    with pytest.raises(DataError, match="could not obtain"):
        cache.fetch("d/missing.bin", good, [])


def test_data_folders_are_searched_in_order_and_read_only_ones_are_not_written(tmp_path, monkeypatch):
    """``$PT_KFGN_DATA`` holds several folders: found files are used in place, new ones go to the first
    writable folder (the library never looks for a developer's ``../shared``)."""
    import os

    ro, rw = tmp_path / "ro", tmp_path / "rw"
    (ro / "d").mkdir(parents=True)
    (ro / "d" / "f.bin").write_bytes(b"hello")
    ro.chmod(0o555)
    try:
        monkeypatch.setenv("PT_KFGN_DATA", os.pathsep.join([str(ro), str(rw)]))
        assert cache.fetch("d/f.bin", hashlib.sha256(b"hello").hexdigest(), []) == ro / "d" / "f.bin"
        if not os.access(ro, os.W_OK):  # (root can write anywhere)
            assert cache.cache_dir() == rw
    finally:
        ro.chmod(0o755)
    monkeypatch.setenv("PT_KFGN_DATA", str(rw))
    assert cache.data_dirs()[0] == rw and cache.cache_dir() == rw


def test_faces_subset_samples_every_person(monkeypatch):
    from pt_kfgn import data

    people = np.repeat(np.arange(25, dtype=np.float32), data.FACES_PER_PERSON)[:, None] * np.ones((1, 3), np.float32)
    monkeypatch.setattr(data, "load_faces", lambda n_people=25, seed=0: people)
    X, Y, loss, _ = data.load_dataset("faces", n_train=2000)
    assert X.shape == (2000, 3) and loss == "mse" and X is Y
    assert len(np.unique(X[:, 0])) == 25  # all 25 people, not the first one


def test_curves_shapes_ranges_determinism_and_reference_statistics():
    a_train, a_test = generate_curves(200, 50, seed=0)
    b_train, _ = generate_curves(200, 50, seed=0)
    c_train, _ = generate_curves(200, 50, seed=1)
    assert a_train.shape == (200, 784) and a_test.shape == (50, 784) and a_train.dtype == np.float32
    assert 0 <= a_train.min() and a_train.max() <= 1 and a_train.max() > 0.99
    assert np.array_equal(a_train, b_train) and not np.array_equal(a_train, c_train)
    # RECIPES.md reference (seed 0, first 2,000 images): mean 0.0616, 5.7 % of pixels > 0.5
    X, _ = generate_curves(2000, 0, seed=0)
    assert abs(X.mean() - 0.0616) < 5e-4 and abs((X > 0.5).mean() - 0.057) < 1e-3
    # no float32 subnormals (they slow BLAS ~10×): without the flush ~5 % of pixels are subnormal
    assert not np.any((X > 0) & (X < np.finfo(np.float32).tiny))


def test_curves_matches_the_naive_recipe_loop():
    X, _ = generate_curves(3, 0, seed=7)
    P = np.random.default_rng(7).uniform(2, 25, size=(3, 3, 2))
    for img, pts in zip(X, P):
        a, b = np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[2] - pts[1])
        t1 = a / (a + b)
        s = np.linspace(0, 1, 200)
        L = [(s - t1) * (s - 1) / t1, s * (s - 1) / (t1 * (t1 - 1)), s * (s - t1) / (1 - t1)]
        C = sum(Li[:, None] * p for Li, p in zip(L, pts))
        ref = np.empty((28, 28))
        for row in range(28):
            for col in range(28):
                d = np.min(np.hypot(C[:, 0] - col, C[:, 1] - row))
                ref[row, col] = np.exp(-d ** 2 / (2 * 0.75 ** 2))
        np.testing.assert_allclose(img.reshape(28, 28), ref, atol=1e-5)


def test_faces_transform_determinism_and_normalisation():
    F = np.random.default_rng(0).uniform(0, 242, size=(2, 64, 64))
    A, B, C = transform_faces(F, 2, seed=0, pairs=5), transform_faces(F, 2, seed=0, pairs=5), \
        transform_faces(F, 2, seed=1, pairs=5)
    assert A.shape == (10, 625) and np.array_equal(A, B) and not np.array_equal(A, C)
    N = normalise(A)
    np.testing.assert_allclose(N.mean(0), 0, atol=1e-5)
    assert abs(np.mean(N.astype(np.float64) ** 2) - 1) < 1e-5


def test_real_mnist_when_present(shared_dir, monkeypatch, tmp_path):
    if not (shared_dir / "data" / "mnist" / "train-labels-idx1-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is absent")
    monkeypatch.setenv("PT_KFGN_DATA", str(shared_dir / "data"))  # read in place, read-only
    X, y = mnist.load_mnist("train", 50000)
    assert X.shape == (50000, 784) and 0 <= X.min() and X.max() == 1.0
    assert abs(X.mean() - 0.13096) < 1e-4
    assert list(y[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert abs(mnist.odd_even(y).mean() - 0.509) < 1e-3


def test_real_olivetti_when_present(shared_dir, monkeypatch, tmp_path):
    if not (shared_dir / "data" / "olivetti" / "olivettifaces.mat").exists():
        pytest.skip("../shared/data/olivetti is absent")
    from pt_kfgn.data.faces import load_olivetti

    monkeypatch.setenv("PT_KFGN_DATA", str(shared_dir / "data"))
    F = load_olivetti()
    assert F.shape == (400, 64, 64) and F.max() <= 255


def test_dataset_info_describes_what_load_dataset_returns(data_env, shared_dir):
    """The widths and loss ``pt-kfgn train`` builds and compiles the net from before the data has loaded."""
    from pt_kfgn import data

    names = ["curves"]
    if (shared_dir / "data" / "mnist" / "train-labels-idx1-ubyte.gz").exists():
        names += ["mnist", "mnist-oddeven"]
    for name in names:
        info = data.dataset_info(name, 5)
        X, Y, loss, label = data.load_dataset(name, 5)
        assert (X.shape[1], Y.shape[1], loss, label) == (info.d_in, info.d_out, info.loss, info.label)
    assert data.dataset_info("faces").d_in == transform_faces(np.zeros((1, 64, 64)), 1, pairs=1).shape[1]
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n_train must be a positive integer"):
            data.dataset_info("curves", bad)
    with pytest.raises(ValueError, match="not one of"):
        data.dataset_info("cifar")


def test_loading_in_background_returns_the_data_or_raises_its_error(data_env, monkeypatch):
    from pt_kfgn import data

    wait = data.load_dataset_in_background("curves", 4)
    X, Y, loss, _ = wait()
    np.testing.assert_array_equal(X, data.load_dataset("curves", 4)[0])
    assert Y is X and loss == "bce"
    monkeypatch.setattr(data, "load_mnist", lambda *a, **k: (_ for _ in ()).throw(data.DataError("no MNIST here")))
    wait = data.load_dataset_in_background("mnist", 4)
    with pytest.raises(data.DataError, match="no MNIST here"):
        wait()
    with pytest.raises(ValueError, match="n_train"):  # at once, not in the thread
        data.load_dataset_in_background("mnist", 0)
