"""Hessian-free optimisation (Martens 2010): CG on the damped Gauss-Newton system.

Solves ``(Ḡ + (λ + η) I) δ = −∇f`` with matrix-free GN products (forward then reverse mode), warm
started from 0.95 × the previous solution, stopped by Martens' relative-progress rule or ``max_iters``,
then CG-backtracking over the saved iterates and an Armijo line search; λ follows Martens' LM rule
(×3/2 when ρ < ¼ or ρ is not finite, ×2/3 when ρ > ¾) with ρ from the undamped model.
``block_diagonal=True`` runs CG on each layer's block independently (the block-diagonal GN of App. F.2).
The CG loop runs in Python/numpy; each iteration is one compiled GN product.
"""

from __future__ import annotations

import math

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.backend import compile_function, floatx
from pt_kfgn.curvature.products import gn_vector_product
from pt_kfgn.optim.adaptation import validate_positive
from pt_kfgn.optim.base import Optimizer


def conjugate_gradient(matvec, b, x0, max_iters: int = 250, min_iters: int = 1, tol: float = 5e-4,
                       save_every: float = 1.3):
    """Minimise ``φ(x) = ½ xᵀAx − bᵀx`` by CG with Martens' (2010) stopping rule.

    Stops at iteration i when ``i > k``, ``φ(x_i) < 0`` and ``(φ(x_i) − φ(x_{i−k})) / φ(x_i) < k·tol``
    with ``k = max(10, 0.1 i)``.  Returns ``(x, saved)``: the last iterate and the iterates saved at
    ``i = ⌈1.3^j⌉`` (for CG-backtracking), the last one included.
    """
    x = x0.copy()
    r = b - matvec(x)
    p = r.copy()
    rr = r @ r
    phis, saved = [], []
    next_save, j = 1, 0
    for i in range(1, max_iters + 1):
        Ap = matvec(p)
        pAp = p @ Ap
        if not math.isfinite(pAp) or pAp <= 0:
            break
        a = rr / pAp
        x = x + a * p
        r = r - a * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
        phi = 0.5 * x @ (-r - b)  # ½xᵀAx − bᵀx with Ax = b − r
        phis.append(phi)
        if i >= next_save:
            saved.append((i, x.copy()))
            j += 1
            next_save = math.ceil(save_every ** j)
        k = max(10, int(0.1 * i))
        if i > max(k, min_iters) and phi < 0 and (phi - phis[-1 - k]) / phi < k * tol:
            break
        if rr == 0:
            break
    if not saved or saved[-1][0] != len(phis):
        saved.append((len(phis), x.copy()))
    return x, saved


