"""Optimiser features, each against an independent reference (Appendix B, Martens 2010, baselines)."""

import math

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import make_batch
from reference import brute_gn

import pt_kfgn
from pt_kfgn.backend import compile_function
from pt_kfgn.graph.losses import SquaredError
from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim.cg import conjugate_gradient
from pt_kfgn.optim.damping import damped_inverses, exact_kron_solve, inverse_kron_apply, kron_solve
from pt_kfgn.optim.first_order import FirstOrder, halving_schedule
from pt_kfgn.optim.hessian_free import HessianFree
from pt_kfgn.optim.kfgn import KFGN


def _flat(net):
    return np.concatenate([np.vstack([W, b[None]]).ravel() for W, b in net.get_params()])


def _grad_fn(net, loss, eta=0.0):
    y = pt.matrix("Y")
    L = pt_kfgn.get_loss(loss)
    f = L.mean(net.output, y) + 0.5 * eta * sum(pt.sqr(p).sum() for p in net.flat_params)
    return compile_function([net.X, y], [f, *pt.grad(f, net.flat_params)])


def _flat_pairs(arrs):
    return np.concatenate([np.vstack([arrs[i], arrs[i + 1][None]]).ravel() for i in range(0, len(arrs), 2)])


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
    theta0 = _flat(net)
    _f0, *g = _grad_fn(net, "bce", eta)(X, Y)
    grad = _flat_pairs(g)
    _, _, G, _, _ = brute_gn(net, "bce", X, Y)
    opt = KFGN(net, "bce", "kfra", eta=eta, lam=lam, gamma=0.3, gamma_search=False)
    s = opt.step(X, Y)
    step = _flat(net) - theta0
    delta = step / s["alpha"]
    C = G + (lam + eta) * np.eye(len(delta))
    alpha_ref = -(delta @ grad) / (delta @ C @ delta)
    np.testing.assert_allclose(s["alpha"], alpha_ref, rtol=1e-9)
    np.testing.assert_allclose(s["model_change"], 0.5 * alpha_ref * (delta @ grad), rtol=1e-9)


# -- factored Tikhonov damping ------------------------------------------------------------------------
def _spd(r, n):
    A = r.standard_normal((n, n + 2))
    return A @ A.T / n


def test_factored_tikhonov_solve_equals_dense_kron_solve():
    r = np.random.default_rng(5)
    Q, G, grad, eps = _spd(r, 4), _spd(r, 3), r.standard_normal((4, 3)), 0.37
    q, g, m, e = pt.matrix(), pt.matrix(), pt.matrix(), pt.scalar()
    f = compile_function([q, g, m, e], [kron_solve(q, g, m, e), exact_kron_solve(q, g, m, e)])
    ours, exact = f(Q, G, grad, eps)
    pi = np.sqrt((np.trace(Q) / 4) / (np.trace(G) / 3))
    s = np.sqrt(eps)
    ref = np.linalg.solve(np.kron(Q + pi * s * np.eye(4), G + s / pi * np.eye(3)), grad.ravel())
    np.testing.assert_allclose(ours.ravel(), ref, rtol=1e-10)
    ref_exact = np.linalg.solve(np.kron(Q, G) + eps * np.eye(12), grad.ravel())
    np.testing.assert_allclose(exact.ravel(), ref_exact, rtol=1e-10)


@pytest.mark.parametrize("backend", ["numba", "jax", "c"])
def test_explicit_damped_inverses_match_the_cholesky_solve(backend):
    """Amortised inverses [ours] cache ``(Q_d⁻¹, G_d⁻¹)`` and apply them by GEMMs: the same direction as the
    Cholesky solve, each inverse exactly symmetric and NaN when the factorisation fails.

    Caught: the Gram of ``L⁻¹`` taken the other way round (``L⁻¹ L⁻ᵀ``) and a factor's inverse left out."""
    if backend == "jax":
        pytest.importorskip("jax")
    dtype, tol = "float64", 1e-10  # JAX too: a float64 graph switches its x64 mode on
    r = np.random.default_rng(6)
    Q, G, grad, eps = _spd(r, 5), _spd(r, 3), r.standard_normal((5, 3)), 0.37
    # static shapes: JAX traces ``arange`` and ``eye`` only with constant sizes (the optimiser's caches have them)
    q, g, m = (pt.tensor(dtype=dtype, shape=sh) for sh in ((5, 5), (3, 3), (5, 3)))
    e = pt.scalar(dtype=dtype)
    Qi, Gi = damped_inverses(q, g, e)
    f = compile_function([q, g, m, e], [Qi, Gi, inverse_kron_apply(Qi, Gi, m), kron_solve(q, g, m, e)],
                         backend=backend)
    qi, gi, applied, solved = f(*(np.asarray(a, dtype) for a in (Q, G, grad, eps)))
    pi = np.sqrt((np.trace(Q) / 5) / (np.trace(G) / 3))
    s = np.sqrt(eps)
    np.testing.assert_allclose(qi, np.linalg.inv(Q + pi * s * np.eye(5)), rtol=tol)
    np.testing.assert_allclose(gi, np.linalg.inv(G + s / pi * np.eye(3)), rtol=tol)
    assert np.array_equal(qi, qi.T) and np.array_equal(gi, gi.T)
    np.testing.assert_allclose(applied, solved, rtol=tol)
    bad = f(*(np.asarray(a, dtype) for a in (-np.eye(5), np.eye(3), np.ones((5, 3)), 0.1)))
    assert np.isnan(bad[0]).any() and np.isnan(bad[2]).any()


