"""Scalar rules of Appendix B: step size, model change, reduction ratio, LM λ, averaging weights, bounds.

They take and return plain numbers (the symbolic step uses the same arithmetic on PyTensor scalars).
"""

from __future__ import annotations

import math


def step_size(grad_dot_delta, curvature):
    """``α* = −δᵀ∇f / δᵀĈδ`` (eq. 39-41)."""
    return -grad_dot_delta / curvature


def model_change(alpha, grad_dot_delta, curvature):
    """``M̂(αδ) − M̂(0) = α δᵀ∇f + ½ α² δᵀĈδ`` (eq. 32); ``½ α* δᵀ∇f`` at the optimal α* (eq. 39)."""
    return alpha * grad_dot_delta + 0.5 * alpha ** 2 * curvature


def reduction_ratio(f_new, f_old, predicted):
    """``ρ = (f(θ + α*δ) − f(θ)) / (M̂(α*δ) − M̂(0))`` (eq. 42); NaN when undefined (numbers or symbols)."""
    try:
        return (f_new - f_old) / predicted
    except ZeroDivisionError:
        return math.nan


def update_lambda(lam: float, rho: float, omega1: float, low: float = 0.25, high: float = 0.75) -> float:
    """Levenberg-Marquardt (eq. 42): ρ > ¾ ⇒ λ·ω₁; ρ < ¼ (or ρ not finite) ⇒ λ/ω₁; else unchanged."""
    if not math.isfinite(rho) or rho < low:
        return lam / omega1
    if rho > high:
        return lam * omega1
    return lam


def averaging_weight(t: int, zeta: float) -> float:
    """``ζ_t = min(1 − 1/t, ζ)`` (eq. 44-45): the exact running mean while t is small."""
    return min(1.0 - 1.0 / t, zeta)


def ema_weight(k: int, decay: float) -> float:
    """Weight on the old factors at step k: ``min(1 − 1/k, decay)`` (0 on the first step, notes pitfall 6)."""
    return min(1.0 - 1.0 / k, decay) if decay > 0 else 0.0


def validate_positive(**kwargs) -> None:
    """Raise a clear ValueError for hyperparameters that must be positive."""
    for name, value in kwargs.items():
        if value is None:
            continue
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def validate_int(low: int, **kwargs) -> tuple:
    """Integers ``>= low`` (not bools), returned in order; a clear ValueError otherwise."""
    out = []
    for name, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        out.append(int(value))
    return tuple(out)


def validate_interval(bounds: tuple[float, float], closed_low: bool, **kwargs) -> None:
    """Numbers in ``[low, high)`` (``closed_low``) or ``(low, high)``; a clear ValueError otherwise."""
    low, high = bounds
    for name, value in kwargs.items():
        ok = isinstance(value, int | float) and (low <= value if closed_low else low < value) and value < high
        if not ok:
            raise ValueError(f"{name} must lie in {'[' if closed_low else '('}{low}, {high}), got {value!r}")


# [ours] Bounds on the two dampings: λ and γ are clipped into these ranges after every rule, so that a long
# run of rejections (or of ρ > ¾) cannot drive them to overflow or to zero.  A run that keeps failing at the
# upper bound stops with a clear error (KFGN's ``max_rejections``) instead of stalling.
LAMBDA_BOUNDS = (1e-20, 1e8)
GAMMA_BOUNDS = (1e-20, 1e4)


def clip(value: float, bounds: tuple[float, float]) -> float:
    """``value`` clipped into ``[low, high]``."""
    return min(max(value, bounds[0]), bounds[1])
