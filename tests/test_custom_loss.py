"""A user's own loss with structure (issue 27, item 3): a separable loss gets a diagonal ``H_L``; a convex one
needs no per-datapoint decomposition for KFRA and ``α*``."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import make_batch
from pytensor.graph.traversal import ancestors

import pt_kfgn as pk
from pt_kfgn.curvature.factors import kronecker_factors
from pt_kfgn.curvature.products import gn_quadratic_form
from pt_kfgn.graph.custom_loss import CustomLoss, separable


def huber(h, y, delta=1.0):
    r = pt.abs(h - y)
    return pt.switch(r < delta, 0.5 * r ** 2, delta * (r - 0.5 * delta)).sum(axis=1)


def huber_dense(h, y):
    """The same values, written so that the structure is not visible (``0 ·`` a function of the row's sum)."""
    return huber(h, y) + 0.0 * pt.sqr(h.sum(axis=1))


def test_separable_losses_are_recognised_and_others_are_not():
    h, y = pt.matrix("h"), pt.matrix("y")
    yes = [huber(h, y), ((h - y) ** 2).mean(axis=1), 3.0 * (pt.log1p(pt.exp(h)) - y * h).sum(axis=1) + y.sum(axis=1),
           pt.log(pt.cosh(h - y)).sum(axis=-1) / 2.0]
    no = [huber_dense(h, y), -(y * pt.special.log_softmax(h, axis=1)).sum(axis=1), pt.sqr((h - y).sum(axis=1)),
          ((h - h.mean(axis=0)) ** 2).sum(axis=1), pt.exp(huber(h, y))]
    assert all(separable(E, h) for E in yes)
    assert not any(separable(E, h) for E in no)


def test_a_separable_loss_equals_its_dense_form_and_builds_no_dense_hessian():
    """KFLR, KFRA, the exact blocks and α*'s quadratic form agree with the dense path (to 1e-12); KFRA's factors
    and the quadratic form of the separable path hold no (N, d, d) tensor.

    Caught: the structure detection switched off (the graphs then hold (N, d, d) tensors)."""
    net = pk.mlp([4, 5, 3], ["tanh", "identity"], seed=2)
    X, Y = make_batch("mse", 7, 4, 3, seed=1)
    Y = Y * 2  # some residuals beyond δ = 1: both branches of the Huber loss
    fast, dense = CustomLoss(huber, name="huber"), CustomLoss(huber_dense, name="huber_dense")
    for method in ("kflr", "kfra"):
        for (Qa, Ga), (Qb, Gb) in zip(pk.kronecker_factors(net, fast, X, Y, method),
                                      pk.kronecker_factors(net, dense, X, Y, method)):
            np.testing.assert_allclose(Ga, Gb, rtol=1e-12, atol=1e-14)
    for a, b in zip(pk.block_hessian(net, fast, X, Y), pk.block_hessian(net, dense, X, Y)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    graph = pk.layer_graph(net.output)
    y = pt.matrix("y", dtype="float64")
    vs = [p.type() for p in graph.params]
    symbolic = {}
    for name, loss in (("fast", fast), ("dense", dense)):
        symbolic[name] = [G for _, G in kronecker_factors(graph, loss, y, "kfra")] + [
            gn_quadratic_form(graph, loss, y, graph.params, vs)]
        three_d = [v for v in ancestors(symbolic[name]) if getattr(v, "ndim", 0) == 3]
        assert bool(three_d) == (name == "dense")
    r = np.random.default_rng(3)
    v_vals = [r.standard_normal(p.get_value().shape) for p in graph.params]
    f = {k: pytensor.function([net.X, y, *vs], outs, on_unused_input="ignore", mode="FAST_COMPILE")
         for k, outs in symbolic.items()}
    for a, b in zip(f["fast"](X, Y, *v_vals), f["dense"](X, Y, *v_vals)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_convex_loss_gives_the_builtin_curvature_matrix_free():
    """``convex=True`` on a hand-written softmax cross-entropy (not separable): KFRA's ``E[H_L]`` and α*'s quadratic
    form equal the built-in loss's, with no eigendecomposition in either graph.

    Caught: the shift Jacobian evaluated at ``c = (1, 2, 3)`` instead of 0 (E[H_L] off by up to 87 %; ``c = 1`` is
    not caught, softmax being invariant to it), and the forward-mode product halved."""
    net = pk.mlp([4, 5, 3], ["tanh", "identity"], seed=2)
    X, Y = make_batch("softmax_ce", 7, 4, 3, seed=1)
    user = CustomLoss(lambda h, y: -(y * pt.special.log_softmax(h, axis=1)).sum(axis=1), name="ce", convex=True)
    graph = pk.layer_graph(net.output)
    y = pt.matrix("y", dtype="float64")
    vs = [p.type() for p in graph.params]
    outs = {}
    for name, loss in (("builtin", pk.get_loss("softmax_ce")), ("user", user)):
        outs[name] = [G for _, G in kronecker_factors(graph, loss, y, "kfra")] + [
            gn_quadratic_form(graph, loss, y, graph.params, vs)]
    assert not any("Eigh" in str(getattr(v.owner, "op", "")) for v in ancestors(outs["user"]))
    r = np.random.default_rng(3)
    v_vals = [r.standard_normal(p.get_value().shape) for p in graph.params]
    res = {k: pytensor.function([net.X, y, *vs], o, on_unused_input="ignore", mode="FAST_COMPILE")(X, Y, *v_vals)
           for k, o in outs.items()}
    for a, b in zip(res["builtin"], res["user"]):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", ["jax", "numba"])
def test_a_huber_step_trains_on_the_default_backends(backend):
    if backend == "jax":
        pytest.importorskip("jax")
    net = pk.mlp([6, 8, 6], ["tanh", "identity"], seed=0, dtype="float32")
    X = np.random.default_rng(0).random((32, 6), dtype=np.float32)
    opt = pk.KFGN(net, CustomLoss(lambda h, y: huber(h, y, np.float32(1.0)), name="huber"), "kfra",
                  backend=backend)
    start = opt.evaluate(X, X)
    for _ in range(3):
        opt.step(X, X)
    assert opt.evaluate(X, X) < start