def test_failed_cholesky_gives_nan_not_an_exception():
    q, g, m, e = pt.matrix(), pt.matrix(), pt.matrix(), pt.scalar()
    f = compile_function([q, g, m, e], kron_solve(q, g, m, e))
    Q = -np.eye(3)  # negative trace: damped factor is not positive definite
    out = f(Q, np.eye(2), np.ones((3, 2)), 0.1)
    assert not np.all(np.isfinite(out))


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
    cands = [([pt.constant(float(i))], QuadraticModel(ms[i], ms[i], ms[i], ms[i], ms[i])) for i in range(3)]
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
    _f0, *g = _grad_fn(net, "bce", eta)(X, Y)
    factors = pt_kfgn.kronecker_factors(net, "bce", X, Y, "kfra")
    _, _, G, _, _ = brute_gn(net, "bce", X, Y)
    grad = _flat_pairs(g)
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


# -- Hessian-free ---------------------------------------------------------------------------------
def test_conjugate_gradient_solves_spd_system():
    r = np.random.default_rng(2)
    A = _spd(r, 12) + 0.1 * np.eye(12)
    b = r.standard_normal(12)
    x, saved = conjugate_gradient(lambda v: A @ v, b, np.zeros(12), max_iters=200, tol=1e-14)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-6)
    assert [i for i, _ in saved][:4] == [1, 2, 3, 4]


@pytest.mark.parametrize("block", [False, True])
def test_hf_cg_equals_exact_damped_solve(block):
    net = pt_kfgn.mlp([4, 5, 3], ["tanh", "identity"], seed=7)
    X, Y = make_batch("softmax_ce", 8, 4, 3)
    hf = HessianFree(net, "softmax_ce", lam=0.5, eta=1e-3, block_diagonal=block)
    _, _, G, _, _ = brute_gn(net, "softmax_ce", X, Y)
    _f0, *g = _grad_fn(net, "softmax_ce", 1e-3)(X, Y)
    # HF's own flat order is [W1.ravel(), b1, W2.ravel(), b2] = per-layer vstack([W, b]).ravel()
    grad = _flat_pairs(g)
    delta, _ = hf.operator.solve(X, Y, grad, 0.5 + 1e-3, np.zeros_like(grad), max_iters=200, block_diagonal=block)
    C = G + (0.5 + 1e-3) * np.eye(len(grad))
    if block:
        sizes = [(4 + 1) * 5, (5 + 1) * 3]
        C = np.block([[C[:sizes[0], :sizes[0]], np.zeros((sizes[0], sizes[1]))],
                      [np.zeros((sizes[1], sizes[0])), C[sizes[0]:, sizes[0]:]]])
    np.testing.assert_allclose(delta, np.linalg.solve(C, -grad), rtol=1e-5, atol=1e-9)


def test_hf_products_reuse_the_forward_pass():
    """The GN product and the gradient squares take the pre-activations of one linearisation: their graphs hold
    no forward product (GN product: 2L − 1 forward-mode and 2L − 1 reverse-mode products for L layers), and the
    product equals the brute-force GN matrix times v.

    Caught: the products built without the pre-activations as inputs (the forward recomputed: 4L − 2 + L)."""
    net = pt_kfgn.mlp([4, 5, 6, 3], ["tanh", "tanh", "identity"], seed=3)
    X, Y = make_batch("softmax_ce", 9, 4, 3)
    op = HessianFree(net, "softmax_ce").operator
    dots = lambda fn: sum("Dot" in str(n.op) or "Gemm" in str(n.op) or "Gemv" in str(n.op)
                          for n in fn.maker.fgraph.apply_nodes)
    L = 3
    assert dots(op._gv_fn) == 4 * L - 2
    assert dots(op._sq_fn) == 2 * L - 1  # the per-sample backward (L − 1) and one product per layer (L)
    v = np.random.default_rng(4).standard_normal(sum(op.sizes))
    _, _, G, _, _ = brute_gn(net, "softmax_ce", X, Y)
    np.testing.assert_allclose(op.product(X, Y, v, op.linearise(X, Y)), G @ v, rtol=1e-10, atol=1e-12)


