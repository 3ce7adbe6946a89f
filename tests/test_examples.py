"""Every script in ``examples/`` runs, at a tiny size, and does what it says."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == {
        "autoencoder_kfra_vs_adam", "own_graph_and_loss", "symbolic_step", "kfra_vs_hessian_free", "residual_mlp"}


def test_autoencoder_kfra_vs_adam(tmp_path):
    res = _load("autoencoder_kfra_vs_adam").main(steps=4, n_train=64, widths=(16, 4), batch_size=32,
                                                 out=tmp_path / "cmp")
    assert set(res) == {"kfra", "adam"}
    assert (tmp_path / "cmp" / "table.md").exists() and (tmp_path / "cmp" / "kfra" / "log.csv").exists()


def test_own_graph_and_loss():
    start, end = _load("own_graph_and_loss").main(steps=20, n=400)
    assert end < 0.8 * start


def test_symbolic_step():
    # (stock Numba mode is tested in test_symbolic.py; here the fast-compiling mode)
    assert _load("symbolic_step").main(steps=8, n=64, mode="FAST_COMPILE") < 1.0  # from log 3 ≈ 1.10


def test_kfra_vs_hessian_free():
    res = _load("kfra_vs_hessian_free").main(steps=2, n_train=64, widths=(16, 4), batch_size=32)
    assert set(res) == {"kfra", "hf"}
    assert all(f == pytest.approx(f) for f, _ in res.values())


def test_residual_mlp(tmp_path, data_env, shared_dir):
    if not (shared_dir / "data" / "mnist").exists():
        pytest.skip("MNIST is not in ../shared/data")
    res = _load("residual_mlp").main(steps=3, n_train=64, width=16, blocks=2, batch_size=32, methods=("kfra",),
                                     out=tmp_path / "cmp")
    assert set(res) == {"kfra", "adam"}
    assert all(f == pytest.approx(f) for f in res.values())  # finite
    assert (tmp_path / "cmp" / "kfra" / "log.csv").exists()
