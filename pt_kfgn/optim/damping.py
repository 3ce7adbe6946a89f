"""Damped inversion of Kronecker-factored blocks (eq. 33-38).

In the Lasagne layout a layer's gradient is the matrix ``∇ = vstack([∇W, ∇b])`` of shape
``(d_in + 1, d_out)`` and ``(Q ⊗ G) vec(V) = vec(Q V G)`` for ``vec`` = C-order ravel; hence
``(Q_d ⊗ G_d)⁻¹ vec(∇) = vec(Q_d⁻¹ ∇ G_d⁻¹)``: two Cholesky solves, no explicit inverse.
"""

from __future__ import annotations

import pytensor.tensor as pt
from pytensor.tensor.linalg import cho_solve, cholesky, eigh


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
    idx = pt.arange(M.shape[0])
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


def layer_matrix(gW, gb):
    """``vstack([gW, gb])``: a layer's parameters (or gradient) as one ``(d_in + 1, d_out)`` matrix."""
    return pt.concatenate([gW, gb[None, :]], axis=0)
