"""Conjugate gradient on the damped Gauss-Newton system, and the compiled GN operator it runs on.

Shared by Hessian-free (:mod:`pt_kfgn.optim.hessian_free`) and the alignment diagnostics
(:mod:`pt_kfgn.diagnostics`).  Vectors are flat: ``[W1.ravel(), b1, W2.ravel(), b2, ...]``, which is the
per-layer ``vstack([W, b]).ravel()`` of the curvature code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.replace import graph_replace

from pt_kfgn.backend import floatx
from pt_kfgn.curvature.factors import augmented_input, per_sample_grads
from pt_kfgn.curvature.products import gn_vector_product
from pt_kfgn.curvature.recursions import batch_size
from pt_kfgn.graph.layers import check_data
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.graph.walk import layer_graph
from pt_kfgn.optim.base import regularised_objective
from pt_kfgn.sharding import compile_on


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
        The saved iterates, the last one included (its index is the number of iterations run; it is ``x``).
    """
    scale = (lambda r: r / precondition) if precondition is not None else (lambda r: r)
    r = b - matvec(x0)
    z = scale(r)

    def iterate(state):
        x, r, p, rz = state
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if not math.isfinite(pAp) or pAp <= 0:
            return None, pAp, 0.0, 0.0, 0.0
        a = rz / pAp
        x, r = x + a * p, r - a * Ap
        z = scale(r)
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        return (x, r, p, rz_new), pAp, -0.5 * float(x @ r + x @ b), rz_new, float(r @ r)

    stop = None if rtol is None else (rtol * np.linalg.norm(b)) ** 2
    return martens_cg((x0.copy(), r, z.copy(), float(r @ z)), iterate, lambda s: s[0].copy(), max_iters,
                      min_iters, tol, save_every, stop)


def martens_cg(state, iterate, current, max_iters: int, min_iters: int = 1, tol: float = 5e-4,
               save_every: float = 1.3, stop_rr: float | None = None):
    """Martens' (2010) bookkeeping around any implementation of a (preconditioned) CG iteration: the
    relative-progress stopping rule, the iterates saved for backtracking, and the breakdown checks.

    ``iterate(state) -> (state, pᵀAp, φ, rᵀz, rᵀr)`` runs one iteration (its state is discarded when ``pᵀAp``
    is not positive and finite); ``current(state)`` is the iterate ``x`` as a flat float64 array; ``stop_rr``
    stops when ``rᵀr ≤ stop_rr``. Returns ``(x, saved)`` as :func:`conjugate_gradient`.
    """
    phis, saved = [], []
    next_save, j = 1, 0
    for i in range(1, max_iters + 1):
        new, pAp, phi, rz, rr = iterate(state)
        if not math.isfinite(pAp) or pAp <= 0:
            break
        state = new
        phis.append(phi)
        if i >= next_save:
            saved.append((i, current(state)))
            j += 1
            next_save = math.ceil(save_every ** j)
        k = max(10, int(0.1 * i))
        if i > max(k, min_iters) and phi < 0 and (phi - phis[-1 - k]) / phi < k * tol:
            break
        if rz == 0 or (stop_rr is not None and rr <= stop_rr):
            break
    if not saved or saved[-1][0] != len(phis):
        saved.append((len(phis), current(state)))
    return saved[-1][1], saved


@dataclass(frozen=True)
class Linearisation:
    """The network at one point ``(θ, X, Y)``, from one compiled call (:meth:`GNOperator.linearise`): ``Ē``,
    ``f``, ``∇f`` per parameter and every layer's pre-activation ``h_λ``, which the Gauss-Newton products, the
    gradient squares and CG take as inputs instead of running the forward pass again [ours: Martens (2010)
    computes it once per CG run too]. Valid while the parameters stay at ``θ``."""

    X: object
    Y: object
    Ebar: float
    f: float
    grads: list
    hs: list


