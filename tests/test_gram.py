"""The symmetric product AᵀA (pt_kfgn.graph.gram): every backend, layouts, edge shapes, gradient, and that the
Kronecker factors go through it."""

import importlib.util

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import pt_kfgn
from pt_kfgn.backend import compile_function
from pt_kfgn.curvature.factors import kronecker_factors
from pt_kfgn.graph.gram import Gram, gram

BACKENDS = ["numba", "c", "fast"] + (["jax"] if importlib.util.find_spec("jax") else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gram_is_the_exactly_symmetric_product_on_every_backend_and_layout(backend, dtype):
    A = pt.matrix(dtype=dtype)
    f = compile_function([A], [gram(A), gram(A[:, ::2]), gram(A.T), gram(A[1:-1])], backend=backend)
    x = np.random.default_rng(0).standard_normal((37, 11)).astype(dtype)
    xd = x.astype(np.float64)
    refs = [xd.T @ xd, xd[:, ::2].T @ xd[:, ::2], xd @ xd.T, xd[1:-1].T @ xd[1:-1]]
    tol = 1e-4 if dtype == "float32" else 1e-12
    for got, ref in zip(f(x), refs):
        assert got.dtype == dtype and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
        np.testing.assert_array_equal(got, got.T)  # both triangles, bit for bit (the mirrored half)


@pytest.mark.parametrize("backend", ["numba", "c"])
def test_gram_of_an_empty_batch_is_zero(backend):
    A = pt.dmatrix()
    f = compile_function([A], gram(A), backend=backend)
    np.testing.assert_array_equal(f(np.zeros((0, 4))), np.zeros((4, 4)))
    assert f(np.zeros((3, 0))).shape == (0, 0)


def test_gram_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    pytensor.gradient.verify_grad(lambda A: (gram(A) * np.arange(16.0).reshape(4, 4)).sum(),
                                  [rng.standard_normal((6, 4))], rng=rng)


def test_gram_rejects_a_vector():
    with pytest.raises(TypeError, match="matrix"):
        gram(pt.dvector())


@pytest.mark.parametrize("method", ["kflr", "kfra", "kfac"])
def test_the_kronecker_factors_use_the_symmetric_product(method):
    """Q = ĀᵀĀ/N for every method, and KFRA's E[f′f′ᵀ] or KFLR/KFAC's SᵀS/N, are Gram Ops (half the arithmetic)."""
    net = pt_kfgn.mlp([5, 4, 3], ["tanh", "identity"], dtype="float64")
    chain = pt_kfgn.layer_graph(net.output)
    noise = pt.dmatrix("noise") if method == "kfac" else None
    factors = kronecker_factors(chain, pt_kfgn.get_loss("bce"), pt.dmatrix("Y"), method, noise)
    for Q, G in factors:
        assert any(isinstance(v.owner.op, Gram) for v in pytensor.graph.ancestors([Q]) if v.owner)
    first_G = factors[0][1]
    assert any(isinstance(v.owner.op, Gram) for v in pytensor.graph.ancestors([first_G]) if v.owner)
