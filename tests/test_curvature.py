"""Curvature identities against brute force on tiny float64 nets (eq. 7-8, 12-26, App. C, E)."""

import numpy as np
import pytest
from conftest import make_batch
from reference import brute_block_hessian, brute_gn, mixture_fisher, mixture_gn_hessian

import pt_kfgn
from pt_kfgn.graph.losses import Mixture

NETS = {
    "smooth": ([4, 5, 3], ["sigmoid", "tanh"]),
    "softplus_relu": ([4, 5, 3], ["softplus", "relu"]),
}
LOSSES = ["mse", "bce", "softmax_ce", "mixture"]


def _net(kind, loss, seed=3):
    sizes, acts = NETS[kind]
    sizes = sizes + [1 if loss == "mixture" else 3]
    return pt_kfgn.mlp(sizes, acts + ["identity"], seed=seed)


def _gn_out(loss):
    return mixture_gn_hessian if loss == "mixture" else None


@pytest.mark.parametrize("kind", list(NETS))
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("n", [1, 6])
def test_block_hessian_equals_brute_force_hessian(kind, loss, n):
    net = _net(kind, loss)
    X, Y = make_batch(loss, n, 4, net.sizes[-1], seed=n)
    ours = pt_kfgn.block_hessian(net, loss, X, Y)
    ref = brute_block_hessian(net, loss, X, Y)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("loss", LOSSES)
def test_kflr_equals_brute_force_expected_gn_and_blocks(loss):
    net = _net("smooth", loss)
    X, Y = make_batch(loss, 6, 4, net.sizes[-1])
    blocks, Gs, _, _, _ = brute_gn(net, loss, X, Y, _gn_out(loss))
    for (Q, G), G_ref in zip(pt_kfgn.kronecker_factors(net, loss, X, Y, "kflr"), Gs):
        np.testing.assert_allclose(G, G_ref, atol=1e-12, rtol=1e-9)
    for B, B_ref in zip(pt_kfgn.block_gauss_newton(net, loss, X, Y), blocks):
        np.testing.assert_allclose(B, B_ref, atol=1e-12, rtol=1e-9)


def test_kflr_last_layer_factor_is_mean_output_hessian():
    net = _net("smooth", "bce")
    X, Y = make_batch("bce", 6, 4, 3)
    G_last = pt_kfgn.kronecker_factors(net, "bce", X, Y, "kflr")[-1][1]
    h = X
    for (W, b), act in zip(net.get_params(), net.activations):
        z = h @ W + b
        h = {"sigmoid": lambda t: 1 / (1 + np.exp(-t)), "tanh": np.tanh, "identity": lambda t: t}[act](z)
    p = 1 / (1 + np.exp(-h))
    np.testing.assert_allclose(G_last, np.diag((p * (1 - p)).mean(0)), atol=1e-14)


@pytest.mark.parametrize("loss", LOSSES)
def test_one_datapoint_gn_block_is_kron_q_g_and_kfra_is_exact(loss):
    net = _net("smooth", loss)
    X, Y = make_batch(loss, 1, 4, net.sizes[-1])
    exact = pt_kfgn.block_gauss_newton(net, loss, X, Y)
    kflr = pt_kfgn.kronecker_factors(net, loss, X, Y, "kflr")
    kfra = pt_kfgn.kronecker_factors(net, loss, X, Y, "kfra")
    for B, (Q, G), (Q2, G2) in zip(exact, kflr, kfra):
        np.testing.assert_allclose(B, np.kron(Q, G), atol=1e-13, rtol=1e-10)
        np.testing.assert_allclose(G2, G, atol=1e-13, rtol=1e-10)
        np.testing.assert_allclose(Q2, Q, atol=0)


def test_kfra_differs_from_kflr_below_the_last_layer_for_a_batch():
    net = _net("smooth", "bce")
    X, Y = make_batch("bce", 6, 4, 3)
    kflr = pt_kfgn.kronecker_factors(net, "bce", X, Y, "kflr")
    kfra = pt_kfgn.kronecker_factors(net, "bce", X, Y, "kfra")
    np.testing.assert_allclose(kfra[-1][1], kflr[-1][1], atol=1e-14)
    assert np.abs(kfra[0][1] - kflr[0][1]).max() > 1e-6


