"""The graph walker: user graphs, rejected structures, and bad input."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from conftest import make_batch

import pt_kfgn
from pt_kfgn.graph.walk import UnsupportedGraphError, graph_from_loss, layer_graph


def _user_graph():
    r = np.random.default_rng(0)
    W1 = pytensor.shared(r.standard_normal((4, 3)), name="W1")
    b1 = pytensor.shared(np.zeros(3), name="b1")
    W2 = pytensor.shared(r.standard_normal((3, 2)), name="W2")
    b2 = pytensor.shared(np.zeros(2), name="b2")
    X = pt.matrix("X")
    h1 = b1 + X @ W1  # bias first, `@`: both spellings are recognised
    h2 = pt.dot(pt.tanh(h1), W2) + b2
    return X, (W1, b1, W2, b2), h2


def test_user_graph_gives_the_same_layers_as_the_builder():
    X, (W1, b1, W2, b2), h2 = _user_graph()
    chain = layer_graph(h2)
    assert [(l.W, l.b) for l in chain.layers] == [(W1, b1), (W2, b2)]
    assert chain.input is X and chain.is_chain and [m.sources for m in chain.merges] == [(chain.layers[0].h,)]
    net = pt_kfgn.mlp([4, 3, 2], ["tanh", "identity"])
    built = layer_graph(net.output)
    assert [(l.W, l.b) for l in built.layers] == net.params
    loss = pt_kfgn.get_loss("mse").mean(h2, pt.matrix("Y"))
    assert graph_from_loss(loss, W2).layers[0].W is W1


def test_transfer_derivatives_from_the_graph():
    _X, _, h2 = _user_graph()
    graph = layer_graph(h2)
    (merge,) = graph.merges
    (d1,), d2 = graph.partials(merge, second=True)
    f = pytensor.function([graph.layers[0].h], [d1, d2[(0, 0)]], mode="FAST_COMPILE")
    h = np.linspace(-2, 2, 6)[None]
    a, b = f(h)
    np.testing.assert_allclose(a, 1 - np.tanh(h) ** 2, rtol=1e-12)
    np.testing.assert_allclose(b, -2 * np.tanh(h) * (1 - np.tanh(h) ** 2), rtol=1e-12)


def test_non_elementwise_op_between_layers_is_rejected_by_name():
    r = np.random.default_rng(0)
    W1, W2 = (pytensor.shared(r.standard_normal(s)) for s in [(4, 3), (3, 2)])
    b1, b2 = pytensor.shared(np.zeros(3)), pytensor.shared(np.zeros(2))
    X = pt.matrix("X")
    a = pt.special.softmax(X @ W1 + b1, axis=1)
    with pytest.raises(UnsupportedGraphError, match="Softmax"):
        layer_graph(a @ W2 + b2)


def test_weight_sharing_a_second_input_and_an_output_nonlinearity_are_rejected():
    r = np.random.default_rng(0)
    W1 = pytensor.shared(r.standard_normal((3, 3)), name="W1")
    b1, b2 = pytensor.shared(np.zeros(3), name="b1"), pytensor.shared(np.zeros(3), name="b2")
    X, Z = pt.matrix("X"), pt.matrix("Z")
    h1 = X @ W1 + b1
    with pytest.raises(UnsupportedGraphError, match="weight sharing"):
        layer_graph(pt.tanh(h1) @ W1 + b2)
    with pytest.raises(UnsupportedGraphError, match="weight sharing .tied"):
        layer_graph(pt.tanh(h1) @ W1.T + b2)
    with pytest.raises(UnsupportedGraphError, match="exactly one input"):
        layer_graph((pt.tanh(h1) + Z) @ pytensor.shared(np.ones((3, 3))) + b2)
    with pytest.raises(UnsupportedGraphError, match="not a dense layer"):
        layer_graph(pt.tanh(h1))
    W2 = pytensor.shared(np.ones((3, 3)), name="W2")
    with pytest.raises(UnsupportedGraphError, match="sum of several dense layers"):
        layer_graph(pt.tanh(h1) @ W2 + X @ pytensor.shared(np.ones((3, 3))) + b2)
    assert len(layer_graph(pt.tanh(h1 + X @ W2) @ pytensor.shared(np.ones((3, 3))) + b2).layers) == 3
    with pytest.raises(UnsupportedGraphError, match="input X is used as the weight"):
        layer_graph(pt.tanh(h1) @ X.T @ pytensor.shared(np.ones((3, 3))) + b2)
    with pytest.raises(UnsupportedGraphError, match="Join.*supported: dense layers"):
        layer_graph(pt.concatenate([pt.tanh(h1), X], axis=1) @ pytensor.shared(np.ones((6, 3))) + b2)


def test_the_batch_check_finds_every_non_finite_entry_and_copies_nothing():
    """``check_batch`` / ``check_data``: a NaN or inf anywhere is an error, finite entries whose sum overflows are
    not, and a batch already in the net's dtype is passed on without a copy (the check runs on every step).

    Caught: the one-pass sum alone (it rejects the overflowing finite batch), and the copy of the old
    ``X.astype(dtype)`` (the result is then not the caller's array)."""
    from pt_kfgn.graph.layers import all_finite, check_batch, check_data

    big = np.full((3, 4), 3e38, np.float32)  # finite; its sum overflows float32
    assert all_finite(big) and check_batch(big, 4, "float32") is big
    for bad in (np.nan, np.inf, -np.inf):
        X = big.copy()
        X[2, 1] = bad
        assert not all_finite(X)
        with pytest.raises(ValueError, match="NaN or inf"):
            check_batch(X, 4, "float32")
    net = pt_kfgn.mlp([4, 3, 2], ["tanh", "identity"], dtype="float32")
    X, Y = np.zeros((5, 4), np.float32), np.full((5, 2), 0.5, np.float32)
    Xc, Yc = check_data(net, pt_kfgn.get_loss("bce"), X, Y)
    assert Xc is X and Yc is Y
    Xc, Yc = check_data(net, pt_kfgn.get_loss("bce"), X.astype(np.float64), (Y > 0).astype(np.int64))
    assert Xc.dtype == Yc.dtype == np.float32 and np.all(Yc == 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_data(net, pt_kfgn.get_loss("bce"), X, np.where(Y > 0, np.inf, Y))


def test_bad_input_gives_clear_errors():
    net = pt_kfgn.mlp([4, 3, 2], ["tanh", "identity"])
    X, Y = np.zeros((5, 4)), np.full((5, 2), 0.5)
    with pytest.raises(ValueError, match="do not match the network input"):
        pt_kfgn.kronecker_factors(net, "bce", np.zeros((5, 3)), Y, "kfra")
    with pytest.raises(ValueError, match="NaN or inf"):
        pt_kfgn.kronecker_factors(net, "bce", np.where(X == 0, np.nan, X), Y, "kfra")
    with pytest.raises(ValueError, match="targets of shape"):
        pt_kfgn.kronecker_factors(net, "bce", X, Y[:4], "kfra")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pt_kfgn.kronecker_factors(net, "bce", X, Y + 1, "kfra")
    with pytest.raises(ValueError, match="method="):
        pt_kfgn.kronecker_factors(net, "bce", X, Y, "newton")
    with pytest.raises(ValueError, match="loss="):
        pt_kfgn.kronecker_factors(net, "hinge", X, Y, "kfra")
    with pytest.raises(ValueError, match="one output"):
        pt_kfgn.kronecker_factors(net, "mixture", X, Y, "kfra")
    with pytest.raises(ValueError, match="one activation per layer"):
        pt_kfgn.mlp([4, 3, 2], ["tanh"])
    with pytest.raises(ValueError, match="activation="):
        pt_kfgn.mlp([4, 3, 2], ["swish", "identity"])
    with pytest.raises(ValueError, match="expected W"):
        net.set_params([(np.zeros((3, 4)), np.zeros(3)), (np.zeros((3, 2)), np.zeros(2))])


def test_optimiser_on_a_user_graph_matches_the_builder():
    from pt_kfgn.graph.layers import GraphNet
    from pt_kfgn.optim.kfgn import KFGN

    net = pt_kfgn.mlp([4, 3, 2], ["tanh", "identity"], seed=0)
    W1, b1, W2, b2 = (pytensor.shared(v.copy(), name=n)
                      for v, n in zip([p.get_value() for p in net.flat_params], ["W1", "b1", "W2", "b2"]))
    X = pt.matrix("X")
    user = GraphNet(pt.tanh(X @ W1 + b1) @ W2 + b2, X)
    assert user.sizes == [4, 3, 2]
    Xv = np.random.default_rng(0).standard_normal((9, 4))
    Yv = np.random.default_rng(1).random((9, 2))
    for n in (net, user):
        KFGN(n, "bce", "kfra", T2=1).step(Xv, Yv)
    for (Wa, ba), (Wb, bb) in zip(net.get_params(), user.get_params()):
        np.testing.assert_allclose(Wa, Wb, rtol=1e-12)
        np.testing.assert_allclose(ba, bb, rtol=1e-12)
    with pytest.raises(ValueError, match="input"):
        GraphNet(user.output, pt.matrix("other"))


def test_equal_subgraphs_are_merged_before_the_walk():
    """A relu written ``switch(h > 0, h, 0)`` with ``h`` built twice walks like the builder's relu."""
    net = pt_kfgn.mlp([4, 3, 2], ["relu", "identity"], seed=0)
    W1, b1, W2, b2 = net.flat_params
    X = net.X
    user = pt.dot(pt.switch(pt.dot(X, W1) + b1 > 0, pt.dot(X, W1) + b1, 0), W2) + b2
    from pt_kfgn.graph.layers import GraphNet

    g = GraphNet(user, X)
    Xv, Yv = make_batch("mse", 7, 4, 2)
    for a, b in zip(pt_kfgn.kronecker_factors(net, "mse", Xv, Yv, "kflr"),
                    pt_kfgn.kronecker_factors(g, "mse", Xv, Yv, "kflr")):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-12)


def test_a_parameter_inside_a_transfer_function_is_named():
    r = np.random.default_rng(0)
    W1, W2 = pytensor.shared(r.standard_normal((4, 3)), name="W1"), pytensor.shared(r.standard_normal((3, 2)))
    b1, b2 = pytensor.shared(np.zeros(3), name="b1"), pytensor.shared(np.zeros(2), name="b2")
    slope = pytensor.shared(0.1, name="prelu_slope")
    X = pt.matrix("X")
    h = X @ W1 + b1
    with pytest.raises(UnsupportedGraphError, match="parameter .*prelu_slope.* inside a transfer function"):
        layer_graph(pt.switch(h > 0, h, slope * h) @ W2 + b2)
    with pytest.raises(UnsupportedGraphError, match="Cumsum.*supported: dense layers"):
        layer_graph(pt.tanh(h).cumsum(axis=1) @ W2 + b2)


@pytest.mark.parametrize("squash", [pt.special.softmax, pt.sigmoid])
def test_an_output_nonlinearity_says_pass_the_logits(squash):
    """Caught before: "the output is not a dense layer … op Softmax" without saying what to do."""
    net = pt_kfgn.mlp([4, 3, 2], ["tanh", "identity"], seed=0)
    h = squash(net.output, axis=-1) if squash is pt.special.softmax else squash(net.output)
    with pytest.raises(UnsupportedGraphError, match="Pass the logits"):
        layer_graph(h)
