"""Graphs beyond the chain: residual sums, layers without bias, transposed weights (issue 27).

Every curvature quantity is checked against brute force on tiny float64 nets written directly in PyTensor:
exact blocks against the Jacobian of ``pytensor.grad`` (the Hessian) w.r.t. each layer's flat parameters, KFLR's ``G``
against Jacobians w.r.t. a zero *probe* added to each pre-activation (so the reference never uses the walker).
"""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import make_batch
from pytensor.gradient import jacobian

import pt_kfgn as pk

D_IN, D, D_OUT = 4, 3, 2


def _resnet(X, P, probes, kind):
    """The test graphs. ``P``: per layer ``(W, b)`` or ``(W,)``; ``probes``: a term added to each ``h`` or None.

    * "residual": ``a_{l+1} = f(h_l) + a_l`` (the ResNet pattern), a sigmoid block, a bias-less output layer;
    * "paths": a merge of three sources with a product (cross second derivatives), a skip from two layers back
      and a weight used transposed;
    * "linear": a residual net whose merges are linear (``a_{l+1} = h_l + ½ a_l``).
    """
    hs = []

    def dense(a, p, transposed=False):
        W = p[0].T if transposed else p[0]
        h = a @ W + p[1] if len(p) == 2 else a @ W
        h = h + probes[len(hs)] if probes is not None else h
        hs.append(h)
        return h

    if kind == "residual":
        a1 = pt.tanh(dense(X, P[0]))
        a2 = pt.tanh(dense(a1, P[1])) + a1
        a3 = pt.sigmoid(dense(a2, P[2])) + a2
        return dense(a3, P[3]), hs
    if kind == "paths":
        h1 = dense(X, P[0])
        a1 = pt.tanh(h1)
        h2 = dense(a1, P[1], transposed=True)
        a2 = pt.tanh(h2) * pt.sigmoid(h1) + a1  # sources h2, h1, a1
        a3 = pt.softplus(dense(a2, P[2])) + a1  # a skip over two layers
        return dense(a3, P[3]), hs
    a1 = dense(X, P[0])
    a2 = dense(a1, P[1]) + 0.5 * a1
    a3 = 2.0 * dense(a2, P[2]) + a2
    return dense(a3, P[3]), hs


SHAPES = {  # per layer: shapes of W (as stored) and b (None: no bias)
    "residual": [((D_IN, D), (D,)), ((D, D), (D,)), ((D, D), (D,)), ((D, D_OUT), None)],
    "paths": [((D_IN, D), (D,)), ((D, D), None), ((D, D), (D,)), ((D, D_OUT), (D_OUT,))],
    "linear": [((D_IN, D), (D,)), ((D, D), (D,)), ((D, D), None), ((D, D_OUT), (D_OUT,))],
}
TRANSPOSED = {"paths": 1}  # layer index whose weight is used as W.T


def _values(kind, seed=0):
    r = np.random.default_rng(seed)
    return [tuple(0.7 * r.standard_normal(s) for s in (w, b) if s is not None) for w, b in SHAPES[kind]]


def _net(kind, seed=0):
    values = _values(kind, seed)
    P = [tuple(pytensor.shared(v.copy(), name=f"{'Wb'[i]}{k + 1}") for i, v in enumerate(vals))
         for k, vals in enumerate(values)]
    X = pt.matrix("X", dtype="float64")
    out, _ = _resnet(X, P, None, kind)
    return pk.GraphNet(out, X), values


def _layout(kind, k, vals):
    """Layer ``k``'s parameters in factor layout ``vstack([W, b])`` (W transposed back if used as W.T)."""
    W = vals[0].T if TRANSPOSED.get(kind) == k else vals[0]
    return np.vstack([W, vals[1][None]]) if len(vals) == 2 else W


def _from_layout(kind, k, theta, vals):
    rows = _layout(kind, k, vals).shape
    M = theta.reshape(rows)
    W = M[:-1] if len(vals) == 2 else M
    W = W.T if TRANSPOSED.get(kind) == k else W
    return (W, M[-1]) if len(vals) == 2 else (W,)