@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_ce"])
def test_kfac_converges_to_kflr(loss):
    """E[ĝĝᵀ] = H_L for exponential-family outputs: the MC factor is unbiased; error ~ 1/√M."""
    net = _net("smooth", loss)
    X, Y = make_batch(loss, 5, 4, 3)
    M = 400  # replicate the batch: M independent samples per datapoint in one call
    Xr, Yr = np.tile(X, (M, 1)), np.tile(Y, (M, 1))
    exact = pt_kfgn.kronecker_factors(net, loss, Xr, Yr, "kflr")
    draws = [pt_kfgn.kronecker_factors(net, loss, Xr, Yr, "kfac", seed=11) for _ in range(25)]
    for layer in range(3):
        est = np.stack([d[layer][1] for d in draws])  # 25 independent estimates
        mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
        G = exact[layer][1]
        assert np.all(np.abs(mean - G) <= 5 * se + 1e-12), (layer, np.abs(mean - G).max(), se.max())
        assert np.abs(mean - G).max() < 0.05 * np.abs(G).max()
        np.testing.assert_allclose(draws[0][layer][0], exact[layer][0])  # Q is not sampled


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_ce"])
def test_piecewise_linear_block_hessian_equals_block_gn(act, loss):
    """Section 2.2.3 / App. E: f'' = 0 and PSD H_L ⇒ block Hessian = block GN (and PSD)."""
    net = pt_kfgn.mlp([4, 5, 4, 3], [act, act, "identity"], seed=5)
    X, Y = make_batch(loss, 6, 4, 3)
    H = pt_kfgn.block_hessian(net, loss, X, Y)
    G = pt_kfgn.block_gauss_newton(net, loss, X, Y)
    for a, b in zip(H, G):
        np.testing.assert_allclose(a, b, atol=1e-13, rtol=1e-10)
        assert np.linalg.eigvalsh(a).min() > -1e-12


def test_mixture_output_hessian_can_be_indefinite_but_gn_is_psd():
    net = pt_kfgn.mlp([4, 5, 1], ["tanh", "identity"], seed=0)
    X, Y = make_batch("mixture", 40, 4, 1, seed=2)
    net.set_params([(3 * W, b) for W, b in net.get_params()])
    Hb = pt_kfgn.block_hessian(net, "mixture", X, Y)
    Gb = pt_kfgn.block_gauss_newton(net, "mixture", X, Y)
    assert min(np.linalg.eigvalsh(B).min() for B in Hb) < -1e-6
    assert min(np.linalg.eigvalsh(B).min() for B in Gb) > -1e-12


@pytest.fixture(scope="module")
def gv_functions():
    """Compiled GN-vector product and quadratic form on one tiny net (compiled once)."""
    import pytensor.tensor as pt

    from pt_kfgn.backend import compile_function
    from pt_kfgn.curvature.products import gn_quadratic_form, gn_vector_product

    out = {}
    for loss_name in ["bce", "softmax_ce", "mixture", "mixture-positive-part"]:
        net = _net("smooth", loss_name.split("-")[0])
        chain = pt_kfgn.layer_graph(net.output)
        loss = (pt_kfgn.get_loss(loss_name) if loss_name != "mixture-positive-part"
                else Mixture(model_curvature=None))
        y = pt.matrix("Y")
        vs = [p.type() for p in chain.params]
        Gv = gn_vector_product(chain, loss, y, chain.params, vs)
        q = gn_quadratic_form(chain, loss, y, chain.params, vs)
        out[loss_name] = (net, compile_function([net.X, y, *vs], [*Gv, q]))
    return out


