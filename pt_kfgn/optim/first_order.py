"""First-order baselines (Sec. 5): SGD, momentum, Nesterov, Adam, with a halving learning rate.

Lasagne style: each rule returns an ``OrderedDict`` of updates for ``pytensor.function(updates=...)``;
the learning rate is a shared scalar, so the decay schedule and a grid search never recompile.
:class:`FirstOrder` wraps a rule in the common ``step(X, Y)`` interface.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytensor
import pytensor.tensor as pt

from pt_kfgn.backend import floatx
from pt_kfgn.optim.base import Optimizer, regularised_objective

RULES = ("sgd", "momentum", "nesterov", "adam")


def _zeros_like(p, name):
    return pytensor.shared(np.zeros_like(p.get_value()), name=f"{name}_{p.name}")


def _grads(loss_or_grads, params):
    """The gradients: given as a list, or of a scalar loss (Lasagne's ``loss_or_grads``)."""
    if isinstance(loss_or_grads, list | tuple):
        if len(loss_or_grads) != len(params):
            raise ValueError(f"{len(loss_or_grads)} gradients for {len(params)} parameters")
        return list(loss_or_grads)
    return pt.grad(loss_or_grads, params)


def sgd(loss_or_grads, params, learning_rate=1e-2):
    """θ ← θ − lr ∇.

    Parameters
    ----------
    loss_or_grads : scalar variable or list of variables
        A loss to differentiate, or the gradients.
    params : list of shared variables
    learning_rate : float or shared scalar

    Returns
    -------
    OrderedDict
        Updates for ``pytensor.function(updates=...)``.
    """
    return OrderedDict((p, p - learning_rate * g) for p, g in zip(params, _grads(loss_or_grads, params)))


def momentum(loss_or_grads, params, learning_rate=1e-2, momentum: float = 0.9):
    """Heavy ball: v ← μ v − lr ∇; θ ← θ + v (parameters and return as :func:`sgd`)."""
    updates = OrderedDict()
    for p, g in zip(params, _grads(loss_or_grads, params)):
        v = _zeros_like(p, "velocity")
        v_new = momentum * v - learning_rate * g
        updates[v], updates[p] = v_new, p + v_new
    return updates


def nesterov(loss_or_grads, params, learning_rate=1e-2, momentum: float = 0.9):
    """Nesterov momentum as in Lasagne: v ← μ v − lr ∇; θ ← θ + μ v_new − lr ∇ (as :func:`sgd`)."""
    updates = OrderedDict()
    for p, g in zip(params, _grads(loss_or_grads, params)):
        v = _zeros_like(p, "velocity")
        v_new = momentum * v - learning_rate * g
        updates[v], updates[p] = v_new, p + momentum * v_new - learning_rate * g
    return updates


def adam(loss_or_grads, params, learning_rate=1e-3, beta1: float = 0.9, beta2: float = 0.999,
         epsilon: float = 1e-8):
    """Adam (Kingma & Ba 2015) with bias correction folded into the step size, as in Lasagne (as :func:`sgd`)."""
    t_prev = pytensor.shared(np.asarray(0.0, dtype=params[0].dtype), name="adam_t")
    t = t_prev + 1
    a_t = learning_rate * pt.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
    updates = OrderedDict()
    for p, g in zip(params, _grads(loss_or_grads, params)):
        m, v = _zeros_like(p, "m"), _zeros_like(p, "v")
        m_new = beta1 * m + (1 - beta1) * g
        v_new = beta2 * v + (1 - beta2) * g ** 2
        updates[m], updates[v] = m_new, v_new
        updates[p] = p - a_t * m_new / (pt.sqrt(v_new) + epsilon)
    updates[t_prev] = t
    return updates


UPDATE_RULES = {"sgd": sgd, "momentum": momentum, "nesterov": nesterov, "adam": adam}


def halving_schedule(lr0: float, t: int, decay_period: float | None) -> float:
    """Learning rate at step t (1-based): halved every ``decay_period`` steps (None: constant)."""
    if decay_period is None:
        return lr0
    return lr0 * 0.5 ** ((t - 1) // decay_period)


class FirstOrder(Optimizer):
    """A first-order rule behind the common ``step(X, Y)`` interface, with weight decay η.

    A step whose loss or gradient is not finite leaves every shared variable unchanged.  ``backend`` and
    ``devices`` as for every optimiser (:class:`pt_kfgn.optim.kfgn.KFGN`).
    """

    def __init__(self, net, loss, rule: str = "adam", lr: float | None = None, decay_period=None,
                 eta: float = 0.0, backend: str | None = None, devices=None, **rule_kwargs):
        if rule not in RULES:
            raise ValueError(f"rule={rule!r} is not one of {list(RULES)}")
        lr = {"adam": 1e-3}.get(rule, 1e-2) if lr is None else lr
        if not (isinstance(lr, int | float) and lr > 0):
            raise ValueError(f"lr must be positive, got {lr!r}")
        if decay_period is not None and decay_period <= 0:
            raise ValueError(f"decay_period must be positive (or None), got {decay_period!r}")
        super().__init__(net, loss, backend, devices)
        self.name, self.rule, self.lr0, self.decay_period = rule, rule, float(lr), decay_period
        self.lr = pytensor.shared(np.asarray(lr, dtype=net.dtype), name="lr")
        with floatx(net.dtype):
            self._build(eta, rule_kwargs)

    def _build(self, eta, rule_kwargs):
        net, rule = self.net, self.rule
        Ebar, f = regularised_objective(self.loss, self.chain, self.y, eta)
        grads = pt.grad(f, self.params)
        raw = UPDATE_RULES[rule](grads, self.params, self.lr, **rule_kwargs)
        ok = pt.isfinite(f) & pt.isfinite(sum(pt.sqr(g).sum() for g in grads))
        self._state = [v for v in raw if v not in self.params]
        updates = OrderedDict((v, pt.switch(ok, new, v)) for v, new in raw.items())
        self._fn = self.compile_step([net.X, self.y], [Ebar, ok], updates=updates)

    def step(self, X, Y) -> dict:
        X, Y = self.check_step_batch(X, Y)
        self.t += 1
        self.lr.set_value(np.asarray(halving_schedule(self.lr0, self.t, self.decay_period), self.net.dtype))
        loss, ok = self._fn(X, Y)
        self._contiguous_state()
        if not ok:
            self.rejected += 1
        return {"loss": float(loss), "lr": float(self.lr.get_value()), "accepted": bool(ok),
                "rejected": self.rejected}

    def state_variables(self) -> list:
        return [*self.params, *self._state, self.lr]
