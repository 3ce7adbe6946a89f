"""Damped inversion of Kronecker-factored blocks (eq. 33-38).

In the Lasagne layout a layer's gradient is the matrix ``∇ = vstack([∇W, ∇b])`` of shape
``(d_in + 1, d_out)`` and ``(Q ⊗ G) vec(V) = vec(Q V G)`` for ``vec`` = C-order ravel; hence
``(Q_d ⊗ G_d)⁻¹ vec(∇) = vec(Q_d⁻¹ ∇ G_d⁻¹)``: two Cholesky solves, no explicit inverse, on the steps that
factorise anyway (the paper's step).  Amortised inverses [ours] keep the explicit inverses ``Q_d⁻¹, G_d⁻¹``
instead, so that the steps which reuse them apply them by two GEMMs, cheaper than the triangular solves, at the
price of one inversion on the step that computes them (measured: docs/performance.md).
"""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.tensor.linalg import cho_solve, cholesky, eigh, solve_triangular

from pt_kfgn.graph.gram import gram


def trace_norm_pi(Q, G):
    """``π = √((tr Q / dim Q) / (tr G / dim G))`` (eq. 38, trace norm).

    [ours] ``π = 1`` when either mean trace is not positive and finite (a dead layer has ``tr G = 0``, which
    would make π infinite and every later step fail).
    """
    tq = pt.trace(Q) / pt.cast(Q.shape[0], Q.dtype)
    tg = pt.trace(G) / pt.cast(G.shape[0], G.dtype)
    ok = (tq > 0) & (tg > 0) & pt.isfinite(tq) & pt.isfinite(tg)
    return pt.switch(ok, pt.sqrt(pt.switch(ok, tq / tg, 1)), 1)


def add_to_diagonal(M, c):
    """``M + c I`` by an indexed increment of the diagonal (no dense identity is built or multiplied)."""
    # int64 bounds: PyTensor's int8 constant 0 as the start overflowed in JAX's ``arange`` when the stop was a
    # concrete 625 ("Python integer 625 out of bounds for int8": FACES with KFAC)
    idx = pt.arange(pt.constant(0, dtype="int64"), M.shape[0], pt.constant(1, dtype="int64"))
    return pt.inc_subtensor(M[idx, idx], c)


def damped_factors(Q, G, eps):
    """Factored Tikhonov (eq. 36): ``(Q + π√ε I, G + √ε/π I)``, symmetrised."""
    pi = trace_norm_pi(Q, G)
    s = pt.sqrt(eps)
    Qd = add_to_diagonal(0.5 * (Q + Q.T), pi * s)
    Gd = add_to_diagonal(0.5 * (G + G.T), s / pi)
    return Qd, Gd


def damped_cholesky(Q, G, eps):
    """Lower Cholesky factors ``(L_Q, L_G)`` of the damped factors; a failed factorisation gives NaN."""
    Qd, Gd = damped_factors(Q, G, eps)
    return (cholesky(Qd, lower=True, on_error="nan", check_finite=False),
            cholesky(Gd, lower=True, on_error="nan", check_finite=False))


def cholesky_kron_solve(Lq, Lg, grad):
    """``(L_Q L_Qᵀ)⁻¹ grad (L_G L_Gᵀ)⁻¹``, i.e. ``(Q_d ⊗ G_d)⁻¹ vec(grad)``: two Cholesky solves."""
    left = cho_solve((Lq, True), grad)  # Q_d⁻¹ ∇
    return cho_solve((Lg, True), left.T).T  # (G_d⁻¹ (Q_d⁻¹ ∇)ᵀ)ᵀ = Q_d⁻¹ ∇ G_d⁻¹


def cholesky_inverse(L):
    """``(L Lᵀ)⁻¹ = L⁻ᵀ L⁻¹ = gram(L⁻¹)`` from a lower Cholesky factor: one triangular solve against the
    identity and one symmetric rank-k product, so the inverse is exactly symmetric.  NaN in ``L`` (a failed
    factorisation) gives NaN.

    The identity is built at run time (zeros plus a diagonal): with the static shapes of the optimiser's
    caches, ``pt.eye`` would be folded into a constant array, and Numba does not cache a function holding a
    large constant, so every step kind would recompile from scratch in every process (≈ 40 s each on the MNIST
    autoencoder, measured).
    """
    eye = add_to_diagonal(pt.zeros_like(L), 1)
    return gram(solve_triangular(L, eye, lower=True, check_finite=False))


def damped_inverses(Q, G, eps):
    """The explicit inverses ``(Q_d⁻¹, G_d⁻¹)`` of the damped factors (eq. 36), through their Cholesky factors."""
    return tuple(cholesky_inverse(L) for L in damped_cholesky(Q, G, eps))


def inverse_kron_apply(Qi, Gi, grad):
    """``Qi grad Gi``, i.e. ``(Q_d ⊗ G_d)⁻¹ vec(grad)`` from explicit inverses: two GEMMs."""
    return pt.dot(pt.dot(Qi, grad), Gi)


def kron_solve(Q, G, grad, eps):
    """``(Q_d ⊗ G_d)⁻¹ vec(grad)`` as a ``(d_in + 1, d_out)`` matrix, by Cholesky (eq. 35-38).

    A failed Cholesky gives NaN (``on_error="nan"``), which the caller's guard rejects.
    """
    return cholesky_kron_solve(*damped_cholesky(Q, G, eps), grad)


def exact_kron_solve(Q, G, grad, eps):
    """``(Q ⊗ G + ε I)⁻¹ vec(grad)`` exactly, by two eigendecompositions (eq. 35; used in App. F.2)."""
    s, U = eigh(0.5 * (Q + Q.T))
    t, V = eigh(0.5 * (G + G.T))
    inner = pt.dot(pt.dot(U.T, grad), V) / (s[:, None] * t[None, :] + eps)
    return pt.dot(pt.dot(U, inner), V.T)
