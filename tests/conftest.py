"""Shared fixtures: tiny float64 nets, data, paths; unit tests compile with the fast-compiling mode."""

import os
from pathlib import Path

import numpy as np
import pytest

# Unit tests check mathematics, not backends: compile with PyTensor's FAST_COMPILE mode (about 10x faster
# to compile than a cold Numba or C build).  test_backends.py exercises the real backends explicitly.
os.environ.setdefault("PT_KFGN_BACKEND", "fast")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long runs, opt-in with --runslow")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--runslow"):
        skip = pytest.mark.skip(reason="slow: use --runslow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


def pytest_collection_finish(session):
    """After selection (``-k``, ``-m``): start the sharding worker when a sharding test will run."""
    if any(Path(str(item.fspath)).name == "test_sharding.py" for item in session.items):
        sharding_worker()  # it runs beside the rest of the suite


# The data-parallel tests (test_sharding.py) run tests/sharded_worker.py in a subprocess: XLA's device count is
# fixed when jax is first imported. It takes about 80 s, mostly compiling; most of the suite runs on one core
# (FAST_COMPILE evaluates in Python), so the worker is started at collection and its report is read when the
# sharding tests run.
SHARDED_METHODS = ("kfra", "kflr", "kfac", "adam", "hf")
_SHARDING = {}


def sharding_worker() -> dict:
    """The worker's process and its output files (started once; empty when jax is not installed)."""
    import importlib.util
    import subprocess
    import sys
    import tempfile

    if not _SHARDING and importlib.util.find_spec("jax") is not None:
        env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
        # the files outlive this call: read by the sharding tests, closed at the end of the session
        out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        worker = Path(__file__).with_name("sharded_worker.py")
        _SHARDING.update(out=out, err=err, proc=subprocess.Popen(
            [sys.executable, str(worker), ",".join(SHARDED_METHODS)], env=env, stdout=out, stderr=err, text=True))
    return _SHARDING


def pytest_sessionfinish(session, exitstatus):
    if _SHARDING:
        if _SHARDING["proc"].poll() is None:
            _SHARDING["proc"].kill()
        _SHARDING["out"].close()
        _SHARDING["err"].close()


@pytest.fixture(scope="session")
def shared_dir():
    return SHARED


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """``$PT_KFGN_DATA`` = a fresh writable cache, then the shared (read-only) data when present."""
    dirs = [str(tmp_path / "cache")] + ([str(SHARED / "data")] if (SHARED / "data").exists() else [])
    monkeypatch.setenv("PT_KFGN_DATA", os.pathsep.join(dirs))
    return tmp_path / "cache"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def make_batch(loss, n, n_in, n_out, seed=0):
    """Random inputs and valid targets for ``loss``."""
    r = np.random.default_rng(seed)
    X = r.standard_normal((n, n_in))
    if loss == "mse":
        Y = r.standard_normal((n, n_out))
    elif loss == "bce":
        Y = r.random((n, n_out))
    elif loss == "softmax_ce":
        Y = np.eye(n_out)[r.integers(0, n_out, n)]
    else:
        Y = r.integers(0, 2, (n, 1)).astype(float)
    return X, Y
