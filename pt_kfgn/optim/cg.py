"""Conjugate gradient on the damped Gauss-Newton system, and the compiled GN operator it runs on.

Shared by Hessian-free (:mod:`pt_kfgn.optim.hessian_free`) and the alignment diagnostics
(:mod:`pt_kfgn.diagnostics`).  Vectors are flat: ``[W1.ravel(), b1, W2.ravel(), b2, ...]``, which is the
per-layer ``vstack([W, b]).ravel()`` of the curvature code.
"""

from __future__ import annotations

import math

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.backend import compile_function, floatx
from pt_kfgn.curvature.factors import augmented_input, per_sample_grads
from pt_kfgn.curvature.products import gn_vector_product
from pt_kfgn.curvature.recursions import batch_size
from pt_kfgn.graph.chain import layer_chain
from pt_kfgn.graph.layers import check_batch
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.optim.base import regularised_objective


def conjugate_gradient(matvec, b, x0, max_iters: int = 250, min_iters: int = 1, tol: float = 5e-4,
                       save_every: float = 1.3, precondition=None, rtol: float | None = None):
    """Minimise ``φ(x) = ½ xᵀAx − bᵀx`` by (preconditioned) CG with Martens' (2010) stopping rule.

    Parameters
    ----------
    matvec : callable
        ``v ↦ A v`` for a symmetric positive definite ``A``.
    b, x0 : ndarray
        Right-hand side and starting point.
    max_iters, min_iters : int
        Iteration bounds.
    tol : float
        Martens' relative-progress test: stop at iteration i when ``i > k``, ``φ(x_i) < 0`` and
        ``(φ(x_i) − φ(x_{i−k})) / φ(x_i) < k·tol`` with ``k = max(10, 0.1 i)``.
    save_every : float
        Iterates ``i = ⌈save_every^j⌉`` are saved for CG-backtracking (Martens 2010, Sec. 4.6).
    precondition : ndarray, optional
        The diagonal ``M`` of a preconditioner: the residual is scaled by ``M⁻¹`` (Sec. 4.7).
    rtol : float, optional
        Also stop when ``‖r‖ ≤ rtol ‖b‖``.

    Returns
    -------
    x : ndarray
        The last iterate.
    saved : list of (int, ndarray)
        The saved iterates, the last one included (its index is the number of iterations run).
    """
    x = x0.copy()
    r = b - matvec(x)
    z = r / precondition if precondition is not None else r
    p = z.copy()
    rz = r @ z
    b_norm = np.linalg.norm(b)
    phis, saved = [], []
    next_save, j = 1, 0
    for i in range(1, max_iters + 1):
        Ap = matvec(p)
        pAp = p @ Ap
        if not math.isfinite(pAp) or pAp <= 0:
            break
        a = rz / pAp
        x = x + a * p
        r = r - a * Ap
        z = r / precondition if precondition is not None else r
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
        phi = 0.5 * x @ (-r - b)  # ½xᵀAx − bᵀx with Ax = b − r
        phis.append(phi)
        if i >= next_save:
            saved.append((i, x.copy()))
            j += 1
            next_save = math.ceil(save_every ** j)
        k = max(10, int(0.1 * i))
        if i > max(k, min_iters) and phi < 0 and (phi - phis[-1 - k]) / phi < k * tol:
            break
        if rz == 0 or (rtol is not None and np.linalg.norm(r) <= rtol * b_norm):
            break
    if not saved or saved[-1][0] != len(phis):
        saved.append((len(phis), x.copy()))
    return x, saved


