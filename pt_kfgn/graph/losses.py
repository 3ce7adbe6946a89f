"""Per-datapoint losses E(h_L, y) and their output curvature (Sec. 2-3, Appendix C).

Every loss here is a **sum over outputs** per datapoint; the objective is the **mean over the batch**.
Layout: ``h`` is ``(N, d)``; a square root is returned as ``S`` of shape ``(N, r, d)`` with
``H_L[n] = S[n].T @ S[n]`` (the paper's ``C_L = S[n].T``, eq. 23).

=============  ===========================  =======================  ==========================
loss           H_L (per datapoint)          square root              KFAC sample (App. C)
=============  ===========================  =======================  ==========================
mse            I  (E = ½‖y − h‖²)           I                        ĝ = h − ŷ, ŷ ~ N(h, I)
bce            diag(p(1−p)), p = σ(h)       diag(√(p(1−p)))          ĝ = p − ŷ, ŷ ~ Bern(p)
softmax_ce     diag(p) − p pᵀ               diag(√p) − √p pᵀ         ĝ = p − onehot(ŷ)
mixture        see :class:`Mixture`         √(H_L^GN)                ĝ = μ′(μ − ŷ)/(μ(1 − μ))
=============  ===========================  =======================  ==========================

KFAC's ŷ is a function of a noise matrix drawn on the host (:meth:`Loss.draw_noise`, numpy) and passed into
the compiled step like the batch: the samples are the same on every backend and every number of devices,
and the Generator's state is part of each checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.graph.layers import all_finite

LOSSES = ("mse", "bce", "softmax_ce", "mixture")


class Loss:
    """Base class: a per-datapoint loss on the network output ``h`` (N, d)."""

    name = "loss"

    def per_sample(self, h, y):
        """E(h_n, y_n), shape (N,)."""
        raise NotImplementedError

    def mean(self, h, y):
        """Ē = mean_n E(h_n, y_n)."""
        return self.per_sample(h, y).mean()

    def hessian(self, h, y):
        """Exact ∂²E/∂h² per datapoint, (N, d, d) (may be indefinite for the mixture)."""
        return self.gn_hessian(h, y)

    def gn_hessian(self, h, y):
        """The PSD output curvature used by the Gauss-Newton matrix, (N, d, d)."""
        S = self.sqrt_hessian(h, y)
        return pt.batched_dot(S.transpose(0, 2, 1), S)

    def sqrt_hessian(self, h, y):
        """S (N, r, d) with S[n].T S[n] = H_L^GN[n] (eq. 23)."""
        raise NotImplementedError

    def hessian_vector(self, h, y, u):
        """H_L^GN[n] u[n] for every datapoint, (N, d)."""
        raise NotImplementedError

    def infimum(self, y):
        """``inf_h Ē(h, y)`` on these targets, a symbolic scalar, or None when not known (a custom loss).

        The bound below which :func:`pt_kfgn.optim.stages.quadratic_model` does not let the step's model
        promise the loss will fall [ours]."""

    def mean_hessian(self, h, y):
        """E[H_L^GN], the batch mean (d, d): KFRA's initialisation (eq. 26)."""
        return self.gn_hessian(h, y).mean(axis=0)

    def mean_hessian_diagonal(self, h, y):
        """The diagonal of E[H_L^GN] when it is diagonal (elementwise losses), else None."""
        return

    noise = "uniform"  # KFAC's noise: "uniform" on [0, 1) or "normal" (standard), see draw_noise

    def noise_columns(self, d: int) -> int:
        """Columns of KFAC's noise matrix for ``d`` outputs (one uniform per output by default)."""
        return d

    def draw_noise(self, rng: np.random.Generator, n: int, d: int, dtype) -> np.ndarray:
        """The noise matrix ``(n, noise_columns(d))`` of one KFAC step, drawn from ``rng``."""
        shape = (n, self.noise_columns(d))
        dt = np.dtype(dtype)
        if self.noise == "normal":
            return rng.standard_normal(shape, dtype=dt)
        return rng.random(shape, dtype=dt)

    def sample_grad(self, h, noise):
        """ĝ = ∂(−log p(ŷ|h))/∂h for one ŷ ~ p(y|h) per datapoint, ŷ a function of ``noise`` (symbolic,
        drawn by :meth:`draw_noise`)."""
        raise NotImplementedError

    def output_rank(self, d) -> int:
        """Rows ``r`` of the square root ``S`` (N, r, d) for ``d`` outputs (None if ``d`` is unknown)."""
        return d

    def check_targets(self, Y: np.ndarray, n: int, d: int) -> np.ndarray:
        """Validate numeric targets for ``n`` datapoints and ``d`` outputs; return them as floats."""
        Y = np.asarray(Y)
        if Y.shape != (n, d):
            raise ValueError(f"{self.name}: targets of shape {Y.shape} do not match the output ({n}, {d})")
        if not all_finite(Y):
            raise ValueError(f"{self.name}: targets contain NaN or inf")
        return Y if Y.dtype.kind == "f" else Y.astype(float)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _neg_xlogx(y):
    """``−y log y`` elementwise, 0 at y = 0 (no log of 0 is formed)."""
    return -y * pt.log(pt.switch(y > 0, y, 1))


