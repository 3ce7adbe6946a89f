"""A user's own loss: ``E(h_L, y)`` per datapoint as a PyTensor expression, its curvature derived by PyTensor.

>>> loss = CustomLoss(lambda h, y: (pt.log1p(pt.exp(h)) - y * h).sum(axis=1), name="my_bce")
>>> pk.kronecker_factors(net, loss, X, Y, "kflr")        # KFLR, KFRA, exact blocks; KFAC needs a sampler

A loss that is a **sum over outputs of an elementwise function** of ``(h, y)`` (a Huber loss, log-cosh, a
per-pixel cross-entropy; found in the graph, as the walker finds elementwise transfer functions) has a diagonal
``H_L``: it is built as an ``(N, d)`` matrix of second derivatives, its square root is elementwise and ``α*``'s
quadratic form is ``Σ u² ⊙ H_L``.  Any other loss gets the dense per-datapoint ``H_L`` only where a method needs it.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Variable
from pytensor.scalar.basic import ScalarOp
from pytensor.tensor.elemwise import CAReduce, Elemwise
from pytensor.tensor.shape import Shape, Shape_i

from pt_kfgn.graph.layers import all_finite
from pt_kfgn.graph.losses import Loss, _diag_batch


def _depends_on(v, h) -> bool:
    """Whether ``v`` depends on the values of ``h`` (a dependence through ``h.shape`` alone does not count)."""
    stack, seen = [v], set()
    while stack:
        u = stack.pop()
        if u is h:
            return True
        if id(u) in seen or u.owner is None or isinstance(u.owner.op, Shape | Shape_i):
            continue
        seen.add(id(u))
        stack.extend(u.owner.inputs)
    return False


def _elementwise_in(X, h) -> bool:
    """``X`` (N, d) is an elementwise function of ``h`` (each entry depends on the same entry of ``h`` only)."""
    if X is h or not _depends_on(X, h):
        return True
    node = X.owner
    if node is None or not (isinstance(node.op, Elemwise) and isinstance(node.op.scalar_op, ScalarOp)):
        return False
    if X.type.broadcastable != h.type.broadcastable and any(
            _depends_on(i, h) and i.type.broadcastable != X.type.broadcastable for i in node.inputs):
        return False  # h broadcast against something: entries would mix
    return all(_elementwise_in(i, h) for i in node.inputs)


def separable(E, h) -> bool:
    """Whether ``E`` (N,) is ``Σ_i φ(h[:, i], …)`` with ``φ`` elementwise in ``h``, up to sums and constant scales:
    then every ``H_L[n]`` is diagonal."""
    if not _depends_on(E, h):
        return True
    node = E.owner
    if node is None:
        return False
    op = node.op
    if isinstance(op, CAReduce) and op.scalar_op.__class__.__name__ == "Add":
        axes = tuple(a % node.inputs[0].ndim for a in (op.axis or range(node.inputs[0].ndim)))
        return node.inputs[0].ndim == 2 and axes == (1,) and _elementwise_in(node.inputs[0], h)
    if not (isinstance(op, Elemwise) and isinstance(op.scalar_op, ScalarOp)):
        return False
    name = op.scalar_op.__class__.__name__
    if name in ("Add", "Sub", "Neg"):
        return all(separable(i, h) for i in node.inputs)
    if name in ("Mul", "TrueDiv"):
        dependent = [k for k, i in enumerate(node.inputs) if _depends_on(i, h)]
        return len(dependent) == 1 and (name == "Mul" or dependent == [0]) and separable(node.inputs[dependent[0]], h)
    return False


class CustomLoss(Loss):
    """A user's own per-datapoint loss ``E(h_n, y_n)``, its output curvature derived by PyTensor.

    Parameters
    ----------
    per_sample : callable
        ``(h, y) -> (N,)`` symbolic: the loss of each datapoint, a function of its own row of ``h`` only.
    name : str
        A name for messages and checkpoints.
    sampler : callable, optional
        ``(h, noise) -> ĝ`` for KFAC (App. C): ĝ = ∂(−log p(ŷ|h))/∂h for ŷ ~ p(y|h), with ŷ a function of
        ``noise`` (N, d), a symbolic matrix of independent draws.  Without it, KFAC raises a clear error;
        KFLR, KFRA and the exact blocks need none.
    noise : {"uniform", "normal"}
        The distribution of ``noise``: uniform on [0, 1) (default) or standard normal.
    convex : bool
        Declare the loss convex in ``h`` (``H_L`` positive semi-definite): a loss that is not separable then gets
        ``α*``'s quadratic form by a forward-mode product and KFRA's ``E[H_L]`` without any per-datapoint
        decomposition.  Default False: the PSD part of ``H_L`` is taken (below).

    For a separable loss (:func:`separable`) ``H_L[n]`` is the diagonal ``∂²E/∂h²`` and its PSD part clips each
    entry at 0.  Otherwise ``H_L[n] = ∂²E_n/∂h_n²`` is one vectorised Jacobian of the batch gradient (datapoints are
    independent, so row n of ``∂(Σ_n E_n)/∂h`` depends on ``h_n`` alone), and ``C_L`` comes from a batched
    eigendecomposition with negative eigenvalues clipped to 0 [ours]: for a loss convex in ``h`` this is exact;
    otherwise the Gauss-Newton uses the PSD part of ``H_L``.
    """

    def __init__(self, per_sample, name: str = "custom", sampler=None, noise: str = "uniform",
                 convex: bool = False):
        if not callable(per_sample):
            raise TypeError("per_sample must be a callable (h, y) -> per-datapoint losses")
        if noise not in ("uniform", "normal"):
            raise ValueError(f"noise must be 'uniform' or 'normal', got {noise!r}")
        self._per_sample, self.name, self._sampler, self.noise = per_sample, name, sampler, noise
        self.convex = bool(convex)

    def per_sample(self, h, y):
        E = self._per_sample(h, y)
        if not isinstance(E, Variable) or E.ndim != 1:
            raise ValueError(f"{self.name}: per_sample must return one loss per datapoint (a vector), "
                             f"got {getattr(E, 'ndim', type(E).__name__)} dimensions")
        return E

    def is_separable(self, h, y) -> bool:
        """Whether this loss is a sum over outputs of an elementwise function of ``h`` (diagonal ``H_L``)."""
        cache = self.__dict__.setdefault("_separable", {})
        key = (id(h), id(y))
        if key not in cache:
            cache[key] = (h, y, separable(self.per_sample(h, y), h))  # the variables kept: ids stay theirs
        return cache[key][2]

    def _gradient(self, h, y):
        return pt.grad(self.per_sample(h, y).sum(), h)  # (N, d); row n depends on h[n] only

    def hessian_diagonal(self, h, y):
        """``∂²E_n/∂h_{ni}²`` (N, d): the whole ``H_L`` of a separable loss."""
        return pt.grad(self._gradient(h, y).sum(), h)

    def hessian(self, h, y):
        if self.is_separable(h, y):
            return _diag_batch(self.hessian_diagonal(h, y))
        from pytensor.gradient import jacobian

        return jacobian(self._gradient(h, y).sum(axis=0), h, vectorize=True).transpose(1, 0, 2)  # (N, d, d)

    def sqrt_hessian(self, h, y):
        if self.is_separable(h, y):
            return _diag_batch(pt.sqrt(pt.maximum(self.hessian_diagonal(h, y), 0)))
        lam, V = pt.linalg.eigh(self.hessian(h, y))
        return pt.sqrt(pt.maximum(lam, 0))[:, :, None] * V.transpose(0, 2, 1)  # S = diag(√λ₊) Vᵀ

    def gn_hessian(self, h, y):
        if self.is_separable(h, y):
            return _diag_batch(pt.maximum(self.hessian_diagonal(h, y), 0))
        if self.convex:
            return self.hessian(h, y)
        return super().gn_hessian(h, y)

    def hessian_vector(self, h, y, u):
        if self.is_separable(h, y):
            return pt.maximum(self.hessian_diagonal(h, y), 0) * u
        if self.convex:  # H_L u by forward mode over the gradient: no (N, d, d) tensor
            from pytensor.gradient import pushforward

            return pushforward(self._gradient(h, y), h, u)
        return (self.gn_hessian(h, y) * u[:, None, :]).sum(axis=2)

    def mean_hessian_diagonal(self, h, y):
        if self.is_separable(h, y):
            return pt.maximum(self.hessian_diagonal(h, y), 0).mean(axis=0)
        return None

    def mean_hessian(self, h, y):
        if self.convex and not self.is_separable(h, y):
            # E[H_L] = ∂/∂c (1/N) Σ_n ∇E_n(h_n + c) at c = 0: a (d, d) Jacobian, no per-datapoint matrices
            from pytensor.gradient import jacobian
            from pytensor.graph.replace import graph_replace

            c = pt.vector("shift", dtype=h.dtype)
            g = graph_replace(self._gradient(h, y), {h: h + c[None, :]}, strict=False).mean(axis=0)
            J = jacobian(g, c)
            return graph_replace(J, {c: pt.zeros((h.shape[1],), dtype=h.dtype)}, strict=False)
        return super().mean_hessian(h, y)

    def sample_grad(self, h, noise):
        if self._sampler is None:
            raise ValueError(f"{self.name}: KFAC samples targets from the model and needs a sampler "
                             "(CustomLoss(..., sampler=...)); KFLR and KFRA need none")
        return self._sampler(h, noise)

    def check_targets(self, Y, n, d):
        Y = np.asarray(Y, dtype=float)
        if Y.ndim != 2 or len(Y) != n:
            raise ValueError(f"{self.name}: targets must be a matrix with one row per datapoint ({n})")
        if not all_finite(Y):
            raise ValueError(f"{self.name}: targets contain NaN or inf")
        return Y

    def __repr__(self) -> str:
        return f"CustomLoss({self.name!r})"