def _output_hessians(loss, hL, Y):
    """Per-datapoint ``∂²E_n/∂h²`` by PyTensor's ``hessian`` of the loss's own per-datapoint value."""
    h, y = pt.vector("h", dtype="float64"), pt.vector("y", dtype="float64")
    E = pk.get_loss(loss).per_sample(h[None], y[None]).sum()
    f = pytensor.function([h, y], mode="FAST_COMPILE", outputs=jacobian(pt.grad(E, h), h, vectorize=True))
    return np.stack([f(a, b) for a, b in zip(hL, Y)])


def _brute(kind, loss, X, Y, seed=0):
    """(block Hessians, block GNs, KFLR G's) by brute force."""
    values = _values(kind, seed)
    Xs = pt.matrix("X", dtype="float64")
    Ys = pt.matrix("Y", dtype="float64")
    N = len(X)
    blocks_h, blocks_gn = [], []
    consts = [tuple(pt.constant(v) for v in vals) for vals in values]
    for k, vals in enumerate(values):
        theta = pt.vector("theta", dtype="float64")
        P = list(consts)
        P[k] = _from_layout(kind, k, theta, vals)
        out, _ = _resnet(Xs, P, None, kind)
        cost = pk.get_loss(loss).mean(out, Ys)
        t0 = _layout(kind, k, vals).ravel()
        H = jacobian(pt.grad(cost, theta), theta, vectorize=True)  # the Hessian, without a scan to compile
        f = pytensor.function([Xs, Ys, theta], [H, jacobian(out.ravel(), theta, vectorize=True), out],
                              mode="FAST_COMPILE")
        H, J, hL = f(X, Y, t0)
        Hout = _output_hessians(loss, hL, Y)
        J = J.reshape(N, hL.shape[1], -1)
        blocks_h.append(H)
        blocks_gn.append(np.mean([Jn.T @ Hn @ Jn for Jn, Hn in zip(J, Hout)], axis=0))
    probes = [pt.matrix(f"p{k}", dtype="float64") for k in range(len(values))]
    out, _ = _resnet(Xs, consts, probes, kind)
    zeros = [np.zeros((N, (w[1] if TRANSPOSED.get(kind) != k else w[0]))) for k, (w, _) in enumerate(SHAPES[kind])]
    Js = pytensor.function([Xs, *probes], [jacobian(out.ravel(), p, vectorize=True) for p in probes] + [out],
                           on_unused_input="ignore", mode="FAST_COMPILE")(X, *zeros)
    hL = Js[-1]
    Hout = _output_hessians(loss, hL, Y)
    Gs = []
    for J in Js[:-1]:
        J = J.reshape(N, hL.shape[1], N, -1)
        Jn = [J[n, :, n, :] for n in range(N)]  # datapoints are independent: the diagonal blocks
        Gs.append(np.mean([j.T @ H @ j for j, H in zip(Jn, Hout)], axis=0))
    return blocks_h, blocks_gn, Gs


@pytest.mark.parametrize(("kind", "loss"), [("residual", "mse"), ("paths", "bce")])
def test_exact_blocks_and_kflr_equal_brute_force_through_every_path(kind, loss):
    """Caught: a merge term dropped (the skip's contribution to ``S`` at a merge; the cross blocks of the
    frontier; the Hessian's cross second derivative ``∂²φ/∂h₂∂h₁``), each dropped once."""
    net, _ = _net(kind)
    X, Y = make_batch(loss, 5, D_IN, D_OUT, seed=1)
    blocks_h, blocks_gn, Gs = _brute(kind, loss, X, Y)
    for ours, ref in zip(pk.block_hessian(net, loss, X, Y), blocks_h):
        np.testing.assert_allclose(ours, ref, atol=1e-11, rtol=1e-8)
    for ours, ref in zip(pk.block_gauss_newton(net, loss, X, Y), blocks_gn):
        np.testing.assert_allclose(ours, ref, atol=1e-11, rtol=1e-8)
    for (Q, G), ref, layer in zip(pk.kronecker_factors(net, loss, X, Y, "kflr"), Gs, pk.layer_graph(net.output).layers):
        np.testing.assert_allclose(G, ref, atol=1e-12, rtol=1e-9)
        assert Q.shape[0] == (D if layer.W is not net.params[0][0] else D_IN) + layer.has_bias


