"""Factored Tikhonov damping (eq. 36-38): the Kronecker solves and explicit inverses against dense ones."""


import numpy as np
import pytensor.tensor as pt
import pytest
from reference import spd

from pt_kfgn.backend import compile_function
from pt_kfgn.optim.damping import damped_inverses, exact_kron_solve, inverse_kron_apply, kron_solve


# -- factored Tikhonov damping ------------------------------------------------------------------------
def test_factored_tikhonov_solve_equals_dense_kron_solve():
    r = np.random.default_rng(5)
    Q, G, grad, eps = spd(r, 4), spd(r, 3), r.standard_normal((4, 3)), 0.37
    q, g, m, e = pt.matrix(), pt.matrix(), pt.matrix(), pt.scalar()
    f = compile_function([q, g, m, e], [kron_solve(q, g, m, e), exact_kron_solve(q, g, m, e)])
    ours, exact = f(Q, G, grad, eps)
    pi = np.sqrt((np.trace(Q) / 4) / (np.trace(G) / 3))
    s = np.sqrt(eps)
    ref = np.linalg.solve(np.kron(Q + pi * s * np.eye(4), G + s / pi * np.eye(3)), grad.ravel())
    np.testing.assert_allclose(ours.ravel(), ref, rtol=1e-10)
    ref_exact = np.linalg.solve(np.kron(Q, G) + eps * np.eye(12), grad.ravel())
    np.testing.assert_allclose(exact.ravel(), ref_exact, rtol=1e-10)


@pytest.mark.parametrize("backend", ["numba", "jax", "c"])
def test_explicit_damped_inverses_match_the_cholesky_solve(backend):
    """Amortised inverses [ours] cache ``(Q_d⁻¹, G_d⁻¹)`` and apply them by GEMMs: the same direction as the
    Cholesky solve, each inverse exactly symmetric and NaN when the factorisation fails.

    Caught: the Gram of ``L⁻¹`` taken the other way round (``L⁻¹ L⁻ᵀ``) and a factor's inverse left out."""
    if backend == "jax":
        pytest.importorskip("jax")
    dtype, tol = "float64", 1e-10  # JAX too: a float64 graph switches its x64 mode on
    r = np.random.default_rng(6)
    Q, G, grad, eps = spd(r, 5), spd(r, 3), r.standard_normal((5, 3)), 0.37
    # static shapes: JAX traces ``arange`` and ``eye`` only with constant sizes (the optimiser's caches have them)
    q, g, m = (pt.tensor(dtype=dtype, shape=sh) for sh in ((5, 5), (3, 3), (5, 3)))
    e = pt.scalar(dtype=dtype)
    Qi, Gi = damped_inverses(q, g, e)
    f = compile_function([q, g, m, e], [Qi, Gi, inverse_kron_apply(Qi, Gi, m), kron_solve(q, g, m, e)],
                         backend=backend)
    qi, gi, applied, solved = f(*(np.asarray(a, dtype) for a in (Q, G, grad, eps)))
    pi = np.sqrt((np.trace(Q) / 5) / (np.trace(G) / 3))
    s = np.sqrt(eps)
    np.testing.assert_allclose(qi, np.linalg.inv(Q + pi * s * np.eye(5)), rtol=tol)
    np.testing.assert_allclose(gi, np.linalg.inv(G + s / pi * np.eye(3)), rtol=tol)
    assert np.array_equal(qi, qi.T) and np.array_equal(gi, gi.T)
    np.testing.assert_allclose(applied, solved, rtol=tol)
    bad = f(*(np.asarray(a, dtype) for a in (-np.eye(5), np.eye(3), np.ones((5, 3)), 0.1)))
    assert np.isnan(bad[0]).any() and np.isnan(bad[2]).any()


def test_failed_cholesky_gives_nan_not_an_exception():
    q, g, m, e = pt.matrix(), pt.matrix(), pt.matrix(), pt.scalar()
    f = compile_function([q, g, m, e], kron_solve(q, g, m, e))
    Q = -np.eye(3)  # negative trace: damped factor is not positive definite
    out = f(Q, np.eye(2), np.ones((3, 2)), 0.1)
    assert not np.all(np.isfinite(out))