def _diag_batch(v):
    """(N, d) -> (N, d, d) with v[n] on the diagonal."""
    return v[:, :, None] * pt.eye(v.shape[1], dtype=v.dtype)[None]


class SquaredError(Loss):
    """E = ½‖y − h‖² (FACES)."""

    name = "mse"

    def per_sample(self, h, y):
        return 0.5 * pt.sqr(y - h).sum(axis=1)

    def sqrt_hessian(self, h, y):
        return pt.broadcast_to(pt.eye(h.shape[1], dtype=h.dtype)[None], (h.shape[0], h.shape[1], h.shape[1]))

    def gn_hessian(self, h, y):
        return self.sqrt_hessian(h, y)

    def hessian_vector(self, h, y, u):
        return u

    def mean_hessian(self, h, y):
        return pt.eye(h.shape[1], dtype=h.dtype)

    def infimum(self, y):
        return pt.zeros((), dtype=y.dtype)  # at h = y

    def mean_hessian_diagonal(self, h, y):
        return pt.ones((h.shape[1],), dtype=h.dtype)

    noise = "normal"

    def sample_grad(self, h, noise):
        return noise  # ĝ = h − ŷ = −ε with ŷ = h + ε; the sign does not change ĝĝᵀ


class BernoulliCE(Loss):
    """E = −Σ_i y_i log σ(h_i) + (1 − y_i) log(1 − σ(h_i)), y ∈ [0, 1] (MNIST, CURVES).

    Written ``softplus(−|h|) + (1 − y) h`` for h > 0 and ``softplus(−|h|) − y h`` for h ≤ 0
    (= ``softplus(h) − y h``): non-negative terms and one softplus, so the value does not cancel at
    saturated logits (``softplus(h) − h`` is 0 in float32 for h ≳ 17, where E ≈ e^{−h}) and is never
    negative; the gradient ``σ(h) − y`` is accurate to float eps.  ``|h|`` is a switch so that the gradient at
    h = 0 is ``σ(0) − y``.
    """

    name = "bce"

    def per_sample(self, h, y):
        pos = h > 0
        return (pt.softplus(-pt.switch(pos, h, -h)) + pt.switch(pos, (1 - y) * h, -y * h)).sum(axis=1)

    @staticmethod
    def _s(h):
        """√(σ(1 − σ)) = 1 / (e^{h/2} + e^{−h/2}), stable at any logit."""
        return 1.0 / (2.0 * pt.cosh(0.5 * h))

    def sqrt_hessian(self, h, y):
        return _diag_batch(self._s(h))

    def gn_hessian(self, h, y):
        return _diag_batch(pt.sqr(self._s(h)))

    def hessian_vector(self, h, y, u):
        return pt.sqr(self._s(h)) * u

    def mean_hessian(self, h, y):
        return pt.diag(self.mean_hessian_diagonal(h, y))

    def mean_hessian_diagonal(self, h, y):
        return pt.sqr(self._s(h)).mean(axis=0)

    def sample_grad(self, h, noise):
        yhat = pt.cast(noise < pt.sigmoid(h), h.dtype)
        return (1 - yhat) * pt.sigmoid(h) - yhat * pt.sigmoid(-h)  # σ(h) − ŷ without cancellation

    def infimum(self, y):
        return (_neg_xlogx(y) + _neg_xlogx(1 - y)).sum(axis=1).mean()  # the targets' entropy, at σ(h) = y

    def check_targets(self, Y, n, d):
        Y = super().check_targets(Y, n, d)
        lo, hi = Y.min(initial=0), Y.max(initial=0)
        if lo < 0 or hi > 1:
            hint = "; 8-bit pixels? divide by 255" if hi <= 255 and lo >= 0 else ""
            raise ValueError(f"bce: targets must lie in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")
        return Y