def test_kfra_equals_kflr_on_a_linear_residual_net_with_squared_error():
    """With constant derivatives and a constant ``H_L`` eq. 26's averages are exact through merges too.

    Caught: the frontier's cross terms (``W Ḡ_{h,a}`` of a residual connection) dropped."""
    net, _ = _net("linear")
    X, Y = make_batch("mse", 7, D_IN, D_OUT, seed=2)
    kflr = pk.kronecker_factors(net, "mse", X, Y, "kflr")
    kfra = pk.kronecker_factors(net, "mse", X, Y, "kfra")
    _, _, Gs = _brute("linear", "mse", X, Y)
    for (Qa, Ga), (Qb, Gb), ref in zip(kflr, kfra, Gs):
        np.testing.assert_allclose(Qa, Qb, rtol=1e-12)
        np.testing.assert_allclose(Gb, Ga, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(Ga, ref, rtol=1e-10, atol=1e-12)


def test_kfra_through_a_merge_is_close_to_kflr_on_one_datapoint():
    """On one datapoint every expectation is the value itself, so KFRA is exact on any graph (eq. 26 with N = 1)."""
    net, _ = _net("paths")
    X, Y = make_batch("mse", 1, D_IN, D_OUT, seed=3)
    for (_, Ga), (_, Gb) in zip(pk.kronecker_factors(net, "mse", X, Y, "kflr"),
                                pk.kronecker_factors(net, "mse", X, Y, "kfra")):
        np.testing.assert_allclose(Gb, Ga, rtol=1e-10, atol=1e-12)


def test_the_walker_reads_the_residual_structure():
    net, _ = _net("paths")
    graph = pk.layer_graph(net.output)
    assert [layer.transposed for layer in graph.layers] == [False, True, False, False]
    assert [layer.has_bias for layer in graph.layers] == [True, False, True, True]
    assert not graph.is_chain and [len(m.sources) for m in graph.merges] == [1, 3, 2]
    assert net.layer_dims == [(D_IN, D), (D, D), (D, D), (D, D_OUT)]


@pytest.mark.parametrize(("kind", "method"), [("paths", "kflr"), ("paths", "kfra"), ("residual", "kfac")])
def test_kfgn_trains_a_residual_net_with_transposed_and_bias_less_layers(kind, method):
    """The optimiser steps (on the default backend), keeps each parameter's own shape and lowers the loss."""
    net, _ = _net(kind)
    X, Y = make_batch("bce", 32, D_IN, D_OUT, seed=4)
    opt = pk.KFGN(net, "bce", method, seed=0)
    start = opt.evaluate(X, Y)
    shapes = [tuple(v.shape for v in group) for group in net.get_params()]
    for _ in range(4):
        opt.step(X, Y)
    assert opt.evaluate(X, Y) < start
    assert [tuple(v.shape for v in group) for group in net.get_params()] == shapes


def test_the_symbolic_step_walks_a_residual_graph():
    net, _ = _net("residual")
    X, Y = make_batch("mse", 16, D_IN, D_OUT, seed=5)
    y = pt.matrix("y", dtype="float64")
    updates, info = pk.kfgn_updates(net.output, y, "mse", "kfra", lam=1.0, gamma=1.0)
    step = pytensor.function([net.X, y], info["loss"], updates=updates, mode="FAST_COMPILE")
    losses = [float(step(X, Y)) for _ in range(4)]
    assert losses[-1] < losses[0]


def test_a_residual_run_resumes_bit_identically_from_its_checkpoint(tmp_path):
    """Parameters of every shape (bias-less, transposed) go through the checkpoint and back: the resumed run
    starts from a net initialised differently, so only the checkpoint can make it match."""

    def run(steps, resume):
        net, _ = _net("paths", seed=1 if resume else 0)
        opt = pk.KFGN(net, "bce", "kfra", seed=0)
        X, Y = make_batch("bce", 64, D_IN, D_OUT, seed=6)
        pk.train(opt, X, Y, steps, batch_size=16, out_dir=tmp_path / "run", checkpoint_every=2, resume=resume,
                 progress=False, eval_every=2)
        return np.concatenate([v.ravel() for group in net.get_params() for v in group])

    full = run(6, resume=False)
    run(4, resume=False)
    np.testing.assert_array_equal(run(6, resume=True), full)
