"""Brute-force oracles: dense Hessians and Jacobians from pytensor.gradient on tiny float64 nets.

Independent of pt_kfgn's recursions: the network is rebuilt from flat parameter vectors
``θ_λ = vstack([W, b]).ravel()`` and differentiated directly.
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import hessian, jacobian

from pt_kfgn.graph.layers import TRANSFER_FUNCTIONS
from pt_kfgn.graph.losses import get_loss

_CACHE = {}


def _build(sizes, acts, loss_name):
    thetas = [pt.vector(f"theta{i}") for i in range(len(sizes) - 1)]
    X, Y = pt.matrix("X"), pt.matrix("Y")
    a, hs = X, []
    for i, (th, act) in enumerate(zip(thetas, acts)):
        n_in, n_out = sizes[i], sizes[i + 1]
        W = th[: n_in * n_out].reshape((n_in, n_out))
        b = th[n_in * n_out:]
        h = pt.dot(a, W) + b
        hs.append(h)
        a = TRANSFER_FUNCTIONS[act](h)
    loss = get_loss(loss_name)
    return thetas, X, Y, hs, loss


def compiled(sizes, acts, loss_name):
    """Functions of (X, Y, *θ): block Hessians; J_λ = ∂h_L/∂b_λ per layer; per-sample ∂²E/∂h_L²; h_L."""
    key = (tuple(sizes), tuple(acts), loss_name)
    if key not in _CACHE:
        thetas, X, Y, hs, loss = _build(sizes, acts, loss_name)
        obj = loss.mean(hs[-1], Y)
        blocks = [hessian(obj, th) for th in thetas]
        # J wrt each layer's bias = ∂h_L/∂h_λ, stacked over the batch: (N*d_L, d_λ)
        jac_h = [jacobian(hs[-1].ravel(), th) for th in thetas]
        inputs = [X, Y, *thetas]
        f_blocks = pytensor.function(inputs, blocks, mode="FAST_COMPILE", on_unused_input="ignore")
        f_jac = pytensor.function(inputs, [*jac_h, hs[-1]], mode="FAST_COMPILE", on_unused_input="ignore")
        hv = pt.vector("hv")
        yv = pt.vector("yv")
        f_hout = pytensor.function([hv, yv], hessian(loss.per_sample(hv[None], yv[None]).sum(), hv),
                                   mode="FAST_COMPILE", on_unused_input="ignore")
        _CACHE[key] = (f_blocks, f_jac, f_hout)
    return _CACHE[key]


def thetas_of(net):
    return [np.vstack([W, b[None]]).ravel() for W, b in net.get_params()]


def brute_block_hessian(net, loss_name, X, Y):
    f_blocks, _, _ = compiled(net.sizes, net.activations, loss_name)
    return f_blocks(X, Y, *thetas_of(net))


def brute_gn(net, loss_name, X, Y, gn_output_hessian=None):
    """Full-θ per-sample Jacobians → (block GN per layer, E[𝒢_λ] per layer, full GN matrix)."""
    _, f_jac, f_hout = compiled(net.sizes, net.activations, loss_name)
    out = f_jac(X, Y, *thetas_of(net))
    jacs, hL = out[:-1], out[-1]
    N, d = hL.shape
    H = np.stack([gn_output_hessian(hL[n], Y[n]) if gn_output_hessian else f_hout(hL[n], Y[n])
                  for n in range(N)])
    Js = [J.reshape(N, d, -1) for J in jacs]  # per sample (d_L, |θ_λ|)
    blocks = [np.mean([Jn.T @ Hn @ Jn for Jn, Hn in zip(J, H)], axis=0) for J in Js]
    # ∂h_L/∂h_λ equals the Jacobian w.r.t. the bias, the last d_λ entries of θ_λ
    Gs = [np.mean([Jn[:, -n_out:].T @ Hn @ Jn[:, -n_out:] for Jn, Hn in zip(J, H)], axis=0)
          for J, n_out in zip(Js, net.sizes[1:])]
    Jfull = np.concatenate(Js, axis=2)
    full = np.mean([Jn.T @ Hn @ Jn for Jn, Hn in zip(Jfull, H)], axis=0)
    return blocks, Gs, full, Jfull, H


def mixture_gn_hessian(h, y):
    """The PSD output curvature of MIX-v0 in numpy (an independent closed form): the positive part of the exact
    ``H_L = μ′²(y/μ² + (1−y)/(1−μ)²) + μ″(μ − y)/(μ(1 − μ))``."""
    s1, s2 = 1 / (1 + np.exp(-h)), 1 / (1 + np.exp(-2 * h))
    mu, dmu = 0.5 * (s1 + s2), 0.5 * s1 * (1 - s1) + s2 * (1 - s2)
    d2mu = 0.5 * s1 * (1 - s1) * (1 - 2 * s1) + 2 * s2 * (1 - s2) * (1 - 2 * s2)
    full = dmu ** 2 * (y / mu ** 2 + (1 - y) / (1 - mu) ** 2) + d2mu * (mu - y) / (mu * (1 - mu))
    return np.atleast_2d(np.maximum(full, 0))


def mixture_fisher(h, y):
    """MIX-v0's Fisher output curvature ``μ′²/(μ(1 − μ))`` in numpy (independent of ``y``): the curvature of the
    step's model by default (``Mixture.model_curvature``)."""
    s1, s2 = 1 / (1 + np.exp(-h)), 1 / (1 + np.exp(-2 * h))
    mu, dmu = 0.5 * (s1 + s2), 0.5 * s1 * (1 - s1) + s2 * (1 - s2)
    return np.atleast_2d(dmu ** 2 / (mu * (1 - mu)))


