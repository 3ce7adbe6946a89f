"""Hessian-free optimisation (Martens 2010): preconditioned CG on the damped Gauss-Newton system.

One iteration, as Martens (2010) does it:

1. ``∇f`` and the diagonal preconditioner ``M = (diag((1/N) Σₙ gₙ²) + λ + η)^ξ``, ξ = ¾, over per-datapoint
   gradients (Sec. 4.7; [ours] the mean over the batch, matching our mean objective);
2. CG on ``(Ḡ + (λ + η) I) δ = −∇f`` (matrix-free GN products, forward then reverse mode, on the forward
   pass of step 1) from
   ``0.95 × the last CG iterate`` of the previous iteration, whatever its outcome (Sec. 4.5), stopped by
   Martens' relative-progress rule or ``max_iters``;
3. CG-backtracking: the earliest saved iterate after which the objective stops decreasing (Sec. 4.6);
4. ``ρ`` of that iterate against the undamped model ``∇fᵀp + ½pᵀ(Ḡ + ηI)p``, and the LM rule on λ
   (×3/2 when ρ < ¼, ×2/3 when ρ > ¾; :func:`pt_kfgn.optim.adaptation.update_lambda`);
5. an Armijo backtracking line search on that iterate (c = 10⁻², shrink 0.8, Martens' HFDemo).

``block_diagonal=True`` runs CG on each layer's block independently (the block-diagonal GN of App. F.2), with
backtracking over index-combined iterates [ours].  Each CG iteration of the whole network is one compiled call
(the GN product and CG's vector updates, in the network's dtype); Martens' stopping rule and the saved iterates
stay on the host (:class:`pt_kfgn.optim.cg.GNOperator`).
"""

from __future__ import annotations

import math

import numpy as np

from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim.base import Optimizer
from pt_kfgn.optim.cg import GNOperator


class HessianFree(Optimizer):
    """Martens (2010) Hessian-free baseline; ``block_diagonal`` for the per-layer variant.

    Parameters
    ----------
    net, loss, backend, devices
        As for every optimiser (:class:`pt_kfgn.optim.kfgn.KFGN`); on several devices CG's products and the
        line search's losses run sharded, CG itself on the host.
    lam : float
        Initial λ, 45 [Martens 2010].
    eta : float
        Weight decay, 1e-5.
    max_iters : int
        CG iterations at most, 250 [Martens].
    decay : float
        Warm-start decay, 0.95 [Martens].
    precondition : bool
        Martens' diagonal preconditioner, on [Martens]; ``xi`` its exponent ¾.
    block_diagonal : bool
        CG per layer block.
    armijo_c, armijo_shrink, max_ls : float, float, int
        Line search: 1e-2, 0.8, 60 [Martens' HFDemo].
    """

    name = "hf"

    def __init__(self, net, loss, *, lam: float = 45.0, eta: float = 1e-5, max_iters: int = 250,
                 decay: float = 0.95, precondition: bool = True, xi: float = 0.75, block_diagonal: bool = False,
                 armijo_c: float = 1e-2, armijo_shrink: float = 0.8, max_ls: int = 60, backend: str | None = None,
                 devices=None):
        rules.validate_positive(lam=lam, max_iters=max_iters)
        if not 0 <= decay < 1 or eta < 0 or not 0 <= xi <= 1:
            raise ValueError("need 0 <= decay < 1, eta >= 0 and 0 <= xi <= 1")
        super().__init__(net, loss, backend, devices)
        self.name = "hf-block" if block_diagonal else "hf"
        self.lam, self.eta, self.max_iters, self.decay = float(lam), float(eta), int(max_iters), decay
        self.precondition, self.xi = precondition, float(xi)
        self.block_diagonal, self.c, self.shrink, self.max_ls = block_diagonal, armijo_c, armijo_shrink, max_ls
        self.operator = GNOperator(net, self.loss, eta, backend, mesh=self.mesh)
        self.x_prev = np.zeros(sum(self.operator.sizes))

    def _set(self, flat):
        for p, v in zip(self.params, self.operator.split(flat)):
            p.set_value(v.astype(self.net.dtype))

    def _trial(self, X, Y, theta):
        self._set(theta)
        f = self.operator.objective(X, Y)
        return f if math.isfinite(f) else math.inf

    def preconditioner(self, X, Y, damping: float, lin=None):
        """Martens' ``(diag((1/N) Σₙ gₙ²) + damping)^ξ``, or None when switched off."""
        if not self.precondition:
            return None
        return (self.operator.gradient_squares(X, Y, lin) + damping) ** self.xi

    def step(self, X, Y) -> dict:
        X, Y = self.check_step_batch(X, Y)
        self.t += 1
        op = self.operator
        lin = op.linearise(X, Y)  # the forward pass, once for every product of this step
        Ebar, f0, grad = lin.Ebar, lin.f, op.flat(lin.grads)
        theta = op.flat([p.get_value() for p in self.params])
        damping = self.lam + self.eta
        delta, saved = op.solve(X, Y, grad, damping, self.decay * self.x_prev, self.max_iters,
                                self.block_diagonal, precondition=self.preconditioner(X, Y, damping, lin), lin=lin)
        self.x_prev = delta  # Martens: the next warm start, whatever this step's outcome
        best, f_best = delta, self._trial(X, Y, theta + delta)
        for _, cand in reversed(saved[:-1]):  # CG-backtracking
            f_c = self._trial(X, Y, theta + cand)
            if not f_c < f_best:
                break
            best, f_best = cand, f_c
        # ρ of the backtracked iterate against the undamped model (at θ), before the line search
        self._set(theta)
        model = grad @ best + 0.5 * best @ (op.product(X, Y, best, lin) + self.eta * best)
        rho = (f_best - f0) / model if model < 0 and math.isfinite(f_best) else math.nan
        self.lam = rules.clip(rules.update_lambda(self.lam, rho, 2 / 3), rules.lambda_bounds(self.eta))
        slope, rate, f_new = grad @ best, 1.0, f_best  # Armijo line search on the chosen iterate
        for _ in range(self.max_ls):
            if math.isfinite(f_new) and f_new <= f0 + self.c * rate * slope:
                break
            rate *= self.shrink
            f_new = self._trial(X, Y, theta + rate * best)
        else:
            rate = 0.0
        accepted = rate > 0 and math.isfinite(f_new)
        self._set(theta + rate * best if accepted else theta)
        if not accepted:
            self.rejected += 1
        return {"loss": Ebar, "objective": f0, "rho": float(rho), "lambda": self.lam, "alpha": rate,
                "accepted": accepted, "rejected": self.rejected, "cg_iters": saved[-1][0]}

    def hyper_state(self) -> dict:
        return {"lam": self.lam, "x_prev": self.x_prev.copy()}

    def load_hyper_state(self, state: dict) -> None:
        self.lam, self.x_prev = float(state["lam"]), np.array(state["x_prev"], dtype=float)