class HessianFree(Optimizer):
    """Martens (2010) Hessian-free baseline; ``block_diagonal`` for the per-layer variant.

    Parameters: ``lam`` initial λ 45 [Martens 2010], ``eta`` 1e-5, ``max_iters`` 250, ``decay`` 0.95,
    ``armijo_c`` 1e-2, ``armijo_shrink`` 0.8, ``max_ls`` 60 [Martens' HFDemo].
    """

    name = "hf"

    def __init__(self, net, loss, *, lam: float = 45.0, eta: float = 1e-5, max_iters: int = 250,
                 decay: float = 0.95, block_diagonal: bool = False, armijo_c: float = 1e-2,
                 armijo_shrink: float = 0.8, max_ls: int = 60, backend: str | None = None):
        validate_positive(lam=lam, max_iters=max_iters)
        if not 0 <= decay < 1 or eta < 0:
            raise ValueError("need 0 <= decay < 1 and eta >= 0")
        super().__init__(net, loss, backend)
        self.name = "hf-block" if block_diagonal else "hf"
        self.lam, self.eta, self.max_iters, self.decay = float(lam), float(eta), int(max_iters), decay
        self.block_diagonal, self.c, self.shrink, self.max_ls = block_diagonal, armijo_c, armijo_shrink, max_ls
        self.shapes = [p.get_value().shape for p in self.params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.x_prev = np.zeros(sum(self.sizes))
        with floatx(net.dtype):
            self._build()

    def _build(self):
        X, y = self.net.X, self.y
        Ebar = self.batch_loss()
        self._f = Ebar + 0.5 * self.eta * sum(pt.sqr(p).sum() for p in self.params)
        grads = pt.grad(self._f, self.params)
        self._grad_fn = compile_function([X, y], [Ebar, self._f, *grads], backend=self.backend)
        vs = [p.type() for p in self.params]
        Gv = gn_vector_product(self.chain, self.loss, y, self.params, vs)
        self._gv_fn = compile_function([X, y, *vs], Gv, backend=self.backend)
        self._f_fn = compile_function([X, y], self._f, backend=self.backend)

    # flat <-> list helpers
    def _split(self, v):
        out, i = [], 0
        for s, n in zip(self.shapes, self.sizes):
            out.append(v[i:i + n].reshape(s))
            i += n
        return out

    def _flat(self, arrays):
        return np.concatenate([np.ravel(a) for a in arrays])

    def _set(self, flat):
        for p, v in zip(self.params, self._split(flat)):
            p.set_value(v.astype(self.net.dtype))

    def gn_product(self, X, Y, v):
        """``Ḡ v`` (undamped) for a flat vector v."""
        return self._flat(self._gv_fn(X, Y, *self._split(v.astype(self.net.dtype))))

    def solve(self, X, Y, grad, damping, x0, max_iters=None):
        """CG on ``(Ḡ + damping I) δ = −grad``, full or per-layer block; returns (δ, saved iterates)."""
        max_iters = max_iters or self.max_iters
        if not self.block_diagonal:
            return conjugate_gradient(lambda v: self.gn_product(X, Y, v) + damping * v, -grad, x0, max_iters)
        delta, offs = np.zeros_like(grad), np.cumsum([0] + self.sizes)
        for li in range(0, len(self.sizes), 2):  # (W, b) of one layer form one block
            s = slice(offs[li], offs[li + 2])

            def mv(u, s=s):
                v = np.zeros_like(grad)
                v[s] = u
                return self.gn_product(X, Y, v)[s] + damping * u

            delta[s], _ = conjugate_gradient(mv, -grad[s], x0[s], max_iters)
        return delta, [(0, delta)]

    def step(self, X, Y) -> dict:
        X, Y = self.check(X, Y)
        self.t += 1
        Ebar, f0, *grads = self._grad_fn(X, Y)
        grad = self._flat(grads)
        theta = self._flat([p.get_value() for p in self.params])
        delta, saved = self.solve(X, Y, grad, self.lam + self.eta, self.decay * self.x_prev)
        # CG-backtracking: walk back while an earlier iterate is better
        best, f_best = delta, self._trial(X, Y, theta + delta)
        for _, cand in reversed(saved[:-1]):
            f_c = self._trial(X, Y, theta + cand)
            if not f_c < f_best:
                break
            best, f_best = cand, f_c
        # Armijo line search on the chosen iterate
        slope, rate, f_new = grad @ best, 1.0, f_best
        for _ in range(self.max_ls):
            if math.isfinite(f_new) and f_new <= f0 + self.c * rate * slope:
                break
            rate *= self.shrink
            f_new = self._trial(X, Y, theta + rate * best)
        else:
            rate = 0.0
        accepted = rate > 0 and math.isfinite(f_new)
        # ρ with the undamped quadratic model of the accepted step
        step = rate * best
        model = grad @ step + 0.5 * step @ (self.gn_product(X, Y, step) + self.eta * step)
        rho = (f_new - f0) / model if accepted and model < 0 else math.nan
        if not math.isfinite(rho) or rho < 0.25:
            self.lam *= 1.5
        elif rho > 0.75:
            self.lam *= 2 / 3
        self._set(theta + step if accepted else theta)
        if accepted:
            self.x_prev = delta
        else:
            self.rejected += 1
        return {"loss": float(Ebar), "objective": float(f0), "rho": float(rho), "lambda": self.lam,
                "alpha": rate, "accepted": accepted, "rejected": self.rejected}

    def _trial(self, X, Y, theta):
        self._set(theta)
        f = float(self._f_fn(X, Y))
        return f if math.isfinite(f) else math.inf

    def hyper_state(self) -> dict:
        return {"lam": self.lam, "x_prev": self.x_prev.copy()}

    def load_hyper_state(self, state: dict) -> None:
        self.lam, self.x_prev = state["lam"], state["x_prev"].copy()
