"""The named symbolic stages of one KFGN step (Appendix B), each a plain function of PyTensor variables.

:class:`pt_kfgn.optim.kfgn.KFGN` composes them into one compiled function per step kind; the profiler
(the repository's stage profile), the diagnostics and the tests call the same functions.

1. :func:`pt_kfgn.optim.base.regularised_objective` — ``Ē`` and ``f = Ē + ½η‖θ‖²``;
2. :func:`curvature` — the Kronecker factors ``(Q, G)`` per layer (KFLR, KFRA, KFAC, or exact blocks);
3. :func:`damped_inverse` / :func:`direction` — factored Tikhonov damping and ``δ = −Ĉ⁻¹∇f`` (eq. 33-38);
4. :func:`quadratic_model` — ``α*`` from a forward-mode GN product and the model change (eq. 39-41);
5. :func:`choose_damping` — the greedy γ choice among candidates (eq. 43);
6. :func:`step_status` — why a step must not be applied (0: it may).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.curvature.factors import exact_blocks, kronecker_factors
from pt_kfgn.curvature.products import gn_quadratic_form
from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim.damping import (
    add_to_diagonal,
    cholesky_kron_solve,
    damped_cholesky,
    damped_inverses,
    inverse_kron_apply,
    trace_norm_pi,
)

# Why a step was not applied; the codes are outputs of the compiled step (one home for the messages).
STATUS = {
    0: "accepted",
    1: "the loss at the current parameters is not finite",
    2: "the direction is not finite (a damped factor's Cholesky factorisation failed)",
    3: "the quadratic model predicts no decrease (α* not finite or M̂(α*δ) − M̂(0) ≥ 0)",
    4: "the loss after the step is not finite",
    5: "the loss rose on the batch (ρ < 0)",
    6: "the last step raised the loss on this (fresh) batch beyond the rollback factor; it is rolled back",
}


def curvature(chain, loss, y, method: str, noise=None):
    """Stage 2: per-layer curvature (``noise``: KFAC's symbolic noise matrix).

    ``method`` "kflr", "kfra", "kfac": ``[(Q, G), ...]`` (eq. 21-26, App. C); "blockdiag-exact": the exact
    Gauss-Newton blocks (eq. 12-19; tiny nets only).
    """
    if method == "blockdiag-exact":
        return exact_blocks(chain, loss, y, "gn")
    return kronecker_factors(chain, loss, y, method, noise)


def damped_inverse(factors, eps, explicit: bool = False):
    """Stage 3a: the lower Cholesky factors of the factored-Tikhonov-damped ``(Q_d, G_d)`` (eq. 36-38), or
    with ``explicit`` their inverses ``(Q_d⁻¹, G_d⁻¹)`` (what amortised inverses cache [ours]).

    A failed factorisation gives NaN (``on_error="nan"``), which :func:`step_status` reports as code 2.
    """
    damp = damped_inverses if explicit else damped_cholesky
    return [damp(Q, G, eps) for Q, G in factors]


def direction(graph, inverse, grads, exact_blocks_eps=None, explicit: bool = False):
    """Stage 3b: ``δ = −(Q_d ⊗ G_d)⁻¹ ∇f`` per layer, shaped like ``graph.params`` (eq. 35).

    ``inverse``: pairs from :func:`damped_inverse`: Cholesky factors, ``(L_Q L_Qᵀ)⁻¹ ∇ (L_G L_Gᵀ)⁻¹`` by two
    triangular solve pairs per layer, or with ``explicit`` the inverses, ``Q_d⁻¹ ∇ G_d⁻¹`` by two GEMMs.
    With ``exact_blocks_eps``, ``inverse`` holds exact GN blocks and each block is solved densely with
    damping ``exact_blocks_eps`` (diagnostics, tiny nets).
    """
    deltas = []
    for layer, pair, parts in zip(graph.layers, inverse, graph.per_layer(grads)):
        g = layer.matrix(parts)
        if exact_blocks_eps is not None:
            B = add_to_diagonal(pair, exact_blocks_eps)
            D = -pt.linalg.solve(B, g.ravel(), assume_a="pos").reshape(g.shape)
        else:
            D = -(inverse_kron_apply if explicit else cholesky_kron_solve)(*pair, g)
        deltas += layer.split(D)
    return deltas


@dataclass
class QuadraticModel:
    """``α*``, ``δᵀ∇f``, ``δᵀĈδ``, the model change ``M̂(α*δ) − M̂(0)`` of one direction, and whether the loss's
    infimum shortened α (int8 0/1)."""

    alpha: object
    grad_dot_delta: object
    curvature: object
    model_change: object
    delta_sq: object
    bounded: object


def quadratic_model(chain, loss, y, params, grads, deltas, lam, eta, alpha_max=None, gap=None) -> QuadraticModel:
    """Stage 4: ``Ĉ = Ḡ + (λ + η) I`` along ``δ`` by one forward-mode product (eq. 39-41).

    ``gap``: ``f(θ) − inf Ē`` (:meth:`pt_kfgn.graph.losses.Loss.infimum`).  Where the model's minimum along δ
    promises more, ``½(δᵀ∇f)²/δᵀĈδ > gap``, it is certainly wrong there (f cannot fall below ``inf Ē``), and
    α is the step at which the model reaches that bound instead (:func:`pt_kfgn.optim.adaptation.bounded_step`)
    [ours, the bound Polyak's step size uses; the mixture's confident mistakes, docs/algorithm.md].
    """
    gd = sum((d * g).sum() for d, g in zip(deltas, grads))
    dd = sum(pt.sqr(d).sum() for d in deltas)
    q = gn_quadratic_form(chain, loss, y, params, deltas) + (lam + eta) * dd
    alpha = rules.step_size(gd, q)
    bounded = pt.constant(0, dtype="int8")
    if gap is not None:
        disc = pt.sqr(gd) - 2 * q * gap
        shorter = rules.bounded_step(gd, pt.sqrt(pt.maximum(disc, 0)), gap)
        bounded = pt.cast((disc > 0) & (shorter < alpha), "int8")
        alpha = pt.switch(bounded, shorter, alpha)
    if alpha_max is not None:
        alpha = pt.minimum(alpha, alpha_max)
    return QuadraticModel(alpha, gd, q, rules.model_change(alpha, gd, q), dd, bounded)


def trace_norm_pis(factors) -> list:
    """The π of each layer's factored Tikhonov damping (eq. 38), for the log."""
    return [trace_norm_pi(Q, G) for Q, G in factors]


def choose_damping(candidates, gammas):
    """Stage 5: the candidate with the lowest model value (eq. 43); NaN never wins, and a tie goes to the
    first candidate (:func:`pt_kfgn.optim.adaptation.gamma_candidates` puts the current γ first).

    ``candidates``: ``[(deltas, QuadraticModel), ...]`` for ``gammas``; returns ``(deltas, model, γ, index)``
    (``index`` is None for a single candidate).
    """
    if len(candidates) == 1:
        return candidates[0][0], candidates[0][1], gammas[0], None
    values = pt.stack([pt.switch(pt.isnan(m.model_change), np.inf, m.model_change) for _, m in candidates])
    best = pt.argmin(values)
    n = len(candidates[0][0])
    deltas = [pt.stack([c[0][i] for c in candidates])[best] for i in range(n)]
    pick = [pt.stack([getattr(c[1], k) for c in candidates])[best]
            for k in ("alpha", "grad_dot_delta", "curvature", "model_change", "delta_sq", "bounded")]
    return deltas, QuadraticModel(*pick), pt.stack(gammas)[best], best


def step_status(f0, model: QuadraticModel, f_new=None, reject_increase: bool = False, spike=None):
    """Stage 6: 0 when the step may be applied, else the first failed check's code in :data:`STATUS`.

    With the trial loss ``f_new`` and ``reject_increase``, a step with ``f_new > f0`` (ρ < 0, eq. 42) is not
    applied (code 5) [ours, as Martens 2010's backtracking keeps no step that raises the objective].
    ``spike`` (a boolean scalar) says that the *previous* step raised this batch's loss beyond the rollback
    factor (code 6; the caller restores the parameters from before it) [ours].
    """
    status = 0
    if f_new is not None:
        status = pt.switch(~pt.isfinite(f_new), 4, pt.switch(f_new > f0, 5, 0) if reject_increase else 0)
    status = pt.switch(~(pt.isfinite(model.alpha) & (model.model_change < 0)), 3, status)
    status = pt.switch(~pt.isfinite(model.delta_sq), 2, status)
    if spike is not None:
        status = pt.switch(spike, 6, status)
    return pt.cast(pt.switch(~pt.isfinite(f0), 1, status), "int8")