class GNOperator:
    """The compiled pieces CG needs for a network and loss: ``f``, ``∇f``, ``Ḡv``, Martens' diagonal and the CG
    iteration itself.

    The Gauss-Newton product ``Ḡv`` (one forward-mode and one reverse-mode product, eq. 12-13), the gradient
    squares and the CG iteration take the layers' pre-activations of a :class:`Linearisation` as inputs, so a
    CG run computes the forward pass once. The whole-network CG runs on the backend, one compiled call per
    iteration holding the product and CG's vector updates, in the network's dtype; the host keeps Martens'
    bookkeeping (:func:`martens_cg`). Per-block CG and :func:`conjugate_gradient` run in NumPy (float64).

    Parameters
    ----------
    net : MLP or GraphNet
    loss : str or Loss
    eta : float
        Weight decay in ``f = Ē + ½η‖θ‖²``.
    backend : str, optional
    mesh : jax.sharding.Mesh, optional
        Devices: the batch and the pre-activations stay split over them.
    """

    def __init__(self, net, loss, eta: float = 0.0, backend=None, mesh=None):
        self.net, self.loss, self.eta = net, get_loss(loss), float(eta)
        self.chain = layer_graph(net.output)
        self.params = self.chain.params
        self.shapes = [p.get_value().shape for p in self.params]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.y = pt.matrix("Y", dtype=net.dtype)
        self.backend, self.mesh = backend, mesh
        self._cg_fns = None
        with floatx(net.dtype):
            self._build()

    def _compile(self, inputs, outputs, **kwargs):
        # XLA's own choice of product kernels on CPU: this step 5 % faster than with Eigen's (pt_kfgn.backend)
        return compile_on(self.mesh, inputs, outputs, backend=self.backend, products="xla",
                          static_shapes={self.net.X: (None, self.net.sizes[0])}, **kwargs)

    def _build(self):
        X, y = self.net.X, self.y
        Ebar, f = regularised_objective(self.loss, self.chain, y, self.eta)
        grads = pt.grad(f, self.params)
        hs = [layer.h for layer in self.chain.layers]
        P, L = len(self.params), len(hs)
        self._grad_fn = self._compile([X, y], [Ebar, f, *grads, *hs], batch_outputs=range(2 + P, 2 + P + L))
        self._f_fn = self._compile([X, y], f)
        # the pre-activations as inputs: what depends on θ only through them is not recomputed
        self._h_in = [h.type() for h in hs]
        self._lin_inputs = [X, y, *self._h_in]
        self._vs = [p.type() for p in self.params]
        self._gv = self.reuse_forward(gn_vector_product(self.chain, self.loss, y, self.params, self._vs))
        self._gv_fn = self._compile([*self._lin_inputs, *self._vs], self._gv, batch_inputs=2 + L)
        # Σ_n (∂E_n/∂θ)² / N per parameter: for a dense layer (Ā∘Ā)ᵀ(Ĝ∘Ĝ)/N, one product (Martens Sec. 4.7)
        sq = []
        for layer, g in zip(self.chain.layers, per_sample_grads(self.chain, self.loss, y)):
            A = augmented_input(layer)
            D = pt.dot(pt.sqr(A).T, pt.sqr(g)) / batch_size(g)
            sq += layer.split(D)
        self._sq_fn = self._compile(self._lin_inputs, self.reuse_forward(sq), batch_inputs=2 + L)

    def reuse_forward(self, outputs):
        """``outputs`` with every layer's pre-activation ``h_λ`` replaced by the operator's matching input."""
        return graph_replace(outputs, dict(zip([layer.h for layer in self.chain.layers], self._h_in)),
                             strict=False)

    def _compile_cg(self):
        """The whole-network CG on the backend: ``start`` (residual of the warm start) and ``iterate``."""
        with floatx(self.net.dtype):
            dtype = self.net.dtype
            x, r, p, minv, b = ([v.type() for v in self._vs] for _ in range(5))
            rz, damping = pt.scalar("rz", dtype=dtype), pt.scalar("damping", dtype=dtype)
            dot = lambda us, ws: sum((u * w).sum() for u, w in zip(us, ws))
            inputs = [*self._lin_inputs, *x, *r, *p, rz, *minv, *b, damping]
            L = len(self._h_in)

            def A(vs):  # (Ḡ + damping I) v on the cached linearisation
                return [g + damping * v for g, v in zip(graph_replace(self._gv, dict(zip(self._vs, vs))), vs)]

            r0 = [bi - ai for bi, ai in zip(b, A(x))]
            z0 = [m * ri for m, ri in zip(minv, r0)]
            # [ours] start also returns M⁻¹ and b as the backend holds them, so that the iterations take them
            # as they are (no host-to-device copy per iteration)
            start = self._compile([*self._lin_inputs, *x, *minv, *b, damping],
                                  [*r0, *z0, dot(r0, z0), *minv, *b], batch_inputs=2 + L)
            Ap = A(p)
            pAp = dot(p, Ap)
            a = rz / pAp
            x1 = [xi + a * pi for xi, pi in zip(x, p)]
            r1 = [ri - a * ai for ri, ai in zip(r, Ap)]
            z1 = [m * ri for m, ri in zip(minv, r1)]
            rz1 = dot(r1, z1)
            p1 = [zi + (rz1 / rz) * pi for zi, pi in zip(z1, p)]
            phi = -0.5 * (dot(x1, r1) + dot(x1, b))
            iterate = self._compile(inputs, [*x1, *r1, *p1, rz1, pAp, phi, dot(r1, r1)], batch_inputs=2 + L)
        self._cg_fns = start, iterate

    # flat <-> list
    def split(self, v) -> list:
        out, i = [], 0
        for s, n in zip(self.shapes, self.sizes):
            out.append(v[i:i + n].reshape(s))
            i += n
        return out

    @staticmethod
    def flat(arrays, dtype=None) -> np.ndarray:
        return np.concatenate([np.ravel(a) for a in arrays], dtype=dtype)

    def _split_cast(self, v) -> list:
        return [np.asarray(u, dtype=self.net.dtype) for u in self.split(v)]

    def check(self, X, Y):
        return check_data(self.net, self.loss, X, Y)

    def linearise(self, X, Y) -> Linearisation:
        """:class:`Linearisation` at the current parameters (one compiled call)."""
        Ebar, f, *rest = self._grad_fn(X, Y)
        P = len(self.params)
        return Linearisation(X, Y, float(Ebar), float(f), rest[:P], rest[P:])

    def _at(self, X, Y, lin):
        if lin is None:
            return self.linearise(X, Y)
        if lin.X is not X or lin.Y is not Y:
            raise ValueError("lin is a linearisation on another batch")
        return lin

    def gradient(self, X, Y):
        """``(Ē, f, ∇f)`` at the current parameters, ``∇f`` flat."""
        lin = self.linearise(X, Y)
        return lin.Ebar, lin.f, self.flat(lin.grads)

    def objective(self, X, Y) -> float:
        return float(self._f_fn(X, Y))

    def product(self, X, Y, v, lin: Linearisation | None = None) -> np.ndarray:
        """``Ḡ v`` (undamped, without η) for a flat ``v``; ``lin`` (at the current parameters, on this batch)
        saves the forward pass."""
        lin = self._at(X, Y, lin)
        return self.flat(self._gv_fn(X, Y, *lin.hs, *self._split_cast(v)))

    def gradient_squares(self, X, Y, lin: Linearisation | None = None) -> np.ndarray:
        """``(1/N) Σ_n (∂E_n/∂θ)²`` flat: the diagonal of the empirical Fisher."""
        lin = self._at(X, Y, lin)
        return self.flat(self._sq_fn(X, Y, *lin.hs))

    def blocks(self):
        """Slices of the flat vector, one per layer (its ``W`` and ``b`` together)."""
        per_layer = [sum(n) for n in self.chain.per_layer(self.sizes)]
        offs = np.cumsum([0] + per_layer)
        return [slice(offs[i], offs[i + 1]) for i in range(len(per_layer))]

    def solve(self, X, Y, grad, damping: float, x0, max_iters: int = 250, block_diagonal: bool = False,
              precondition=None, lin: Linearisation | None = None, **cg_kwargs):
        """CG on ``(Ḡ + damping I) δ = −grad``, whole or per layer block; returns ``(δ, saved iterates)``
        (flat float64 arrays).

        The whole-network CG runs on the backend (:meth:`_compile_cg`, compiled at its first use); per block,
        each block runs its own CG in NumPy and [ours] the saved iterates are combined index by index (a block
        that stopped earlier contributes its last iterate), so backtracking works on both variants alike.
        """
        lin = self._at(X, Y, lin)
        if not block_diagonal:
            return self._solve_on_backend(lin, grad, damping, x0, max_iters, precondition, **cg_kwargs)

        def mv(u, s):
            v = np.zeros_like(grad)
            v[s] = u
            return self.product(X, Y, v, lin)[s] + damping * u

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

    def _solve_on_backend(self, lin, grad, damping, x0, max_iters, precondition, min_iters: int = 1,
                          tol: float = 5e-4, save_every: float = 1.3, rtol: float | None = None):
        if self._cg_fns is None:
            self._compile_cg()
        start, iterate = self._cg_fns
        P = len(self.params)
        head = [lin.X, lin.Y, *lin.hs]
        b = self._split_cast(-np.asarray(grad, dtype=np.float64))
        minv = self._split_cast(1.0 / precondition if precondition is not None else np.ones(len(grad)))
        x = self._split_cast(x0)
        out = start(*head, *x, *minv, *b, damping)
        r, p, rz, tail = out[:P], out[P:2 * P], out[2 * P], [*out[2 * P + 1:], damping]

        def step(state):
            out = iterate(*head, *state[0], *state[1], *state[2], state[3], *tail)
            rz1, pAp, phi, rr = (float(v) for v in out[3 * P:])
            return (out[:P], out[P:2 * P], out[2 * P:3 * P], rz1), pAp, phi, rz1, rr

        stop = None if rtol is None else (rtol * np.linalg.norm(grad)) ** 2
        return martens_cg((x, r, p, float(rz)), step, lambda s: self.flat(s[0], np.float64), max_iters,
                          min_iters, tol, save_every, stop)
