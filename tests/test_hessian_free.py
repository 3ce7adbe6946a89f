"""Hessian-free CG (Martens 2010) against exact solves and numpy CG."""


import numpy as np
import pytest
from conftest import make_batch
from reference import brute_gn, flat_pairs, grad_fn, spd

import pt_kfgn
from pt_kfgn.optim.cg import conjugate_gradient
from pt_kfgn.optim.hessian_free import HessianFree


# -- Hessian-free ---------------------------------------------------------------------------------
def test_conjugate_gradient_solves_spd_system():
    r = np.random.default_rng(2)
    A = spd(r, 12) + 0.1 * np.eye(12)
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
    _f0, *g = grad_fn(net, "softmax_ce", 1e-3)(X, Y)
    # HF's own flat order is [W1.ravel(), b1, W2.ravel(), b2] = per-layer vstack([W, b]).ravel()
    grad = flat_pairs(g)
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