class SoftmaxCE(Loss):
    """E = −Σ_k y_k log softmax(h)_k; targets are one-hot rows (integer labels are converted)."""

    name = "softmax_ce"

    def per_sample(self, h, y):
        return -(y * pt.special.log_softmax(h, axis=1)).sum(axis=1)

    def sqrt_hessian(self, h, y):
        p = pt.special.softmax(h, axis=1)
        return _diag_batch(pt.sqrt(p)) - pt.sqrt(p)[:, :, None] * p[:, None, :]

    def gn_hessian(self, h, y):
        p = pt.special.softmax(h, axis=1)
        return _diag_batch(p) - p[:, :, None] * p[:, None, :]

    def hessian_vector(self, h, y, u):
        p = pt.special.softmax(h, axis=1)
        return p * u - p * (p * u).sum(axis=1, keepdims=True)

    def mean_hessian(self, h, y):
        p = pt.special.softmax(h, axis=1)
        return pt.diag(p.mean(axis=0)) - pt.dot(p.T, p) / pt.cast(h.shape[0], h.dtype)

    def noise_columns(self, d: int) -> int:
        return 1  # one uniform per row: an inverse-CDF draw of the class

    def sample_grad(self, h, noise):
        p = pt.special.softmax(h, axis=1)
        u = noise[:, 0][:, None]  # (N, 1), broadcastable against the classes
        k = (pt.cumsum(p, axis=1)[:, :-1] < u).sum(axis=1)  # inverse-CDF draw of one class per row
        onehot = pt.cast(pt.eq(pt.arange(h.shape[1])[None, :], k[:, None]), h.dtype)
        return p - onehot

    def infimum(self, y):
        return _neg_xlogx(y).sum(axis=1).mean()  # the targets' entropy, at softmax(h) = y

    def check_targets(self, Y, n, d):
        Y = np.asarray(Y)
        if Y.ndim == 1 and Y.shape == (n,) and np.issubdtype(Y.dtype, np.integer):
            if Y.min(initial=0) < 0 or Y.max(initial=0) >= d:
                raise ValueError(f"softmax_ce: labels must lie in 0..{d - 1}")
            return np.eye(d)[Y]
        Y = super().check_targets(Y, n, d)
        if Y.min(initial=0) < 0 or not np.allclose(Y.sum(axis=1), 1.0):
            raise ValueError("softmax_ce: target rows must be probability vectors (or give integer labels)")
        return Y


