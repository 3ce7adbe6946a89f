"""Appendix B's scalar rules against brute force: the KFLR step on least squares, ρ, α*, LM λ, the γ search."""


import numpy as np
import pytensor.tensor as pt
import pytest
from conftest import make_batch
from reference import brute_gn, flat_pairs, flat_params, grad_fn

import pt_kfgn
from pt_kfgn.backend import compile_function
from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim.kfgn import KFGN


# -- linear least squares: the KFLR step is Newton's step ----------------------------------------
def test_undamped_kflr_step_on_linear_least_squares_is_the_lstsq_solution():
    r = np.random.default_rng(0)
    X, Y = r.standard_normal((40, 5)), r.standard_normal((40, 3))
    net = pt_kfgn.mlp([5, 3], ["identity"], seed=1)
    opt = KFGN(net, "mse", "kflr", eta=0.0, lam=1e-20, gamma=1e-20, gamma_search=False, T1=1, min_damping=1e-20)
    s = opt.step(X, Y)
    Xa = np.hstack([X, np.ones((40, 1))])
    sol = np.linalg.lstsq(Xa, Y, rcond=None)[0]
    W, b = net.get_params()[0]
    np.testing.assert_allclose(np.vstack([W, b[None]]), sol, atol=1e-8)
    assert abs(s["alpha"] - 1) < 1e-8 and abs(s["rho"] - 1) < 1e-8


def test_rho_is_one_on_a_quadratic_objective_with_any_gamma():
    r = np.random.default_rng(1)
    X, Y = r.standard_normal((30, 4)), r.standard_normal((30, 2))
    net = pt_kfgn.mlp([4, 2], ["identity"], seed=2)
    opt = KFGN(net, "mse", "kfra", eta=1e-3, lam=1e-12, gamma=1.0, gamma_search=False, T1=1, min_damping=1e-12)
    for _ in range(3):
        s = opt.step(X, Y)
        assert abs(s["rho"] - 1) < 1e-8


# -- α*: the minimiser of the brute-force quadratic model along δ ------------------------------------
def test_alpha_star_minimises_the_brute_force_quadratic_model():
    net = pt_kfgn.mlp([4, 5, 3], ["tanh", "identity"], seed=4)
    X, Y = make_batch("bce", 8, 4, 3)
    eta, lam = 1e-2, 0.5
    theta0 = flat_params(net)
    _f0, *g = grad_fn(net, "bce", eta)(X, Y)
    grad = flat_pairs(g)
    _, _, G, _, _ = brute_gn(net, "bce", X, Y)
    opt = KFGN(net, "bce", "kfra", eta=eta, lam=lam, gamma=0.3, gamma_search=False)
    s = opt.step(X, Y)
    step = flat_params(net) - theta0
    delta = step / s["alpha"]
    C = G + (lam + eta) * np.eye(len(delta))
    alpha_ref = -(delta @ grad) / (delta @ C @ delta)
    np.testing.assert_allclose(s["alpha"], alpha_ref, rtol=1e-9)
    np.testing.assert_allclose(s["model_change"], 0.5 * alpha_ref * (delta @ grad), rtol=1e-9)


# -- LM and γ rules --------------------------------------------------------------------------------
def test_lambda_follows_eq_42_on_a_scripted_rho_sequence():
    w = (19 / 20) ** 5
    lam = 10.0
    expected = []
    for rho in [0.9, 0.9, 0.5, 0.1, float("nan"), 0.76, 0.24]:
        lam = rules.update_lambda(lam, rho, w)
        expected.append(lam)
    want = [10 * w, 10 * w * w, 10 * w * w, 10 * w, 10.0, 10 * w, 10.0]
    np.testing.assert_allclose(expected, want, rtol=1e-14)


def test_choose_damping_is_the_argmin_and_ignores_nan():
    """The symbolic γ choice of the step (eq. 43), compiled on scalar model values."""
    from pt_kfgn.optim.stages import QuadraticModel, choose_damping

    ms = pt.vector("m")
    cands = [([pt.constant(float(i))], QuadraticModel(ms[i], ms[i], ms[i], ms[i], ms[i], ms[i])) for i in range(3)]
    _, _, gamma, best = choose_damping(cands, [pt.constant(g) for g in (0.5, 1.0, 2.0)])
    f = compile_function([ms], [gamma, best])
    assert [float(v) for v in f([-1.0, -3.0, -2.0])] == [1.0, 1]
    assert [float(v) for v in f([np.nan, -1.0, -2.0])] == [2.0, 2]
    assert [float(v) for v in f([-2.0, -2.0, -2.0])] == [0.5, 0]  # a tie keeps the first (the current γ)
    assert rules.averaging_weight(1, 0.99) == 0 and rules.averaging_weight(1000, 0.99) == 0.99


def test_compiled_gamma_search_picks_the_argmin_of_the_model():
    """Recompute the three candidate steps in numpy from the exported factors and compare."""
    net = pt_kfgn.mlp([4, 5, 3], ["tanh", "identity"], seed=6)
    X, Y = make_batch("bce", 8, 4, 3)
    eta, lam, gamma, w2 = 1e-3, 0.2, 0.05, 0.5
    _f0, *g = grad_fn(net, "bce", eta)(X, Y)
    factors = pt_kfgn.kronecker_factors(net, "bce", X, Y, "kfra")
    _, _, G, _, _ = brute_gn(net, "bce", X, Y)
    grad = flat_pairs(g)
    Ms = []
    gms = (gamma, (gamma + eta) * w2 - eta, (gamma + eta) / w2 - eta)  # current first; the grid acts on ε = γ + η
    for gm in gms:
        e, ds = gm + eta, []
        for i, (Q, Gf) in enumerate(factors):
            pi = np.sqrt((np.trace(Q) / len(Q)) / (np.trace(Gf) / len(Gf)))
            Qd, Gd = Q + pi * np.sqrt(e) * np.eye(len(Q)), Gf + np.sqrt(e) / pi * np.eye(len(Gf))
            gm_mat = np.vstack([g[2 * i], g[2 * i + 1][None]])
            ds.append(-np.linalg.solve(Qd, gm_mat) @ np.linalg.inv(Gd))
        d = np.concatenate([x.ravel() for x in ds])
        q = d @ (G + (lam + eta) * np.eye(len(d))) @ d
        Ms.append(-0.5 * (d @ grad) ** 2 / q)
    opt = KFGN(net, "bce", "kfra", eta=eta, lam=lam, gamma=gamma, omega2=w2, T2=1)
    s = opt.step(X, Y)
    best = int(np.argmin(Ms))
    assert s["gamma"] == pytest.approx(gms[best], rel=1e-12)
    assert s["model_change"] == pytest.approx(Ms[best], rel=1e-9)
