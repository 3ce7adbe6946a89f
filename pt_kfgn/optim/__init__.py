"""Optimisers behind one contract (:class:`pt_kfgn.optim.base.Optimizer`), and a registry by name.

>>> opt = make_optimizer("kfra", net, "bce")          # KFGN(net, "bce", "kfra") at the paper's defaults
>>> stats = opt.step(X, Y)

============  =======================================================  ==============================
name          optimiser                                                module
============  =======================================================  ==============================
kflr/kfra/    damped Kronecker-factored GN (App. B)                    :mod:`pt_kfgn.optim.kfgn`
kfac
hf            Hessian-free CG (Martens 2010)                           :mod:`pt_kfgn.optim.hessian_free`
sgd, ...      first-order baselines with a halving learning rate       :mod:`pt_kfgn.optim.first_order`
============  =======================================================  ==============================
"""

from __future__ import annotations

from pt_kfgn.curvature.factors import KRONECKER
from pt_kfgn.optim.cg import GNOperator, conjugate_gradient
from pt_kfgn.optim.first_order import RULES as FIRST_ORDER
from pt_kfgn.optim.first_order import FirstOrder, adam, halving_schedule, momentum, nesterov, sgd
from pt_kfgn.optim.hessian_free import HessianFree
from pt_kfgn.optim.kfgn import KFGN, StalledError
from pt_kfgn.optim.symbolic import kfgn_updates

SECOND_ORDER = KRONECKER
METHODS = SECOND_ORDER + ("hf",) + FIRST_ORDER


def make_optimizer(method: str, net, loss, *, seed: int = 0, backend=None, lr=None, decay_period=None,
                   **kwargs):
    """An optimiser by name (:data:`METHODS`) with its default settings; ``kwargs`` go to its constructor.

    ``lr`` and ``decay_period`` apply to the first-order rules only; ``seed`` to KFAC's sampler.
    """
    if method in SECOND_ORDER:
        return KFGN(net, loss, method, seed=seed, backend=backend, **kwargs)
    if method == "hf":
        return HessianFree(net, loss, backend=backend, **kwargs)
    if method in FIRST_ORDER:
        return FirstOrder(net, loss, method, lr=lr, decay_period=decay_period, backend=backend, **kwargs)
    raise ValueError(f"method={method!r} is not one of {list(METHODS)}")


__all__ = ["FIRST_ORDER", "KFGN", "METHODS", "SECOND_ORDER", "FirstOrder", "GNOperator", "HessianFree", "StalledError", "adam",
           "conjugate_gradient", "halving_schedule", "kfgn_updates", "make_optimizer", "momentum", "nesterov", "sgd"]
