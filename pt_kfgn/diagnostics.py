"""Exact vs approximate curvature as a library call: update alignment of Appendix F.2.

For the current parameters and one batch: the KFRA / KFAC directions (factored Tikhonov and exact Kronecker
inverse, eq. 35-38), the block-diagonal GN direction (CG per layer, damping ε = γ + η) and the full GN direction
(CG, damping λ + η) — all for the same gradient — and their cosine similarities, per layer and whole.
[ours] The damping of the CG solves is not stated in the paper: ε for block solves, λ + η for the full one.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.backend import compile_function, floatx
from pt_kfgn.curvature.factors import kronecker_factors
from pt_kfgn.graph.losses import new_rng, noise_input
from pt_kfgn.optim.base import regularised_objective
from pt_kfgn.optim.cg import GNOperator
from pt_kfgn.optim.damping import exact_kron_solve, kron_solve


def cosine(u, v) -> float:
    """``uᵀv / (‖u‖ ‖v‖)``."""
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


class Alignment:
    """Compiled once per network: approximate directions and CG solves for the F.2 comparison."""

    def __init__(self, net, loss, methods=("kfra", "kfac"), eta: float = 1e-5, cg_iters: int = 250,
                 backend=None, seed: int = 0):
        self.operator = GNOperator(net, loss, eta, backend)  # CG and the GN product, shared with HF
        self.methods, self.eta, self.net, self.cg_iters = methods, eta, net, cg_iters
        chain, y, loss = self.operator.chain, self.operator.y, self.operator.loss
        with floatx(net.dtype):
            eps = pt.scalar("eps", dtype=net.dtype)
            _, f = regularised_objective(loss, chain, y, eta)
            grads = pt.grad(f, chain.params)
            outs = list(grads)
            self._noise = noise_input(net.dtype)  # KFAC's samples (Loss.draw_noise)
            self._rng = new_rng(seed)
            for m in methods:
                pairs = kronecker_factors(chain, loss, y, m, self._noise if m == "kfac" else None)
                for solve in (kron_solve, exact_kron_solve):
                    for layer, (Q, G), parts in zip(chain.layers, pairs, chain.per_layer(grads)):
                        D = -solve(Q, G, layer.matrix(parts), eps)
                        outs.append(pt.concatenate([x.ravel() for x in layer.split(D)]))  # in θ's order
            self._fn = compile_function([net.X, y, self._noise, eps], outs, backend=backend,
                                        static_shapes={net.X: (None, net.sizes[0])})
        self.n_layers, self.n_params = len(chain.layers), len(chain.params)
        self._layer_sizes = [sum(int(np.prod(p.get_value().shape)) for p in layer.params) for layer in chain.layers]

    def compare(self, X, Y, gamma: float, lam: float) -> dict:
        """Cosines per layer and whole for each method and inverse, against block and full GN."""
        op = self.operator
        X, Y = op.check(X, Y)
        noise = op.loss.draw_noise(self._rng, len(X), self.net.sizes[-1], self.net.dtype)
        out = self._fn(X, Y, noise, gamma + self.eta)
        L, P = self.n_layers, self.n_params
        grads = out[:P]
        grad = op.flat(grads)
        zero = np.zeros_like(grad)
        lin = op.linearise(X, Y)  # one forward pass for both CG solves
        d_block, _ = op.solve(X, Y, grad, gamma + self.eta, zero, self.cg_iters, block_diagonal=True, lin=lin)
        d_full, _ = op.solve(X, Y, grad, lam + self.eta, zero, self.cg_iters, lin=lin)
        bounds = np.cumsum([0] + self._layer_sizes)
        res = {"block_vs_full": cosine(d_block, d_full)}
        k = P
        for m in self.methods:
            for inverse in ("tikhonov", "exact"):
                d = np.concatenate([np.ravel(x) for x in out[k:k + L]])
                k += L
                res[f"{m}_{inverse}_vs_full"] = cosine(d, d_full)
                res[f"{m}_{inverse}_vs_block"] = cosine(d, d_block)
                for i in range(L):
                    s = slice(bounds[i], bounds[i + 1])
                    res[f"{m}_{inverse}_layer{i + 1}"] = cosine(d[s], d_block[s])
        return res
