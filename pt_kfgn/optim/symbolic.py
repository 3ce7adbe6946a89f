"""The KFGN step as update expressions, Lasagne style: for a user's own ``pytensor.function``.

::

    updates, info = pk.kfgn_updates(h_L, y, "bce", method="kfra", lam=1.5)
    step = pytensor.function([x, y], [info["loss"], info["alpha"], info["status"]], updates=updates)

:class:`pt_kfgn.optim.kfgn.KFGN` builds each of its step kinds on :func:`kfgn_step`, the step
:func:`kfgn_updates` returns, and keeps what needs state across steps: the λ rule (eq. 42), γ's candidates
(eq. 43), cached factors and inverses, averaging, retries and the rollback.  ``lam`` and ``gamma`` may be
PyTensor scalars or shared variables, so a user can adapt them in their own loop.
"""

from __future__ import annotations

from collections import OrderedDict

import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace

from pt_kfgn.backend import jax_precision
from pt_kfgn.curvature.factors import KRONECKER
from pt_kfgn.graph import gram
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.graph.walk import LayerGraph, layer_graph
from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim import stages
from pt_kfgn.optim.base import regularised_objective

METHODS = (*KRONECKER, "blockdiag-exact")  # the curvatures of a step (KFGN's methods)


def _scalar(value, name: str, dtype: str):
    v = pt.as_tensor_variable(value)
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar (a number or a PyTensor scalar), got ndim={v.ndim}")
    return pt.cast(v, dtype)


