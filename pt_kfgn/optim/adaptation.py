"""Scalar rules of Appendix B: step size, model change, reduction ratio, LM λ, averaging weights, bounds.

They take and return plain numbers (the symbolic step uses the same arithmetic on PyTensor scalars).
"""

from __future__ import annotations

import math


def step_size(grad_dot_delta, curvature):
    """``α* = −δᵀ∇f / δᵀĈδ`` (eq. 39-41)."""
    return -grad_dot_delta / curvature


def bounded_step(grad_dot_delta, root, gap):
    """The smaller ``α > 0`` with ``M̂(αδ) − M̂(0) = −gap``: ``2·gap / (−δᵀ∇f + root)``, where
    ``root = √((δᵀ∇f)² − 2·gap·δᵀĈδ)`` (the stable form of the quadratic's root; real when the model's
    minimum promises more than ``gap``, ``½(δᵀ∇f)²/δᵀĈδ > gap``) [ours]."""
    return 2 * gap / (root - grad_dot_delta)


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


def loss_spike(loss_after, loss_before, factor):
    """Whether a step raised a batch's loss beyond ``factor`` × its value before, ``|·|`` for losses of any
    sign: ``loss_after − loss_before > (factor − 1)·|loss_before|`` [ours].

    The rollback test of :class:`pt_kfgn.optim.kfgn.KFGN`: the next batch is a fresh sample, so a step that
    fits its own batch (ρ ≈ 1) but multiplies the loss elsewhere is caught one step later.  Numbers or
    PyTensor scalars.
    """
    return loss_after - loss_before > (factor - 1) * abs(loss_before)


def averaging_weight(t: int, zeta: float) -> float:
    """``ζ_t = min(1 − 1/t, ζ)`` (eq. 44-45): the exact running mean while t is small."""
    return min(1.0 - 1.0 / t, zeta)


def ema_weight(k: int, decay: float) -> float:
    """Weight on the old factors at step k: ``min(1 − 1/k, decay)`` (0 on the first step, notes pitfall 6)."""
    return min(1.0 - 1.0 / k, decay) if decay > 0 else 0.0


def validate_positive(required=(), **kwargs) -> None:
    """Raise a clear ValueError for hyperparameters that must be positive (None allowed unless ``required``)."""
    for name, value in kwargs.items():
        if value is None and name not in required:
            continue
        if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
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
        ok = not isinstance(value, bool) and isinstance(value, int | float) and (low <= value if closed_low else low < value) and value < high
        if not ok:
            raise ValueError(f"{name} must lie in {'[' if closed_low else '('}{low}, {high}), got {value!r}")


# Bounds on the two dampings [ours].  The upper bounds stop a long run of rejections from overflowing; a run
# that keeps failing there stops with a clear error (KFGN's ``max_rejections``).  The lower bounds keep the
# Levenberg-Marquardt rule and the γ search able to act (round 3 found both inert at a 1e-20 floor):
# * λ ≥ η (tensorflow/kfac floors its damping at ``min_damping + l2_reg`` likewise): then a ρ < ¼ verdict,
#   λ → λ/ω₁, raises the model's damping ``λ + η`` by at least ``(1/ω₁ − 1)/2`` (14.6 % at ω₁ = (19/20)⁵);
#   below η, λ no longer changes ``δᵀĈδ`` in any working precision and the rule does nothing;
# * γ ≥ η, so the factors' damping ``ε = γ + η`` stays ≥ 2η and the γ search's three candidates
#   ``{ω₂ε, ε, ε/ω₂}`` always differ by far more than float32 rounding.
# With η = 0 both floors are ``DAMPING_FLOOR`` (kfac-jax's default ``min_damping``).
DAMPING_FLOOR = 1e-8
LAMBDA_MAX = 1e8
GAMMA_MAX = 1e4


def damping_floor(eta: float, min_damping: float | None = None) -> float:
    """The floor of λ and γ: ``min_damping`` when given, else ``max(η, 1e-8)`` [ours]."""
    return float(min_damping) if min_damping is not None else max(float(eta), DAMPING_FLOOR)


def lambda_bounds(eta: float, min_damping: float | None = None) -> tuple[float, float]:
    """``[max(η, 1e-8), 1e8]``: the range of λ (see the module's note on the floors) [ours]."""
    return (damping_floor(eta, min_damping), LAMBDA_MAX)


def gamma_bounds(eta: float, min_damping: float | None = None) -> tuple[float, float]:
    """``[max(η, 1e-8), 1e4]``: the range of γ, so that ``ε = γ + η ≥ 2η`` [ours]."""
    return (damping_floor(eta, min_damping), GAMMA_MAX)


def gamma_candidates(gamma, eta: float, omega2: float, bounds: tuple[float, float], clip_fn=None) -> list:
    """The greedy search's candidates (eq. 43) ``[γ, γ₋, γ₊]``, **the current value first**.

    The grid acts on the damping that γ controls, ``ε = γ + η`` (eq. 35-36): ``ε₋ = ω₂ε``, ``ε₊ = ε/ω₂``,
    ``γ± = ε± − η``, clipped into ``bounds``.  M&G 2015 (§6.6) search their per-factor damping
    ``γ_MG = √ε`` with ``ω₂ = (√(19/20))^T₂``; on ε that grid is ``ω₂ = (19/20)^T₂`` (KFGN's default).
    The current value comes first so that a tie (candidates equal after clipping, or equal model values)
    keeps it: an argmin that returned the smallest γ on ties made γ ratchet down in round 3.
    Works on floats and on PyTensor scalars (``clip_fn`` clips; default :func:`clip`).
    """
    clip_fn = clip_fn or clip
    eps = gamma + eta
    return [gamma, clip_fn(omega2 * eps - eta, bounds), clip_fn(eps / omega2 - eta, bounds)]


def raised_damping(lam: float, gamma: float, eta: float, omega1: float, omega2: float,
                   min_damping: float | None = None) -> tuple[float, float]:
    """After a rejected step: ``λ/ω₁`` and ``ε/ω₂`` (``γ = ε − η``), within their bounds [ours]."""
    lam = clip(lam / omega1, lambda_bounds(eta, min_damping))
    gamma = clip((gamma + eta) / omega2 - eta, gamma_bounds(eta, min_damping))
    return lam, gamma


def clip(value: float, bounds: tuple[float, float]) -> float:
    """``value`` clipped into ``[low, high]``."""
    return min(max(value, bounds[0]), bounds[1])
