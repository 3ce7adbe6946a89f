"""First-order baselines against numpy arithmetic, Lasagne-style updates, warm compilation."""

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import make_batch

import pt_kfgn
from pt_kfgn.optim.first_order import FirstOrder, halving_schedule
from pt_kfgn.optim.kfgn import KFGN


# -- first-order baselines against numpy arithmetic -------------------------------------------------
def _numpy_trajectory(rule, X, Y, W, b, lr, steps, decay):
    state = {}
    N = len(X)
    for t in range(1, steps + 1):
        a = halving_schedule(lr, t, decay)
        R = X @ W + b - Y
        gW, gb = X.T @ R / N, R.mean(0)
        out = []
        for k, (p, g) in enumerate(((W, gW), (b, gb))):
            if rule == "sgd":
                p = p - a * g
            elif rule in ("momentum", "nesterov"):
                v = 0.9 * state.get(k, 0) - a * g
                state[k] = v
                p = p + v if rule == "momentum" else p + 0.9 * v - a * g
            else:
                m = 0.9 * state.get((k, "m"), 0) + 0.1 * g
                v = 0.999 * state.get((k, "v"), 0) + 0.001 * g ** 2
                state[(k, "m")], state[(k, "v")] = m, v
                p = p - a * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-8)
            out.append(p)
        W, b = out
    return W, b


@pytest.mark.parametrize("rule", ["sgd", "momentum", "nesterov", "adam"])
def test_first_order_matches_numpy_over_several_steps_with_halving(rule):
    X, Y = make_batch("mse", 12, 3, 2, seed=3)
    net = pt_kfgn.mlp([3, 2], ["identity"], seed=3)
    W0, b0 = net.get_params()[0]
    opt = FirstOrder(net, "mse", rule, lr=0.05, decay_period=3)
    for _ in range(7):
        s = opt.step(X, Y)
    assert s["lr"] == pytest.approx(0.05 / 4)  # halved at steps 4 and 7
    W, b = _numpy_trajectory(rule, X, Y, W0, b0, 0.05, 7, 3)
    np.testing.assert_allclose(net.get_params()[0][0], W, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(net.get_params()[0][1], b, rtol=1e-10, atol=1e-12)


def test_first_order_updates_are_usable_lasagne_style():
    from pt_kfgn.optim.first_order import adam

    net = pt_kfgn.mlp([3, 2], ["identity"], seed=3)
    y = pt.matrix()
    loss = pt_kfgn.get_loss("mse").mean(net.output, y)
    lr = pytensor.shared(0.01)
    f = pytensor.function([net.X, y], loss, updates=adam(pt.grad(loss, net.flat_params), net.flat_params, lr),
                          mode="FAST_COMPILE")
    X, Y = make_batch("mse", 12, 3, 2)
    assert f(X, Y) > f(X, Y)
    # the loss itself, default learning rate (Lasagne's ``loss_or_grads``)
    g = pytensor.function([net.X, y], loss, updates=pt_kfgn.sgd(loss, net.flat_params), mode="FAST_COMPILE")
    assert g(X, Y) > g(X, Y)


def test_warm_compile_leaves_the_trajectory_unchanged():
    X, Y = make_batch("softmax_ce", 10, 3, 2, seed=4)
    params = []
    for warm in (False, True):
        net = pt_kfgn.mlp([3, 4, 2], ["tanh", "identity"], seed=0)
        opt = KFGN(net, "softmax_ce", "kfac", T2=2)
        if warm:
            opt.compile()
        for _ in range(3):
            opt.step(X, Y)
        params.append([p.get_value() for p in net.flat_params])
    for a, b in zip(*params):
        assert np.array_equal(a, b)
