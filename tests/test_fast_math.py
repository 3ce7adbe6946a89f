"""The vectorisable float32 tanh of the Numba backend (pt_kfgn.fast_math): accuracy and where it applies."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pt_kfgn import fast_math
from pt_kfgn.backend import compile_function


def _inputs():
    lin = np.linspace(-12, 12, 400001)
    tiny = np.geomspace(1e-30, 1, 4000)
    return np.concatenate([lin, tiny, -tiny, [0.0, 9.0, -9.0, 20.0, 1e30]]).astype(np.float32)


def _ulps(y, x):
    ref = np.tanh(x.astype(np.float64))
    return np.abs(y.astype(np.float64) - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)


def test_rational_tanh_is_within_8_ulp_of_tanh_in_float32_numpy_and_numba():
    x = _inputs()
    assert _ulps(fast_math.rational_tanh_numpy(x), x).max() < 8
    v = pt.fvector()
    f = compile_function([v], pt.tanh(v), backend="numba")
    y = f(x)
    assert _ulps(y, x).max() < 8
    assert np.all(np.abs(y) <= 1)
    special = f(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32))
    assert special[0] == 1 and special[1] == -1 and np.isnan(special[2]) and special[3] == 0


def _scalar_ops(fn):
    ops = set()
    for node in fn.maker.fgraph.apply_nodes:
        scalar = getattr(node.op, "scalar_op", None)
        inner = getattr(scalar, "fgraph", None)
        ops |= {type(n.op) for n in inner.apply_nodes} if inner is not None else {type(scalar)}
    return ops


@pytest.mark.parametrize("dtype,backend,expected", [("float32", "numba", True), ("float64", "numba", False),
                                                    ("float32", "fast", False)])
def test_the_rewrite_applies_to_float32_numba_graphs_only(dtype, backend, expected):
    v = pt.vector(dtype=dtype)
    f = compile_function([v], pt.tanh(2 * v) + 1, backend=backend)
    assert (fast_math.RationalTanh in _scalar_ops(f)) is expected
    x = np.linspace(-3, 3, 7).astype(dtype)
    np.testing.assert_allclose(f(x), np.tanh(2 * x) + 1, rtol=0, atol=1e-6)


def test_gradient_through_the_rational_tanh_is_one_minus_y_squared():
    v = pt.fvector()
    y = pt.tanh(v)
    f = compile_function([v], [y, pytensor.grad(y.sum(), v)], backend="numba")
    x = np.linspace(-10, 10, 1001).astype(np.float32)
    y_val, g = f(x)
    np.testing.assert_allclose(g, 1 - y_val.astype(np.float64) ** 2, atol=2e-7)
    np.testing.assert_allclose(g, 1 - np.tanh(x.astype(np.float64)) ** 2, atol=1e-6)
