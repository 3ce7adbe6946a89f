"""The Kronecker-factored Gauss-Newton optimiser: KFLR, KFRA, KFAC (Appendix B).

One iteration, compiled as **one** PyTensor function: forward/backward on the batch → Kronecker
factors (optionally averaged across steps) → direction ``δ = −Ĉ⁻¹∇f`` by factored Tikhonov damping
(two Cholesky solves per layer) → ``α*`` from a forward-mode GN product → trial loss ``f(θ + α*δ)`` →
guarded update.  Every ``T₂`` steps a second compiled variant solves for three γ and keeps the best
(eq. 43).  ``λ`` (eq. 42) is adapted every ``T₁`` steps in Python by :mod:`pt_kfgn.optim.adaptation`.

[ours] The trial loss is evaluated on **every** step (one extra forward pass) so that a step whose new
loss is not finite is rejected before it touches the parameters; the paper evaluates it every T₁ steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace

from pt_kfgn.backend import compile_function, floatx
from pt_kfgn.curvature.factors import exact_blocks, kronecker_factors
from pt_kfgn.curvature.products import gn_quadratic_form
from pt_kfgn.graph.losses import new_rng
from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim.base import Optimizer
from pt_kfgn.optim.damping import add_to_diagonal, kron_solve, layer_matrix

KFGN_METHODS = ("kflr", "kfra", "kfac", "blockdiag-exact")


class KFGN(Optimizer):
    """Damped Kronecker-factored Gauss-Newton (Botev et al. 2017, Appendix B).

    Parameters (defaults and their source; equations.md "Damped Kronecker-factored step")
    ----------
    method : "kflr" | "kfra" | "kfac" | "blockdiag-exact" (exact GN blocks, tiny nets only).
    eta : weight decay η, 1e-5 [M&G 2015].
    lam : initial λ on the full GN, 1.5 [ours, measured: experiments/sensitivity.py; M&G 2015 used 150, which
        over-damps the first ~50 steps here (ρ ≈ 2) — the paper's own value was not recovered].
    gamma : initial γ on the approximation, √(λ₀ + η) [M&G 2015].
    T1, omega1 : LM interval 5 and factor (19/20)^T₁ [paper / M&G].
    T2, omega2 : γ-search interval 20 and factor (19/20)^(T₂/2) [reconstructed from M&G].
    zeta : parameter-averaging cap 0.99 [ours]; θ̄ is reported, never used for updates.
    ema : exponential moving average of the factors across steps, 0 = off [ours: measured, see README].
    alpha_max : optional cap on α* (the authors' later code used 1) [ours: off].
    gamma_search : run the γ search every T₂ steps (True) [paper].
    seed : KFAC's sampler seed.
    """

    name = "kfgn"

    def __init__(self, net, loss, method: str = "kfra", *, eta: float = 1e-5, lam: float = 1.5,
                 gamma: float | None = None, T1: int = 5, T2: int = 20, omega1: float | None = None,
                 omega2: float | None = None, zeta: float = 0.99, ema: float = 0.0,
                 alpha_max: float | None = None, gamma_search: bool = True, seed: int = 0,
                 backend: str | None = None):
        if method not in KFGN_METHODS:
            raise ValueError(f"method={method!r} is not one of {list(KFGN_METHODS)}")
        for name, v in (("T1", T1), ("T2", T2)):
            if not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(eta, int | float) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a non-negative finite number, got {eta!r}")
        gamma = math.sqrt(lam + eta) if gamma is None and isinstance(lam, int | float) and lam > 0 else gamma
        omega1 = (19 / 20) ** T1 if omega1 is None else omega1
        omega2 = (19 / 20) ** (T2 / 2) if omega2 is None else omega2
        rules.validate_positive(lam=lam, gamma=gamma, alpha_max=alpha_max)
        for name, v in (("omega1", omega1), ("omega2", omega2)):
            if not 0 < v < 1:
                raise ValueError(f"{name} must lie in (0, 1), got {v!r}")
        for name, v in (("zeta", zeta), ("ema", ema)):
            if not 0 <= v < 1:
                raise ValueError(f"{name} must lie in [0, 1), got {v!r}")
        super().__init__(net, loss, backend)
        self.name = f"kfgn-{method}"
        self.method, self.eta, self.T1, self.T2 = method, float(eta), int(T1), int(T2)
        self.omega1, self.omega2, self.zeta, self.ema = float(omega1), float(omega2), float(zeta), float(ema)
        self.alpha_max, self.gamma_search = alpha_max, gamma_search
        fx = net.dtype
        self.lam = pytensor.shared(np.asarray(lam, dtype=fx), name="lambda")
        self.gamma = pytensor.shared(np.asarray(gamma, dtype=fx), name="gamma")
        self.rng = new_rng(seed) if method == "kfac" else None
        self.averaged = [pytensor.shared(p.get_value().copy(), name=f"avg_{p.name}") for p in self.params]
        self._factor_state = []  # running averages of [Q1, G1, Q2, G2, ...] when ema > 0
        if ema > 0 and method != "blockdiag-exact":
            shapes = [s for W in self.params[::2]
                      for s in ((W.get_value().shape[0] + 1,) * 2, (W.get_value().shape[1],) * 2)]
            self._factor_state = [pytensor.shared(np.zeros(s, fx), name=f"ema_{k}") for k, s in enumerate(shapes)]
        self._fns = {}

    # -- symbolic construction -------------------------------------------------------------------
    def _factors(self, y):
        if self.method == "blockdiag-exact":
            return exact_blocks(self.chain, self.loss, y, "gn"), {}
        method = self.method
        pairs, updates = kronecker_factors(self.chain, self.loss, y, method, self.rng)
        return pairs, updates

    def _direction(self, factors, grads, eps):
        deltas = []
        for i, f in enumerate(factors):
            g = layer_matrix(grads[2 * i], grads[2 * i + 1])
            if self.method == "blockdiag-exact":  # exact damped block solve (diagnostics / tiny nets)
                B = add_to_diagonal(f, eps)
                D = -pt.linalg.solve(B, g.ravel(), assume_a="pos").reshape(g.shape)
            else:
                D = -kron_solve(f[0], f[1], g, eps)
            deltas += [D[:-1], D[-1]]
        return deltas

    def _build(self, n_gamma: int):
        X, y, params, eta = self.net.X, self.y, self.params, self.eta
        fx = self.net.dtype
        Ebar = self.batch_loss()
        f0 = Ebar + 0.5 * eta * sum(pt.sqr(p).sum() for p in params)
        grads = pt.grad(f0, params)
        k_ema, zeta_t = pt.scalar("k_ema", dtype=fx), pt.scalar("zeta_t", dtype=fx)
        factors, updates = self._factors(y)
        updates = dict(updates)
        if self.ema > 0 and self.method != "blockdiag-exact":
            old = self._factor_state
            factors = [(k_ema * old[2 * i] + (1 - k_ema) * Q, k_ema * old[2 * i + 1] + (1 - k_ema) * G)
                       for i, (Q, G) in enumerate(factors)]
        omega2 = np.asarray(self.omega2, fx)
        gammas = [self.gamma] if n_gamma == 1 else [self.gamma * omega2, self.gamma, self.gamma / omega2]
        cands = []
        for g in gammas:
            deltas = self._direction(factors, grads, g + eta)
            gd = sum((d * gr).sum() for d, gr in zip(deltas, grads))
            dd = sum(pt.sqr(d).sum() for d in deltas)
            q = gn_quadratic_form(self.chain, self.loss, y, params, deltas) + (self.lam + eta) * dd
            alpha = rules.step_size(gd, q)
            if self.alpha_max is not None:
                alpha = pt.minimum(alpha, self.alpha_max)
            dM = alpha * gd + 0.5 * alpha ** 2 * q  # M̂(αδ) − M̂(0)
            cands.append((deltas, alpha, dM))
        if n_gamma == 1:
            (deltas, alpha, dM), new_gamma = cands[0], self.gamma
        else:
            Ms = pt.stack([pt.switch(pt.isnan(c[2]), np.inf, c[2]) for c in cands])
            best = pt.argmin(Ms)
            deltas = [pt.stack([c[0][i] for c in cands])[best] for i in range(len(params))]
            alpha, dM = pt.stack([c[1] for c in cands])[best], pt.stack([c[2] for c in cands])[best]
            new_gamma = pt.stack(gammas)[best]
        new_params = [p + alpha * d for p, d in zip(params, deltas)]
        f_new = clone_replace(f0, replace=dict(zip(params, new_params)))
        rho = (f_new - f0) / dM
        ok = pt.isfinite(f_new) & pt.isfinite(f0) & pt.isfinite(alpha) & (dM < 0)
        for p, p_new, avg in zip(params, new_params, self.averaged):
            kept = pt.switch(ok, p_new, p)
            updates[p] = kept
            updates[avg] = zeta_t * avg + (1 - zeta_t) * kept
        if self._factor_state:
            flat = [m for pair in factors for m in pair]
            for s, m in zip(self._factor_state, flat):
                updates[s] = pt.switch(ok, m, s)
        updates[self.gamma] = pt.switch(ok, new_gamma, self.gamma)
        outs = [Ebar, f0, f_new, alpha, dM, rho, ok, new_gamma]
        return compile_function([X, y, k_ema, zeta_t], outs, updates=updates, backend=self.backend)

    def _fn(self, n_gamma: int):
        if n_gamma not in self._fns:
            with floatx(self.net.dtype):
                self._fns[n_gamma] = self._build(n_gamma)
        return self._fns[n_gamma]

    def compile(self, warm: bool = True):
        """Compile the step functions now (otherwise on first use).

        ``warm``: also run each once on a dummy two-point batch — the Numba backend JIT-compiles at the
        first call — and restore every shared variable (parameters, damping, RNG) afterwards.
        """
        fns = [self._fn(1)] + ([self._fn(3)] if self.gamma_search else [])
        if warm:
            state = self.state_dict()
            X = np.zeros((2, self.net.sizes[0]), self.net.dtype)
            Y = np.zeros((2, self.net.sizes[-1]), self.net.dtype)
            Y[:, 0] = 1.0  # a valid target for every loss (one-hot for softmax)
            for fn in fns:
                fn(X, Y, 0.0, 0.0)
            self.load_state_dict(state)
        return self

    # -- one iteration ---------------------------------------------------------------------------
    def step(self, X, Y) -> dict:
        X, Y = self.check(X, Y)
        self.t += 1
        search = self.gamma_search and self.t % self.T2 == 0
        k = rules.ema_weight(self.t - self.rejected, self.ema)
        if self._factor_state and self.t - self.rejected == 1:
            k = 0.0
        zeta_t = rules.averaging_weight(self.t, self.zeta)
        Ebar, f0, f_new, alpha, dM, rho, ok, _gamma = self._fn(3 if search else 1)(X, Y, k, zeta_t)
        lam = float(self.lam.get_value())
        if not ok:  # rejected: parameters untouched; raise both dampings
            self.rejected += 1
            self.lam.set_value(np.asarray(lam / self.omega1, self.net.dtype))
            self.gamma.set_value(np.asarray(float(self.gamma.get_value()) / self.omega2, self.net.dtype))
        elif self.t % self.T1 == 0:
            self.lam.set_value(np.asarray(rules.update_lambda(lam, float(rho), self.omega1), self.net.dtype))
        return {"loss": float(Ebar), "objective": float(f0), "new_objective": float(f_new),
                "alpha": float(alpha), "model_change": float(dM), "rho": float(rho), "accepted": bool(ok),
                "lambda": float(self.lam.get_value()), "gamma": float(self.gamma.get_value()),
                "rejected": self.rejected}

    # -- state -----------------------------------------------------------------------------------
    def state_variables(self) -> list:
        extra = [self.rng] if self.rng is not None else []
        return [*self.params, *self.averaged, self.lam, self.gamma, *self._factor_state, *extra]

    def averaged_params(self) -> list[np.ndarray]:
        """θ̄ (eq. 44-45), flat ``[W1, b1, ...]``."""
        return [a.get_value() for a in self.averaged]