class GNOperator:
    """The compiled pieces CG needs for a network and loss: ``f``, ``∇f``, ``Ḡv`` and Martens' diagonal.

    Parameters
    ----------
    net : MLP or GraphNet
    loss : str or Loss
    eta : float
        Weight decay in ``f = Ē + ½η‖θ‖²``.
    backend : str, optional
    """

    def __init__(self, net, loss, eta: float = 0.0, backend=None, mesh=None):
        self.net, self.loss, self.eta = net, get_loss(loss), float(eta)
        self.chain = layer_chain(net.output)
        self.params = self.chain.params
        self.shapes = [p.get_value().shape for p in self.params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.y = pt.matrix("Y", dtype=net.dtype)
        with floatx(net.dtype):
            self._build(backend, mesh)

    def _build(self, backend, mesh):
        X, y = self.net.X, self.y
        Ebar, f = regularised_objective(self.loss, self.chain, y, self.eta)
        grads = pt.grad(f, self.params)
        self._grad_fn = compile_function([X, y], [Ebar, f, *grads], backend=backend, mesh=mesh)
        vs = [p.type() for p in self.params]
        self._gv_fn = compile_function([X, y, *vs], gn_vector_product(self.chain, self.loss, y, self.params, vs),
                                       backend=backend, mesh=mesh)
        self._f_fn = compile_function([X, y], f, backend=backend, mesh=mesh)
        # Σ_n (∂E_n/∂θ)² / N per parameter: for a dense layer (Ā∘Ā)ᵀ(Ĝ∘Ĝ)/N, one product (Martens Sec. 4.7)
        sq = []
        for layer, g in zip(self.chain.layers, per_sample_grads(self.chain, self.loss, y)):
            A = augmented_input(layer)
            D = pt.dot(pt.sqr(A).T, pt.sqr(g)) / batch_size(g)
            sq += [D[:-1], D[-1]]
        self._sq_fn = compile_function([X, y], sq, backend=backend, mesh=mesh)

    # flat <-> list
    def split(self, v) -> list:
        out, i = [], 0
        for s, n in zip(self.shapes, self.sizes):
            out.append(v[i:i + n].reshape(s))
            i += n
        return out

    @staticmethod
    def flat(arrays) -> np.ndarray:
        return np.concatenate([np.ravel(a) for a in arrays])

    def check(self, X, Y):
        X = check_batch(X, self.net.sizes[0], self.net.dtype)
        return X, self.loss.check_targets(Y, X.shape[0], self.net.sizes[-1]).astype(self.net.dtype)

    def gradient(self, X, Y):
        """``(Ē, f, ∇f)`` at the current parameters, ``∇f`` flat."""
        Ebar, f, *grads = self._grad_fn(X, Y)
        return float(Ebar), float(f), self.flat(grads)

    def objective(self, X, Y) -> float:
        return float(self._f_fn(X, Y))

    def product(self, X, Y, v) -> np.ndarray:
        """``Ḡ v`` (undamped, without η) for a flat ``v``."""
        return self.flat(self._gv_fn(X, Y, *self.split(v.astype(self.net.dtype))))

    def gradient_squares(self, X, Y) -> np.ndarray:
        """``(1/N) Σ_n (∂E_n/∂θ)²`` flat: the diagonal of the empirical Fisher."""
        return self.flat(self._sq_fn(X, Y))

    def blocks(self):
        """Slices of the flat vector, one per layer (its ``W`` and ``b`` together)."""
        offs = np.cumsum([0] + self.sizes)
        return [slice(offs[i], offs[i + 2]) for i in range(0, len(self.sizes), 2)]

    def solve(self, X, Y, grad, damping: float, x0, max_iters: int = 250, block_diagonal: bool = False,
              precondition=None, **cg_kwargs):
        """CG on ``(Ḡ + damping I) δ = −grad``, whole or per layer block; returns ``(δ, saved iterates)``.

        Per block, each block runs its own CG; [ours] the saved iterates are combined index by index (a block
        that stopped earlier contributes its last iterate), so backtracking works on both variants alike.
        """
        def mv(u, s=slice(None)):
            if s == slice(None):
                return self.product(X, Y, u) + damping * u
            v = np.zeros_like(grad)
            v[s] = u
            return self.product(X, Y, v)[s] + damping * u

        if not block_diagonal:
            return conjugate_gradient(mv, -grad, x0, max_iters, precondition=precondition, **cg_kwargs)
        per_block = []
        for s in self.blocks():
            pre = precondition[s] if precondition is not None else None
            per_block.append((s, conjugate_gradient(lambda u, s=s: mv(u, s), -grad[s], x0[s], max_iters,
                                                    precondition=pre, **cg_kwargs)))
        indices = sorted({i for _, (_, saved) in per_block for i, _ in saved})
        combined = []
        for i in indices:
            v = np.zeros_like(grad)
            for s, (_, saved) in per_block:
                v[s] = next((x for j, x in reversed(saved) if j <= i), saved[0][1])
            combined.append((i, v))
        delta = np.zeros_like(grad)
        for s, (x, _) in per_block:
            delta[s] = x
        return delta, combined