class Mixture(Loss):
    """Scalar-output mixture of two Bernoulli classifiers, **MIX-v0** [ours; eq. 27's exact form was lost].

    ``μ(h) = p(y=1|h) = ½σ(h) + ½σ(2h)``: a non-canonical link, so the model is not in the exponential
    family in ``h`` and the GN differs from the Fisher.  ``E = −y log μ − (1 − y) log(1 − μ)``, y ∈ {0, 1}.

    Exact ``H_L = μ′²(y/μ² + (1−y)/(1−μ)²) + μ″(μ − y)/(μ(1 − μ))`` can be negative.  ``curvature`` picks
    the PSD output curvature of the GN: ``"positive-part"`` ``max(H_L, 0)`` (default; equations.md's "clip
    negative eigenvalues"), ``"fisher"`` ``μ′²/(μ(1 − μ))``, or ``"gn-split"``, the convex split
    ``μ′²(y/μ² + (1−y)/(1−μ)²)`` (the cross-entropy is convex in μ).  ``model_curvature`` (default
    ``"fisher"``; ``None``: the same as ``curvature``) is the one the GN-vector products use — the step's
    quadratic model (``α*``, ρ; eq. 39-42) and Hessian-free CG — while the Kronecker factors use
    ``curvature``, so KFLR and KFRA stay Gauss-Newton methods [ours: at a confidently misclassified point
    the positive part is 0 and ``α*`` was unbounded along the direction that fits it; docs/algorithm.md].
    KFAC samples ``ŷ ~ Bern(μ)``, ``ĝ = μ′(μ − ŷ)/(μ(1 − μ))``.

    **Stable forms** (every term finite and accurate in float32 for any logit): nothing is formed by
    subtracting from 1.  ``1 − μ(h) = μ(−h)`` and ``μ′`` is even, so every ratio is written through
    ``R(h) = μ′(h)/μ(h) = (σ(−h) + 2 r σ(−2h)) / (1 + r)`` with ``r = σ(2h)/σ(h) = exp(softplus(−h) −
    softplus(−2h))`` (a sum of bounded positive terms over ``1 + r``); ``μ′/(1 − μ) = R(−h)``.  Then
    ``∂E/∂h = −y R(h) + (1 − y) R(−h)``, ``H_L^GN = y R(h)² + (1 − y) R(−h)²`` and
    ``log μ = log1p(−μ(−h))`` for h > 0, ``log σ(h) + log1p(r) − log 2`` for h ≤ 0 (each branch fed
    only inputs where it is exact, so neither branch's gradient can be 0·∞).
    """

    name = "mixture"
    CURVATURES = ("positive-part", "fisher", "gn-split")

    def __init__(self, curvature: str = "positive-part", model_curvature: str | None = "fisher"):
        for name, value in (("curvature", curvature), ("model_curvature", model_curvature or curvature)):
            if value not in self.CURVATURES:
                raise ValueError(f"{name}={value!r} is not one of {list(self.CURVATURES)}")
        self.curvature = curvature
        self.model_curvature = model_curvature or curvature

    @staticmethod
    def _mu(h):
        """μ(h) = ½σ(h) + ½σ(2h), as a sum of positive terms (no cancellation)."""
        return 0.5 * (pt.sigmoid(h) + pt.sigmoid(2 * h))

    @staticmethod
    def _r(h):
        """r = σ(2h)/σ(h) = exp(softplus(−h) − softplus(−2h)) ∈ (0, 1.21]."""
        return pt.exp(pt.softplus(-h) - pt.softplus(-2 * h))

    @classmethod
    def _ratio(cls, h):
        """R(h) = μ′(h)/μ(h) in its stable form (class docstring); R(−h) = μ′(h)/(1 − μ(h))."""
        r = cls._r(h)
        return (pt.sigmoid(-h) + 2 * r * pt.sigmoid(-2 * h)) / (1 + r)

    @classmethod
    def _log_mu(cls, h):
        """log μ(h) ≤ 0 without cancellation or subnormals: log1p(−μ(−h)) for h > 0 and
        ``log σ(h) + log1p(r) − log 2`` for h ≤ 0 (no exp of a large negative number)."""
        hp = pt.maximum(h, 0)  # each branch sees only the inputs where it is selected
        hn = pt.minimum(h, 0)
        pos = pt.log1p(-cls._mu(-hp))
        neg = -pt.softplus(-hn) + pt.log1p(cls._r(hn)) - np.log(np.array(2.0, dtype=h.dtype))  # no upcast
        return pt.switch(h > 0, pos, neg)

    def per_sample(self, h, y):
        h0, y0 = h[:, 0], y[:, 0]
        return -(y0 * self._log_mu(h0) + (1 - y0) * self._log_mu(-h0))

    # H₁(h) = −(log μ)″ as a ratio of polynomials in u = e^{−h} (exact integer coefficients, lowest degree first;
    # μ = ½(2 + u + u²)/((1 + u)(1 + u²))): only the numerator's top coefficient is negative, so the one
    # cancellation left is near H₁'s root (h ≈ −1.1), where it costs absolute error only.
    _H_NUM = (0, 2, 8, 38, 44, 38, 16, 2, -4)
    _H_DEN = (4, 12, 25, 40, 48, 48, 38, 24, 12, 4, 1)

    @staticmethod
    def _horner(coefs, t):
        out = coefs[-1] + 0 * t
        for c in coefs[-2::-1]:
            out = out * t + c
        return out

    @classmethod
    def _exact_parts(cls, h, y):
        """``(s, q)`` with the exact ``H_L = s² q`` (``H = −∂²log p(y|h)/∂h²``, negative for confident mistakes), in
        closed form, accurate at every logit; ``√max(H, 0) = s √max(q, 0)`` never squares a small number.
        ``H(h, y=0) = H₁(−h)``.  With ``t = e^{−|h|} ∈ (0, 1]``: ``H₁ = t · num(t)/t / den(t)`` for h ≥ 0
        (``s = e^{−|h|/2}``) and ``t² num*(t)/den*(t)`` with the reversed polynomials for h < 0 (``s = t``)."""
        hs = pt.switch(pt.eq(y, 1), h, -h)
        a = abs(hs)
        t = pt.exp(-a)
        dt = h.dtype
        num, den = (np.asarray(cls._H_NUM, dt), np.asarray(cls._H_DEN, dt))
        q_pos = cls._horner(num[1:], t) / cls._horner(den, t)  # num(t)/t: its u⁰ coefficient is 0
        q_neg = cls._horner(num[::-1][:-1], t) / cls._horner(den[::-1], t)
        pos = hs >= 0
        return pt.switch(pos, pt.exp(-0.5 * a), t), pt.switch(pos, q_pos, q_neg)

    @classmethod
    def _exact(cls, h, y):
        """The exact ``H_L`` (:meth:`_exact_parts`)."""
        s, q = cls._exact_parts(h, y)
        return pt.sqr(s) * q

    def _hgn(self, h, y, curvature: str | None = None):
        """The PSD output curvature the GN uses (``curvature``, class docstring); (N, 1)."""
        curvature = curvature or self.curvature
        if curvature == "fisher":
            return self._ratio(h) * self._ratio(-h)  # μ′²/(μ(1 − μ)) = R(h) R(−h)
        if curvature == "positive-part":
            return pt.maximum(self._exact(h, y), 0)
        return y * pt.sqr(self._ratio(h)) + (1 - y) * pt.sqr(self._ratio(-h))  # (N, 1)

    def hessian(self, h, y):
        g = pt.grad(self.per_sample(h, y).sum(), h)  # separable: the diagonal is the full Hessian
        return pt.grad(g.sum(), h)[:, :, None]

    def output_rank(self, d) -> int:
        return 1

    def sqrt_hessian(self, h, y):
        if self.curvature == "gn-split":
            return (y * self._ratio(h) + (1 - y) * self._ratio(-h))[:, :, None]  # y ∈ {0, 1}: √ of _hgn
        if self.curvature == "fisher":
            return (pt.sqrt(self._ratio(h)) * pt.sqrt(self._ratio(-h)))[:, :, None]
        s, q = self._exact_parts(h, y)
        return (s * pt.sqrt(pt.maximum(q, 0)))[:, :, None]

    def gn_hessian(self, h, y):
        return self._hgn(h, y)[:, :, None]

    def hessian_vector(self, h, y, u):
        return self._hgn(h, y, self.model_curvature) * u

    def mean_hessian(self, h, y):
        return self._hgn(h, y).mean(axis=0, keepdims=True)

    def infimum(self, y):
        return pt.zeros((), dtype=y.dtype)  # targets are 0 or 1, μ → y as h → ±∞

    def sample_grad(self, h, noise):
        yhat = pt.cast(noise < self._mu(h), h.dtype)
        return -yhat * self._ratio(h) + (1 - yhat) * self._ratio(-h)  # μ′(μ − ŷ)/(μ(1 − μ))

    def check_targets(self, Y, n, d):
        if d != 1:
            raise ValueError(f"mixture: the network must have one output, it has {d}")
        Y = np.asarray(Y, dtype=float).reshape(-1, 1) if np.ndim(Y) == 1 else np.asarray(Y)
        Y = super().check_targets(Y, n, 1)
        if not np.all((Y == 0) | (Y == 1)):
            raise ValueError("mixture: targets must be 0 or 1")
        return Y


def get_loss(loss) -> Loss:
    """A :class:`Loss` from its name ("mse", "bce", "softmax_ce", "mixture") or itself (e.g. a :class:`CustomLoss`)."""
    if isinstance(loss, Loss):
        return loss
    table = {"mse": SquaredError, "bce": BernoulliCE, "softmax_ce": SoftmaxCE, "mixture": Mixture}
    if loss not in table:
        raise ValueError(f"loss={loss!r} is not one of {list(LOSSES)}")
    return table[loss]()


def new_rng(seed: int | None = 0) -> np.random.Generator:
    """The numpy Generator of KFAC's noise (:meth:`Loss.draw_noise`)."""
    return np.random.default_rng(seed)


def noise_input(dtype: str):
    """The symbolic noise matrix of KFAC's samples, an input of the compiled function (see :meth:`Loss.draw_noise`)."""
    return pt.matrix("kfac_noise", dtype=dtype)