def kfgn_updates(output, targets, loss, method: str = "kfra", *, lam, gamma=None, eta: float = 1e-5,
                 noise=None, alpha_max: float | None = None, factors=None, inverse=None, explicit: bool = False,
                 trial: bool = False, reject_increase: bool = False, spike=None, loss_bound: bool = True):
    """One damped Kronecker-factored Gauss-Newton step ``θ ← θ + α*δ`` as PyTensor update expressions.

    Parameters
    ----------
    output : TensorVariable or LayerGraph
        The network's last pre-activation ``h_L`` (N, d_L): dense layers ``dot(a, W) + b`` joined by
        elementwise functions over shared ``W``, ``b`` (:func:`pt_kfgn.graph.walk.layer_graph`), or its
        :class:`~pt_kfgn.graph.walk.LayerGraph`.
    targets : TensorVariable
        The targets, a matrix like ``output``.
    loss : str or Loss
        "mse", "bce", "softmax_ce", "mixture" or a :class:`pt_kfgn.graph.losses.Loss`.
    method : {"kflr", "kfra", "kfac", "blockdiag-exact"}
        The Kronecker factors (eq. 23-26, App. C), or the exact Gauss-Newton blocks (eq. 12-19; tiny nets).
    lam : float or scalar TensorVariable
        λ, the damping of the full GN in the quadratic model that gives ``α*`` (eq. 39-41, ``λ + η``).
    gamma : float, scalar TensorVariable or a sequence of them, optional
        γ, the damping of the factors, ``ε = γ + η`` split by π (eq. 36-38); default ``lam``.  A sequence is the
        greedy search of eq. 43: each candidate gives a direction and a model, the step takes the one with the
        lowest model value (a tie goes to the first; :func:`pt_kfgn.optim.stages.choose_damping`).
    eta : float
        Weight decay η (the objective is ``Ē + ½η‖θ‖²``).
    noise : TensorVariable, optional
        KFAC only, required there unless ``factors`` are given: the standard-normal or uniform draws of its
        sampled targets, a matrix ``(N, loss.noise_columns(d_L))`` fed by the caller (e.g. from
        :meth:`Loss.draw_noise`).
    alpha_max : float, optional
        Cap on ``α*``.
    loss_bound : bool
        Do not let the quadratic model promise a fall of ``f`` below the loss's infimum on the batch
        (:meth:`pt_kfgn.graph.losses.Loss.infimum`; :func:`pt_kfgn.optim.stages.quadratic_model`) [ours].

    Other Parameters
    ----------------
    factors : list of (Q, G), optional
        Factors to use instead of this batch's (cached or averaged ones: :class:`~pt_kfgn.optim.kfgn.KFGN`'s
        amortised curvature and EMA).
    inverse : list of (Q_d⁻¹, G_d⁻¹), optional
        Cached explicit damped inverses (amortised inverses); ``gamma`` then only names the γ they hold.
    explicit : bool
        Invert the damped factors explicitly (to cache them: ``info["inverse"]``) instead of Cholesky solves.
    trial : bool
        Evaluate the objective after the step: ``info["new_objective"]`` and the reduction ratio
        ``info["rho"]`` (eq. 42); with ``reject_increase`` a step that raises it is not applied (status 5).
    spike : boolean scalar TensorVariable, optional
        True blocks the step (status 6: KFGN's rollback rule).

    Returns
    -------
    updates : OrderedDict
        ``{shared parameter: new value}`` for ``pytensor.function(..., updates=updates)``; the parameters are
        unchanged when the step's status is not 0.
    info : dict
        Symbolic ``loss`` (Ē), ``objective`` (f), ``alpha`` (α*, or the shorter step of ``loss_bound``),
        ``bounded`` (int8: 1 when ``loss_bound`` shortened it), ``model_change`` (M̂(αδ) − M̂(0)), ``status``
        (0 = applied; codes in :data:`pt_kfgn.optim.stages.STATUS`), ``direction`` (δ), ``gamma`` (the γ
        taken), ``factors``, ``inverse`` (the damped inverse of a single candidate), ``new_objective`` and
        ``rho`` (with ``trial``, else None).

    The Kronecker factors' ``Gram`` op is registered with PyTensor's Numba and JAX dispatchers, so the
    updates compile in the stock modes as well as through :func:`pt_kfgn.backend.compile_function`.
    :class:`pt_kfgn.optim.kfgn.KFGN` builds each of its step kinds on this function's step (:func:`kfgn_step`)
    and adds what needs state across steps: the λ rule, γ's candidates, cached factors and inverses, averaging
    and the rollback.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    loss = get_loss(loss)
    chain = output if isinstance(output, LayerGraph) else layer_graph(output)
    targets = pt.as_tensor_variable(targets)
    if targets.ndim != 2:
        raise ValueError(f"targets must be a matrix like the output, got ndim={targets.ndim}")
    if method == "kfac" and noise is None and factors is None:
        raise ValueError("KFAC samples its targets: pass noise= (a symbolic matrix, N × "
                         "loss.noise_columns(d_L), fed from Loss.draw_noise)")
    for backend in ("numba", "jax"):  # what the stock modes need (compile_function prepares its own)
        try:
            gram.register(backend)
        except ImportError:  # the optional backend is not installed: its mode cannot be used anyway
            pass
    try:  # a float64 graph under mode="JAX" after a float32 one would otherwise run in float32
        jax_precision([chain.output, targets])
    except ImportError:
        pass
    return kfgn_step(chain, targets, loss, method, lam=lam, gamma=gamma, eta=eta, noise=noise,
                     alpha_max=alpha_max, factors=factors, inverse=inverse, explicit=explicit, trial=trial,
                     reject_increase=reject_increase, spike=spike, loss_bound=loss_bound)


def kfgn_step(chain, targets, loss, method: str = "kfra", *, lam, gamma=None, eta: float = 1e-5, noise=None,
              alpha_max: float | None = None, factors=None, inverse=None, explicit: bool = False,
              trial: bool = False, reject_increase: bool = False, spike=None, loss_bound: bool = True):
    """The step of :func:`kfgn_updates` (same arguments and returns), on a
    :class:`~pt_kfgn.graph.walk.LayerGraph`, a :class:`~pt_kfgn.graph.losses.Loss` and a target matrix that the
    caller has checked, without preparing PyTensor's stock modes (no JAX import):
    :class:`~pt_kfgn.optim.kfgn.KFGN`, which compiles through :func:`pt_kfgn.backend.compile_function`, builds
    its step kinds on it."""
    dtype = chain.output.dtype
    lam = _scalar(lam, "lam", dtype)
    gammas = [lam] if gamma is None else [_scalar(g, "gamma", dtype) for g in (
        gamma if isinstance(gamma, list | tuple) else [gamma])]
    if inverse is not None and len(gammas) != 1:
        raise ValueError("cached inverses hold one γ: pass one gamma with inverse=")
    eta_t = pt.constant(eta, dtype=dtype)
    Ebar, f0 = regularised_objective(loss, chain, targets, eta)
    params = chain.params
    grads = pt.grad(f0, params)
    floor = loss.infimum(targets) if loss_bound else None
    gap = None if floor is None else f0 - floor
    if factors is None:
        factors = stages.curvature(chain, loss, targets, method, noise if method == "kfac" else None)
    candidates = []
    for g in gammas:  # one direction and model per γ (eq. 35-41)
        if method == "blockdiag-exact":
            inv, deltas = [], stages.direction(chain, factors, grads, exact_blocks_eps=g + eta_t)
        elif inverse is not None:
            inv, deltas = inverse, stages.direction(chain, inverse, grads, explicit=True)
        else:
            inv = stages.damped_inverse(factors, g + eta_t, explicit)
            deltas = stages.direction(chain, inv, grads, explicit=explicit)
        model = stages.quadratic_model(chain, loss, targets, params, grads, deltas, lam, eta_t, alpha_max, gap)
        candidates.append((deltas, model, inv))
    deltas, model, chosen, _ = stages.choose_damping([c[:2] for c in candidates], gammas)
    new_params = [p + model.alpha * d for p, d in zip(params, deltas)]
    f_new = rho = None
    if trial:
        f_new = clone_replace(f0, replace=dict(zip(params, new_params)))
        rho = rules.reduction_ratio(f_new, f0, model.model_change)
    status = stages.step_status(f0, model, f_new, reject_increase, spike)
    ok = pt.eq(status, 0)
    updates = OrderedDict((p, pt.switch(ok, q, p)) for p, q in zip(params, new_params))
    info = {"loss": Ebar, "objective": f0, "alpha": model.alpha, "model_change": model.model_change,
            "bounded": model.bounded,
            "status": status, "direction": deltas, "gamma": chosen, "factors": factors,
            "inverse": candidates[0][2] if len(candidates) == 1 else None, "new_objective": f_new, "rho": rho}
    return updates, info
