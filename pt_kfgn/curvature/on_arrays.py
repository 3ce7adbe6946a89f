"""Curvature on numpy arrays: a numpy-in, numpy-out API to compare pt_kfgn with other libraries and brute force.

>>> net = mlp([6, 5, 4, 3], ["sigmoid", "tanh", "identity"])
>>> factors = kronecker_factors(net, "mse", X, Y, "kfra")   # [(Q, G), ...] per layer

``θ_λ = numpy.vstack([W, b]).ravel()``: a one-datapoint GN block equals ``numpy.kron(Q, G)``.
Compiled functions are cached on the network, so repeated calls do not recompile.
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.backend import compile_function, floatx
from pt_kfgn.curvature.factors import METHODS, check_memory, exact_blocks
from pt_kfgn.curvature.factors import kronecker_factors as _factors
from pt_kfgn.graph.custom_loss import CustomLoss
from pt_kfgn.graph.layers import check_data
from pt_kfgn.graph.losses import get_loss, new_rng, noise_input
from pt_kfgn.graph.walk import layer_graph


def _compiled(net, loss, what: str, seed=None):
    cache = net.__dict__.setdefault("_pt_kfgn_cache", {})
    key = (loss.name, id(loss) if isinstance(loss, CustomLoss) else None, what, seed)
    if key not in cache:
        with floatx(net.dtype):
            cache[key] = _build(net, loss, what, seed)
    return cache[key]


def _build(net, loss, what, seed):
    """Compile the factors (``what`` in METHODS) or exact blocks ("hessian", "gn") of ``net``."""
    chain = layer_graph(net.output)
    y = pt.matrix("Y", dtype=net.dtype)
    shapes = {net.X: (None, net.sizes[0])}
    if what == "kfac":  # the noise of the samples is an input, drawn from a Generator kept with the function
        noise, rng = noise_input(net.dtype), new_rng(seed)
        fn = compile_function([net.X, y, noise], [m for pair in _factors(chain, loss, y, what, noise) for m in pair],
                              static_shapes=shapes)
        return lambda X, Y: fn(X, Y, loss.draw_noise(rng, len(X), net.sizes[-1], net.dtype))
    if what in METHODS:
        outs = [m for pair in _factors(chain, loss, y, what) for m in pair]
    else:
        outs = exact_blocks(chain, loss, y, what)
    return compile_function([net.X, y], outs, static_shapes=shapes)


def _prepare(net, loss, X, Y, what=None):
    loss = get_loss(loss)
    X, Y = check_data(net, loss, X, Y)
    if what is not None:
        check_memory(net.layer_dims, len(X), what, loss.output_rank(net.sizes[-1]), np.dtype(net.dtype).itemsize)
    return loss, X, Y


def kronecker_factors(net, loss, X, Y, method: str, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Kronecker factors of each layer's Gauss-Newton block (eq. 21-26, App. C).

    Parameters
    ----------
    net : MLP or GraphNet
    loss : str or Loss
    X, Y : array_like
        A batch: inputs ``(N, d_0)`` and targets.
    method : {"kflr", "kfra", "kfac", "exact"}
        "exact" gives ``E[Q]`` and the exact ``E[𝒢]`` (what KFLR computes).
    seed : int
        KFAC's sampler seed (each call with the same seed on a fresh net repeats the same draws; later calls
        draw new ones).

    Returns
    -------
    list of (Q, G)
        Per layer, input first: ``Q`` of size ``d_in + 1`` (bias last), ``G`` of size ``d_out``; both means
        over the batch, so a one-datapoint block is ``kron(Q, G)``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {list(METHODS)}")
    loss, X, Y = _prepare(net, loss, X, Y, method)
    out = _compiled(net, loss, method, seed if method == "kfac" else None)(X, Y)
    return list(zip(out[0::2], out[1::2]))


def block_hessian(net, loss, X, Y) -> list[np.ndarray]:
    """Exact per-layer Hessian blocks of the batch-mean loss (eq. 7-8), tiny nets only.

    Parameters
    ----------
    net, loss, X, Y
        As :func:`kronecker_factors`.

    Returns
    -------
    list of ndarray
        Per layer, the ``((d_in + 1) d_out)²`` block w.r.t. ``vstack([W, b]).ravel()``.
    """
    loss, X, Y = _prepare(net, loss, X, Y, "hessian")
    return list(_compiled(net, loss, "hessian")(X, Y))


def block_gauss_newton(net, loss, X, Y) -> list[np.ndarray]:
    """Exact per-layer Gauss-Newton blocks (eq. 12-19), laid out as :func:`block_hessian`, tiny nets only."""
    loss, X, Y = _prepare(net, loss, X, Y, "gn")
    return list(_compiled(net, loss, "gn")(X, Y))
