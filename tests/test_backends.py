"""The same step compiled by the real backends agrees with the reference mode (Numba, C, JAX if installed)."""

import importlib.util

import numpy as np
import pytest
from conftest import make_batch

import pt_kfgn
from pt_kfgn.optim.kfgn import KFGN

BACKENDS = ["numba", "c"] + (["jax"] if importlib.util.find_spec("jax") else [])


@pytest.fixture(scope="module")
def reference_run():
    return _run("fast")


def _run(backend, method="kfra"):
    net = pt_kfgn.mlp([5, 4, 3], ["tanh", "identity"], seed=1)
    X, Y = make_batch("bce", 16, 5, 3)
    opt = KFGN(net, "bce", method, T2=2, backend=backend)
    stats = [opt.step(X, Y) for _ in range(2)]  # the second step runs the γ search
    return net.get_params(), stats


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference(reference_run, backend):
    params, stats = _run(backend)
    ref_params, ref_stats = reference_run
    for (W, b), (Wr, br) in zip(params, ref_params):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, br, rtol=1e-9, atol=1e-12)
    for s, r in zip(stats, ref_stats):
        assert s["alpha"] == pytest.approx(r["alpha"], rel=1e-9) and s["gamma"] == pytest.approx(r["gamma"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_kfac_draws_the_same_samples_on_every_backend(backend):
    """KFAC's noise comes from the host's Generator, so its steps agree across backends like KFRA's."""
    params, stats = _run(backend, "kfac")
    ref_params, ref_stats = _run("fast", "kfac")
    for (W, b), (Wr, br) in zip(params, ref_params):
        np.testing.assert_allclose(W, Wr, rtol=1e-9, atol=1e-12)
    assert [s["alpha"] for s in stats] == pytest.approx([r["alpha"] for r in ref_stats], rel=1e-9)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend="):
        KFGN(pt_kfgn.mlp([2, 1], ["identity"]), "mse", backend="cuda")


@pytest.mark.parametrize("backend", BACKENDS)
def test_kflr_with_the_mixture_loss_compiles_on_every_backend(backend):
    """The one-output mixture's KFLR once reshaped by the batch size, which JAX cannot trace."""
    net = pt_kfgn.classifier(6, 1, widths=(5, 4), dtype="float64", seed=0)
    X, Y = make_batch("mixture", 8, 6, 1)
    ref = pt_kfgn.kronecker_factors(net, "mixture", X, Y, "kflr")
    opt = KFGN(net, "mixture", "kflr", backend=backend, T1=1)
    theta = [p.get_value() for p in net.flat_params]
    s = opt.step(X, Y)
    assert s["accepted"]
    for p, v in zip(net.flat_params, theta):
        p.set_value(v)
    ref_step = KFGN(net, "mixture", "kflr", backend="fast", T1=1).step(X, Y)
    assert s["alpha"] == pytest.approx(ref_step["alpha"], rel=1e-9) and len(ref) == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_checkpoint_of_every_backend_round_trips(tmp_path, backend):
    """The backends keep state in their own array types (JAX: jax.Array): checkpoints store them as numpy."""
    from pt_kfgn import checkpoint

    net = pt_kfgn.mlp([5, 4, 3], ["tanh", "identity"], seed=1)
    X, Y = make_batch("bce", 16, 5, 3)
    opt = KFGN(net, "bce", "kfac", backend=backend)
    opt.step(X, Y)
    checkpoint.save(tmp_path / "c.npz", opt.state_dict())
    other = KFGN(pt_kfgn.mlp([5, 4, 3], ["tanh", "identity"], seed=2), "bce", "kfac", backend=backend)
    other.load_state_dict(checkpoint.load(tmp_path / "c.npz"))
    for p, q in zip(net.flat_params, other.net.flat_params):
        np.testing.assert_array_equal(np.asarray(p.get_value()), np.asarray(q.get_value()))
    for _ in range(3):  # KFAC's sampler state travels too: the continued runs are identical
        opt.step(X, Y)
        other.step(X, Y)
    for p, q in zip(net.flat_params, other.net.flat_params):
        np.testing.assert_array_equal(np.asarray(p.get_value()), np.asarray(q.get_value()))