@pytest.mark.parametrize("loss", ["bce", "softmax_ce", "mixture", "mixture-positive-part"])
def test_gn_vector_product_equals_explicit_jt_h_j(gv_functions, loss):
    """The products of the step's model: the mixture's use the Fisher by default (``model_curvature``), its
    positive part with ``model_curvature=None``."""
    net, f = gv_functions[loss]
    name = loss.split("-")[0]
    X, Y = make_batch(name, 6, 4, net.sizes[-1])
    out = {"mixture": mixture_fisher, "mixture-positive-part": mixture_gn_hessian}.get(loss)
    _, _, full, _, _ = brute_gn(net, name, X, Y, out)
    r = np.random.default_rng(0)
    vs = [r.standard_normal(p.get_value().shape) for p in net.flat_params]
    *Gv, q = f(X, Y, *vs)
    # flat θ order of the brute force: per layer vstack([W, b]).ravel()
    v_flat = np.concatenate([np.vstack([vs[2 * i], vs[2 * i + 1][None]]).ravel() for i in range(len(vs) // 2)])
    Gv_flat = np.concatenate([np.vstack([Gv[2 * i], Gv[2 * i + 1][None]]).ravel() for i in range(len(Gv) // 2)])
    np.testing.assert_allclose(Gv_flat, full @ v_flat, atol=1e-12, rtol=1e-9)
    np.testing.assert_allclose(q, v_flat @ full @ v_flat, rtol=1e-10)


@pytest.mark.parametrize("builtin", ["bce", "mse"])
def test_a_hand_written_loss_gives_the_builtin_curvature(builtin):
    """A user's CustomLoss equal to a built-in: KFLR, KFRA, exact block GN and block Hessian to 1e-10."""
    import pytensor.tensor as pt

    from pt_kfgn.graph.custom_loss import CustomLoss

    forms = {"bce": lambda h, y: (pt.log1p(pt.exp(h)) - y * h).sum(axis=1),
             "mse": lambda h, y: 0.5 * ((h - y) ** 2).sum(axis=1)}
    user = CustomLoss(forms[builtin], name=f"my_{builtin}")
    net = _net("smooth", builtin)
    X, Y = make_batch(builtin, 6, 4, 3)
    for method in ("kflr", "kfra"):
        for (Q, G), (Qu, Gu) in zip(pt_kfgn.kronecker_factors(net, builtin, X, Y, method),
                                    pt_kfgn.kronecker_factors(net, user, X, Y, method)):
            np.testing.assert_allclose(Qu, Q, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(Gu, G, rtol=1e-10, atol=1e-12)
    for a, b in ((pt_kfgn.block_gauss_newton(net, builtin, X, Y), pt_kfgn.block_gauss_newton(net, user, X, Y)),
                 (pt_kfgn.block_hessian(net, builtin, X, Y), pt_kfgn.block_hessian(net, user, X, Y))):
        for B, Bu in zip(a, b):
            np.testing.assert_allclose(Bu, B, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="needs a sampler"):
        pt_kfgn.kronecker_factors(net, user, X, Y, "kfac")
    opt = pt_kfgn.KFGN(net, user, "kfra")
    assert opt.step(X, Y)["accepted"]


@pytest.mark.parametrize("builtin,noise", [("bce", "uniform"), ("mse", "normal")])
def test_a_custom_sampler_sees_the_same_noise_as_the_builtin(builtin, noise):
    """KFAC with a user's sampler ``(h, noise) -> ĝ`` written as the built-in one: the same factors, draw for draw."""
    import pytensor.tensor as pt

    from pt_kfgn.graph.custom_loss import CustomLoss

    forms = {"bce": lambda h, y: (pt.log1p(pt.exp(h)) - y * h).sum(axis=1),
             "mse": lambda h, y: 0.5 * ((h - y) ** 2).sum(axis=1)}
    samplers = {"bce": lambda h, u: pt.sigmoid(h) - pt.cast(u < pt.sigmoid(h), h.dtype), "mse": lambda h, e: e}
    user = CustomLoss(forms[builtin], name=f"sampled_{builtin}", sampler=samplers[builtin], noise=noise)
    net = _net("smooth", builtin)
    X, Y = make_batch(builtin, 6, 4, 3)
    for _ in range(2):  # two draws from each generator (seed 5)
        ref = pt_kfgn.kronecker_factors(net, builtin, X, Y, "kfac", seed=5)
        got = pt_kfgn.kronecker_factors(net, user, X, Y, "kfac", seed=5)
        for (Q, G), (Qu, Gu) in zip(ref, got):
            np.testing.assert_allclose(Gu, G, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="noise must be"):
        CustomLoss(forms[builtin], sampler=samplers[builtin], noise="gumbel")