def test_hf_cg_on_the_backend_equals_numpy_cg_iterate_for_iterate():
    """The whole-network CG (one compiled call per iteration) against :func:`conjugate_gradient` on the same
    preconditioned system, warm start and bookkeeping (float64): the same saved iterates.

    Caught: the preconditioner dropped from the compiled iteration, and the warm start's residual taken as b."""
    net = pt_kfgn.mlp([4, 5, 3], ["tanh", "identity"], seed=7)
    X, Y = make_batch("softmax_ce", 8, 4, 3)
    op = HessianFree(net, "softmax_ce", eta=1e-3).operator
    r = np.random.default_rng(5)
    lin = op.linearise(X, Y)
    grad, x0, M = op.flat(lin.grads), r.standard_normal(sum(op.sizes)), r.uniform(0.5, 2.0, sum(op.sizes))
    kw = {"max_iters": 12, "tol": 0.0, "precondition": M}
    x, saved = op.solve(X, Y, grad, 0.3, x0, lin=lin, **kw)
    _, saved_ref = conjugate_gradient(lambda v: op.product(X, Y, v, lin) + 0.3 * v, -grad, x0, **kw)
    assert [i for i, _ in saved] == [i for i, _ in saved_ref] and saved[-1][0] == 12
    for (_, a), (_, b) in zip(saved, saved_ref):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    assert x is saved[-1][1] and x.dtype == np.float64


def test_hf_step_decreases_the_loss_and_adapts_lambda():
    net = pt_kfgn.mlp([4, 6, 3], ["tanh", "identity"], seed=8)
    X, Y = make_batch("softmax_ce", 30, 4, 3)
    hf = HessianFree(net, "softmax_ce", max_iters=50)
    losses = [hf.step(X, Y)["loss"] for _ in range(5)]
    assert losses[-1] < losses[0] and hf.lam != 45.0


def _badly_scaled():
    r = np.random.default_rng(3)
    X = r.standard_normal((60, 6)) * np.logspace(-1.5, 1.5, 6)
    return pt_kfgn.mlp([6, 4, 3], ["identity", "identity"], seed=2), X, make_batch("softmax_ce", 60, 6, 3)[1]


def test_martens_preconditioner_reduces_cg_iterations():
    """Iterations to reach ‖r‖ ≤ 1e-6 ‖b‖ on a badly scaled 30-4-1 tanh net (input scales 0.1…10):
    (diag Σgₙ²/N + λ)^¾ against none.  Measured: 95 against 331.

    Caught: the preconditioner's diagonal replaced by ones (the count of the unpreconditioned solve)."""
    r = np.random.default_rng(3)
    X = r.standard_normal((400, 30)) * np.logspace(-1, 1, 30)
    Y = r.standard_normal((400, 1))
    hf = HessianFree(pt_kfgn.mlp([30, 4, 1], ["tanh", "identity"], seed=2), "mse", lam=1e-4)
    _, _, grad = hf.operator.gradient(X, Y)
    counts = {}
    for on in (False, True):
        hf.precondition = on
        _, saved = hf.operator.solve(X, Y, grad, 1e-4, np.zeros_like(grad), max_iters=3000,
                                     precondition=hf.preconditioner(X, Y, 1e-4), rtol=1e-6, tol=0.0)
        counts[on] = saved[-1][0]
    assert counts[True] < 0.5 * counts[False], counts


def test_martens_gradient_squares_are_per_datapoint():
    """``(1/N) Σₙ (∂Eₙ/∂θ)²`` against per-datapoint gradients computed one at a time."""
    net, X, Y = _badly_scaled()
    op = HessianFree(net, "softmax_ce", eta=0.0).operator
    per = np.stack([op.gradient(X[n:n + 1], Y[n:n + 1])[2] for n in range(len(X))])
    np.testing.assert_allclose(op.gradient_squares(X, Y), (per ** 2).mean(0), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("block", [False, True])
def test_hf_rho_is_of_the_backtracked_iterate_and_warm_start_is_the_last_iterate(block, monkeypatch):
    """ρ from the CG-backtracked iterate before the line search; x_prev = the last CG iterate."""
    net, X, Y = _badly_scaled()
    hf = HessianFree(net, "softmax_ce", lam=1.0, max_iters=30, block_diagonal=block)
    seen = {}
    solve = hf.operator.solve

    def spy(*a, **k):
        seen["out"] = solve(*a, **k)
        return seen["out"]

    monkeypatch.setattr(hf.operator, "solve", spy)
    op = hf.operator
    theta = op.flat([p.get_value() for p in hf.params])
    _, f0, grad = op.gradient(X, Y)
    s = hf.step(X, Y)
    delta, saved = seen["out"]
    assert len(saved) > 2 and np.array_equal(saved[-1][1], delta) and np.array_equal(hf.x_prev, delta)
    for p, v in zip(hf.params, op.split(theta)):
        p.set_value(v)
    f = lambda v: (hf._set(theta + v), op.objective(X, Y))[1]
    best, fb = delta, f(delta)
    for _, c in reversed(saved[:-1]):
        if not f(c) < fb:
            break
        best, fb = c, f(c)
    hf._set(theta)
    model = grad @ best + 0.5 * best @ (op.product(X, Y, best) + hf.eta * best)
    assert s["rho"] == pytest.approx((fb - f0) / model, rel=1e-9)


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
