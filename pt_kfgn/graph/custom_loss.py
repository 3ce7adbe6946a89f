"""A user's own loss: ``E(h_L, y)`` per datapoint as a PyTensor expression, its curvature derived by PyTensor.

>>> loss = CustomLoss(lambda h, y: (pt.log1p(pt.exp(h)) - y * h).sum(axis=1), name="my_bce")
>>> pk.kronecker_factors(net, loss, X, Y, "kflr")        # KFLR, KFRA, exact blocks; KFAC needs a sampler
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.graph.layers import all_finite
from pt_kfgn.graph.losses import Loss


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

    ``H_L[n] = ∂²E_n/∂h_n²`` is one vectorised Jacobian of the batch gradient (datapoints are independent,
    so row n of ``∂(Σ_n E_n)/∂h`` depends on ``h_n`` alone).  The square root ``C_L`` comes from a batched
    eigendecomposition with negative eigenvalues clipped to 0 [ours]: for a loss convex in ``h`` this is
    exact; otherwise the Gauss-Newton uses the PSD part of ``H_L``.
    """

    def __init__(self, per_sample, name: str = "custom", sampler=None, noise: str = "uniform"):
        if not callable(per_sample):
            raise TypeError("per_sample must be a callable (h, y) -> per-datapoint losses")
        if noise not in ("uniform", "normal"):
            raise ValueError(f"noise must be 'uniform' or 'normal', got {noise!r}")
        self._per_sample, self.name, self._sampler, self.noise = per_sample, name, sampler, noise

    def per_sample(self, h, y):
        E = self._per_sample(h, y)
        if E.ndim != 1:
            raise ValueError(f"{self.name}: per_sample must return one loss per datapoint (a vector), "
                             f"got {E.ndim} dimensions")
        return E

    def hessian(self, h, y):
        from pytensor.gradient import jacobian

        g = pt.grad(self.per_sample(h, y).sum(), h)  # (N, d); row n depends on h[n] only
        return jacobian(g.sum(axis=0), h, vectorize=True).transpose(1, 0, 2)  # (N, d, d)

    def sqrt_hessian(self, h, y):
        lam, V = pt.linalg.eigh(self.hessian(h, y))
        return pt.sqrt(pt.maximum(lam, 0))[:, :, None] * V.transpose(0, 2, 1)  # S = diag(√λ₊) Vᵀ

    def hessian_vector(self, h, y, u):
        return (self.gn_hessian(h, y) * u[:, None, :]).sum(axis=2)

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
