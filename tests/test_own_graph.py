"""A user's own PyTensor net, written as a user would (plain ``pytensor.shared``, an input without static
shape, float32), on the library's default backend (JAX when installed) — not only under FAST_COMPILE."""
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

import pt_kfgn as pk


def _user_net(dtype="float32"):
    r = np.random.default_rng(0)

    def shared(*shape):
        return pytensor.shared((0.1 * r.standard_normal(shape)).astype(dtype))  # no shape=: lengths unknown

    W1, b1, W2, b2, W3, b3 = shared(20, 16), shared(16), shared(16, 8), shared(8), shared(8, 4), shared(4)
    x = pt.matrix("x", dtype=dtype)  # no static shape either
    return x, pt.tanh(pt.tanh(x @ W1 + b1) @ W2 + b2) @ W3 + b3, (W1, b1, W2, b2)


@pytest.mark.parametrize("method", ["kfra", "kfac", "kflr", "hf", "adam"])
def test_a_plain_user_net_trains_on_the_jax_backend(method):
    """Caught: without :func:`pt_kfgn.backend.static_shared_shapes`, every KFLR/KFRA/KFAC step failed with
    "JAX requires the arguments of jax.numpy.arange to be constants"."""
    pytest.importorskip("jax")
    x, h, _ = _user_net()
    net = pk.GraphNet(h, x)
    r = np.random.default_rng(1)
    X = r.random((32, 20)).astype("float32")
    Y = np.eye(4, dtype="float32")[r.integers(0, 4, 32)]
    opt = pk.make_optimizer(method, net, "softmax_ce", backend="jax")
    start = opt.evaluate(X, Y)
    for _ in range(3):
        s = opt.step(X, Y)
        assert s.get("accepted", True), s
    assert opt.evaluate(X, Y) < start
    assert all(isinstance(W, np.ndarray) and W.dtype == np.float32 for pair in net.get_params() for W in pair)


def test_a_python_float_that_upcasts_the_graph_is_named_when_the_net_is_wrapped():
    """Caught before: GraphNet accepted the float64 graph and the step failed later with "An update must have
    the same type as the original shared variable"."""
    x, _h, (W1, b1, W2, b2) = _user_net()
    with pytest.raises(TypeError, match=r"True_div makes float64 \(the constant 0.3 is float64\).*np.float32"):
        pk.GraphNet(pt.tanh(((x - 0.5) / 0.3) @ W1 + b1) @ W2 + b2, x)
    pk.GraphNet(pt.tanh(((x - 0.5) / np.float32(0.3)) @ W1 + b1) @ W2 + b2, x)  # the fix the message gives
