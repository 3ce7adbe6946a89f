"""KFGN's guards and state: a non-finite trial loss, bad data and hyperparameters, factor EMA, θ̄."""

import math

import numpy as np
import pytensor.tensor as pt
import pytest
from conftest import make_batch

import pt_kfgn
from pt_kfgn.graph.losses import SquaredError
from pt_kfgn.optim.first_order import FirstOrder
from pt_kfgn.optim.kfgn import KFGN


# -- robustness ------------------------------------------------------------------------------------
class _Cliff(SquaredError):
    """Squared error that is NaN once the mean output passes 1: finite at θ, NaN after a long step."""

    def per_sample(self, h, y):
        return super().per_sample(h, y) + pt.switch(h.mean() > 1.0, np.nan, 0.0)


def test_non_finite_trial_loss_rejects_the_step_bit_identically():
    net = pt_kfgn.mlp([3, 4, 2], ["tanh", "identity"], seed=0)
    X, Y = np.zeros((6, 3)) + 0.1, np.full((6, 2), 10.0)
    opt = KFGN(net, _Cliff(), "kfra", lam=1e-6, gamma=1e-6, gamma_search=False, trial_every=1, retries=0)
    before = [p.get_value().copy() for p in net.flat_params]
    lam0 = float(opt.lam.get_value())
    s = opt.step(X, Y)
    assert not s["accepted"] and s["rejected"] == 1 and math.isfinite(s["loss"])
    for p, v in zip(net.flat_params, before):
        assert np.array_equal(p.get_value(), v)
    assert float(opt.lam.get_value()) > lam0  # damping raised


def test_nan_data_raises_a_clear_error():
    net = pt_kfgn.mlp([3, 2], ["identity"])
    opt = FirstOrder(net, "mse", "sgd")
    with pytest.raises(ValueError, match="NaN or inf"):
        opt.step(np.full((2, 3), np.nan), np.zeros((2, 2)))


@pytest.mark.parametrize("kwargs", [{"lam": -1.0}, {"T1": 0}, {"eta": -1e-3}, {"omega1": 1.5}, {"ema": 1.0},
                                    {"gamma": 0.0}, {"method": "newton"}])
def test_invalid_hyperparameters_are_rejected(kwargs):
    net = pt_kfgn.mlp([3, 2], ["identity"])
    method = kwargs.pop("method", "kfra")
    with pytest.raises(ValueError):
        KFGN(net, "mse", method, **kwargs)


def test_factor_ema_averages_factors_across_steps():
    """With ema, step 2's direction uses ½(F₁ + F₂) (weight min(1 − 1/2, ema)); without, F₂ only."""
    X1, Y1 = make_batch("mse", 10, 3, 2, seed=1)
    X2, Y2 = make_batch("mse", 10, 3, 2, seed=2)
    params = {}
    for ema in (0.0, 0.9):
        net = pt_kfgn.mlp([3, 2], ["identity"], seed=0)
        opt = KFGN(net, "mse", "kflr", eta=0.0, lam=1e-12, gamma=1e-20, ema=ema, gamma_search=False,
                   min_damping=1e-20)
        opt.step(X1, Y1)
        opt.step(X2, Y2)
        params[ema] = net.get_params()[0]
    # reference: linear least squares, Newton step on batch 2 with Q = ½(Q1 + Q2) (ema) or Q2
    net = pt_kfgn.mlp([3, 2], ["identity"], seed=0)
    opt = KFGN(net, "mse", "kflr", eta=0.0, lam=1e-20, gamma=1e-20, gamma_search=False, min_damping=1e-20)
    opt.step(X1, Y1)
    W1 = np.vstack([net.get_params()[0][0], net.get_params()[0][1][None]])
    A1, A2 = np.hstack([X1, np.ones((10, 1))]), np.hstack([X2, np.ones((10, 1))])
    grad = A2.T @ (A2 @ W1 - Y2) / 10
    for ema, Q in ((0.0, A2.T @ A2 / 10), (0.9, 0.5 * (A1.T @ A1 + A2.T @ A2) / 10)):
        d = -np.linalg.solve(Q, grad)
        gd = (d * grad).sum()
        alpha = -gd / ((A2 @ d) ** 2).sum() * 10
        W, b = params[ema]
        np.testing.assert_allclose(np.vstack([W, b[None]]), W1 + alpha * d, atol=1e-6)


def test_parameter_averaging_is_the_running_mean_then_geometric():
    net = pt_kfgn.mlp([3, 2], ["identity"], seed=0)
    X, Y = make_batch("mse", 10, 3, 2)
    opt = KFGN(net, "mse", "kfra", zeta=0.5, gamma_search=False)
    history, avg = [], None
    for t in range(1, 5):
        opt.step(X, Y)
        theta = net.get_params()[0][0]
        z = min(1 - 1 / t, 0.5)
        avg = theta.copy() if avg is None else z * avg + (1 - z) * theta
        history.append(theta)
    np.testing.assert_allclose(opt.averaged_params()[0], avg, rtol=1e-12)
