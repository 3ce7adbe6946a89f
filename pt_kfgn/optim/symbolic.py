"""The KFGN step as update expressions, Lasagne style: for a user's own ``pytensor.function``.

::

    updates, info = pk.kfgn_updates(h_L, y, "bce", method="kfra", lam=1.5)
    step = pytensor.function([x, y], [info["loss"], info["alpha"], info["status"]], updates=updates)

The same stages as :class:`pt_kfgn.optim.kfgn.KFGN` (:mod:`pt_kfgn.optim.stages`), without what needs the
host: the λ/γ adaptation (eq. 42-43), retries, the rollback and the step kinds.  ``lam`` and ``gamma`` may be
PyTensor scalars or shared variables, so a user can adapt them in their own loop.
"""

from __future__ import annotations

from collections import OrderedDict

import pytensor.tensor as pt

from pt_kfgn.backend import jax_precision
from pt_kfgn.curvature.factors import KRONECKER
from pt_kfgn.graph import gram
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.graph.walk import layer_graph
from pt_kfgn.optim import stages
from pt_kfgn.optim.base import regularised_objective


def _scalar(value, name: str, dtype: str):
    v = pt.as_tensor_variable(value)
    if v.ndim != 0:
        raise ValueError(f"{name} must be a scalar (a number or a PyTensor scalar), got ndim={v.ndim}")
    return pt.cast(v, dtype)


def kfgn_updates(output, targets, loss, method: str = "kfra", *, lam, gamma=None, eta: float = 1e-5,
                 noise=None, alpha_max: float | None = None):
    """One damped Kronecker-factored Gauss-Newton step ``θ ← θ + α*δ`` as PyTensor update expressions.

    Parameters
    ----------
    output : TensorVariable
        The network's last pre-activation ``h_L`` (N, d_L): a chain of ``dot(a, W) + b`` joined by
        elementwise functions over shared ``W``, ``b`` (:func:`pt_kfgn.graph.walk.layer_graph`).
    targets : TensorVariable
        The targets, a matrix like ``output``.
    loss : str or Loss
        "mse", "bce", "softmax_ce", "mixture" or a :class:`pt_kfgn.graph.losses.Loss`.
    method : {"kflr", "kfra", "kfac"}
        The Kronecker factors (eq. 23-26, App. C).
    lam : float or scalar TensorVariable
        λ, the damping of the full GN in the quadratic model that gives ``α*`` (eq. 39-41, ``λ + η``).
    gamma : float or scalar TensorVariable, optional
        γ, the damping of the factors, ``ε = γ + η`` split by π (eq. 36-38); default ``lam``.
    eta : float
        Weight decay η (the objective is ``Ē + ½η‖θ‖²``).
    noise : TensorVariable, optional
        KFAC only, required there: the standard-normal or uniform draws of its sampled targets, a matrix
        ``(N, loss.noise_columns(d_L))`` fed by the caller (e.g. from :meth:`Loss.draw_noise`).
    alpha_max : float, optional
        Cap on ``α*``.

    Returns
    -------
    updates : OrderedDict
        ``{shared parameter: new value}`` for ``pytensor.function(..., updates=updates)``; the parameters are
        unchanged when the step's status is not 0.
    info : dict
        Symbolic ``loss`` (Ē), ``objective`` (f), ``alpha`` (α*), ``model_change`` (M̂(α*δ) − M̂(0)),
        ``status`` (0 = applied; codes in :data:`pt_kfgn.optim.stages.STATUS`) and ``direction`` (δ).

    The Kronecker factors' ``Gram`` op is registered with PyTensor's Numba and JAX dispatchers, so the
    updates compile in the stock modes as well as through :func:`pt_kfgn.backend.compile_function`.
    """
    if method not in KRONECKER:
        raise ValueError(f"method must be one of {list(KRONECKER)}, got {method!r}")
    loss = get_loss(loss)
    chain = layer_graph(output)
    targets = pt.as_tensor_variable(targets)
    if targets.ndim != 2:
        raise ValueError(f"targets must be a matrix like the output, got ndim={targets.ndim}")
    if method == "kfac" and noise is None:
        raise ValueError("KFAC samples its targets: pass noise= (a symbolic matrix, N × "
                         "loss.noise_columns(d_L), fed from Loss.draw_noise)")
    dtype = output.dtype
    lam = _scalar(lam, "lam", dtype)
    gamma = lam if gamma is None else _scalar(gamma, "gamma", dtype)
    eta_t = pt.constant(eta, dtype=dtype)
    for backend in ("numba", "jax"):
        try:
            gram.register(backend)
        except ImportError:  # the optional backend is not installed: its mode cannot be used anyway
            pass
    try:  # a float64 graph under mode="JAX" after a float32 one would otherwise run in float32
        jax_precision([output, targets])
    except ImportError:
        pass
    Ebar, f0 = regularised_objective(loss, chain, targets, eta)
    params = chain.params
    grads = pt.grad(f0, params)
    factors = stages.curvature(chain, loss, targets, method, noise if method == "kfac" else None)
    deltas = stages.direction(chain, stages.damped_inverse(factors, gamma + eta_t), grads)
    model = stages.quadratic_model(chain, loss, targets, params, grads, deltas, lam, eta_t, alpha_max)
    status = stages.step_status(f0, model)
    ok = pt.eq(status, 0)
    updates = OrderedDict((p, pt.switch(ok, p + model.alpha * d, p)) for p, d in zip(params, deltas))
    info = {"loss": Ebar, "objective": f0, "alpha": model.alpha, "model_change": model.model_change,
            "status": status, "direction": deltas}
    return updates, info