# -- an independent numpy KFGN step (factors, factored Tikhonov, α*) for bce/mse nets --------------------
_ACT = {"identity": (lambda h: h, lambda h: np.ones_like(h)),
        "tanh": (np.tanh, lambda h: 1 - np.tanh(h) ** 2),
        "sigmoid": (lambda h: 1 / (1 + np.exp(-h)), lambda h: np.exp(-h) / (1 + np.exp(-h)) ** 2)}


def numpy_forward(net, X):
    """``[(ā_in, h, f'(h)), ...]`` per layer in numpy (ā with the bias column)."""
    out, a = [], X
    for (W, b), act in zip(net.get_params(), net.activations):
        h = a @ W + b
        out.append((np.hstack([a, np.ones((len(a), 1))]), h, _ACT[act][1](h)))
        a = _ACT[act][0](h)
    return out


def numpy_grad_and_output_hessian(loss_name, h, Y):
    """∂E_n/∂h_L (N, d) and H_L per datapoint (N, d, d) for bce / mse."""
    if loss_name == "bce":
        p = 1 / (1 + np.exp(-h))
        return p - Y, np.stack([np.diag(v) for v in p * (1 - p)])
    assert loss_name == "mse"
    return h - Y, np.broadcast_to(np.eye(h.shape[1]), (len(h),) + (h.shape[1],) * 2)


def numpy_factors(net, loss_name, X, Y, method):
    """``[(Q, G), ...]``: KFLR (exact E[𝒢], eq. 24-25) or KFRA (eq. 26) by explicit numpy recursions."""
    layers = numpy_forward(net, X)
    N = len(X)
    _, H = numpy_grad_and_output_hessian(loss_name, layers[-1][1], Y)
    Ws = [W for W, _ in net.get_params()]
    if method == "kfra":
        Gs = [H.mean(0)]
        for i in range(len(layers) - 2, -1, -1):
            d = layers[i][2]
            Gs.insert(0, (Ws[i + 1] @ Gs[0] @ Ws[i + 1].T) * (d.T @ d / N))
    else:  # per-datapoint 𝒢_λ = B W 𝒢_{λ+1} Wᵀ B, then the mean
        per = [H]
        for i in range(len(layers) - 2, -1, -1):
            d = layers[i][2]
            per.insert(0, np.einsum("na,ab,nbc,dc,nd->nad", d, Ws[i + 1], per[0], Ws[i + 1], d))
        Gs = [g.mean(0) for g in per]
    return [(A.T @ A / N, G) for (A, _, _), G in zip(layers, Gs)]


def numpy_gradient(net, loss_name, X, Y, eta):
    """∇f per layer as ``vstack([∇W, ∇b])`` by explicit backpropagation (f = Ē + ½η‖θ‖²)."""
    layers = numpy_forward(net, X)
    g, _ = numpy_grad_and_output_hessian(loss_name, layers[-1][1], Y)
    g = g / len(X)
    out = []
    for i in range(len(layers) - 1, -1, -1):
        A = layers[i][0]
        W, b = net.get_params()[i]
        out.insert(0, A.T @ g + eta * np.vstack([W, b[None]]))
        if i:
            g = (g @ W.T) * layers[i - 1][2]
    return out


def numpy_kfgn_step(net, loss_name, X, Y, method, lam, gamma, eta):
    """The update ``α* δ`` (flat, layer-major ``vstack([W, b]).ravel()``) of one damped KFGN step."""
    factors = numpy_factors(net, loss_name, X, Y, method)
    grads = numpy_gradient(net, loss_name, X, Y, eta)
    eps = gamma + eta
    deltas = []
    for (Q, G), g in zip(factors, grads):
        pi = np.sqrt((np.trace(Q) / len(Q)) / (np.trace(G) / len(G)))
        Qd = Q + pi * np.sqrt(eps) * np.eye(len(Q))
        Gd = G + np.sqrt(eps) / pi * np.eye(len(G))
        deltas.append(-np.linalg.solve(Qd, g) @ np.linalg.inv(Gd))
    d = np.concatenate([x.ravel() for x in deltas])
    grad = np.concatenate([x.ravel() for x in grads])
    _, _, full, _, _ = brute_gn(net, loss_name, X, Y)
    alpha = -(d @ grad) / (d @ (full + (lam + eta) * np.eye(len(d))) @ d)
    return alpha * d


def flat_params(net):
    """The net's parameters as one vector, layer-major ``vstack([W, b]).ravel()``."""
    return np.concatenate([np.vstack([W, b[None]]).ravel() for W, b in net.get_params()])


def flat_pairs(arrs):
    """``[W1, b1, W2, b2, ...]`` as one vector in the same layout as :func:`flat_params`."""
    return np.concatenate([np.vstack([arrs[i], arrs[i + 1][None]]).ravel() for i in range(0, len(arrs), 2)])


def grad_fn(net, loss, eta=0.0):
    """A compiled ``(X, Y) -> [f, ∇f...]`` with ``f = Ē + ½η‖θ‖²``, built independently of the optimisers."""
    from pt_kfgn.backend import compile_function

    y = pt.matrix("Y")
    f = get_loss(loss).mean(net.output, y) + 0.5 * eta * sum(pt.sqr(p).sum() for p in net.flat_params)
    return compile_function([net.X, y], [f, *pt.grad(f, net.flat_params)])


def spd(r, n):
    """A random symmetric positive definite ``n × n`` matrix."""
    A = r.standard_normal((n, n + 2))
    return A @ A.T / n
