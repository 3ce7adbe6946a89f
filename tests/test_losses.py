"""Every loss term at saturated logits, float32 and float64, against a 60-digit reference (``decimal``).

The reference evaluates each closed form with Python's ``decimal`` module (60 significant digits, exact
``exp``/``ln``), never by cancellation-prone float arithmetic; ``1 − μ`` is written ``μ(−h)``.
"""

from decimal import Decimal, getcontext, localcontext

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from reference import mixture_fisher, mixture_gn_hessian

from pt_kfgn.backend import compile_function
from pt_kfgn.graph.losses import Mixture, get_loss, new_rng

getcontext().prec = 60
LOGITS = np.concatenate([np.linspace(-100, 100, 81), [-30.5, -15.5, -0.1, 0.0, 0.1, 15.5, 30.5]])
TOL = {"float32": {"rtol": 3e-5, "atol": 1e-30}, "float64": {"rtol": 1e-11, "atol": 1e-300}}


def _sig(x: Decimal) -> Decimal:
    return 1 / (1 + (-x).exp())


def _mix(h: Decimal):
    """μ, 1 − μ, μ′, μ″ of MIX-v0 exactly (60 digits)."""
    s1, s1m, s2, s2m = _sig(h), _sig(-h), _sig(2 * h), _sig(-2 * h)
    mu, one_minus = (s1 + s2) / 2, (s1m + s2m) / 2
    d1 = s1 * s1m / 2 + s2 * s2m
    d2 = s1 * s1m * (s1m - s1) / 2 + 2 * s2 * s2m * (s2m - s2)
    return mu, one_minus, d1, d2


def mixture_reference(h: float, y: int, curvature: str = "positive-part") -> dict:
    with localcontext() as ctx:  # the exact H_L at |h| = 100 is a difference of O(1) terms equal to 90 digits
        ctx.prec = 130
        return _mixture_reference(h, y, curvature)


def _mixture_reference(h: float, y: int, curvature: str) -> dict:
    mu, om, d1, d2 = _mix(Decimal(h))
    if y == 1:
        E, g, gn, full = -mu.ln(), -d1 / mu, (d1 / mu) ** 2, (d1 / mu) ** 2 - d2 / mu
    else:
        E, g, gn, full = -om.ln(), d1 / om, (d1 / om) ** 2, (d1 / om) ** 2 + d2 / om
    fisher = d1 * d1 / (mu * om)
    psd = {"gn-split": gn, "positive-part": max(full, Decimal(0)), "fisher": fisher}[curvature]
    return {k: float(v) for k, v in {"E": E, "g": g, "gn": psd, "full": full, "sqrt": psd.sqrt(),
                                         "fisher": fisher, "mu": mu}.items()}


def bce_reference(h: float, y: float) -> dict:
    hd, yd = Decimal(h), Decimal(y)
    sp = (1 + hd.exp()).ln()  # softplus(h)
    p, q = _sig(hd), _sig(-hd)
    return {k: float(v) for k, v in {"E": sp - yd * hd, "g": p - yd, "gn": p * q, "sqrt": (p * q).sqrt()}.items()}


def _functions(loss, dtype, backend="fast"):
    h, y = pt.matrix("h", dtype=dtype), pt.matrix("y", dtype=dtype)
    with pytensor.config.change_flags(floatX=dtype):
        E = loss.per_sample(h, y)
        outs = [E, pt.grad(E.sum(), h), loss.gn_hessian(h, y), loss.sqrt_hessian(h, y), loss.hessian(h, y)]
        return compile_function([h, y], outs, backend=backend)


@pytest.mark.parametrize("curvature", Mixture.CURVATURES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("y", [0, 1])
def test_mixture_terms_are_accurate_at_every_logit(dtype, y, curvature):
    """Every term of MIX-v0 against the 60-digit reference, for each PSD output curvature (the default, the
    positive part of the exact ``H_L``, is ``max(H_L, 0)`` of the reference's exact second derivative)."""
    loss = Mixture(curvature)
    fn = _functions(loss, dtype)
    h = LOGITS.astype(dtype)[:, None]
    E, g, gn, S, H = fn(h, np.full_like(h, y))
    ref = [mixture_reference(float(v), y, curvature) for v in h[:, 0]]
    for got, key in ((E[:, None], "E"), (g, "g"), (gn[:, :, 0], "gn"), (S[:, :, 0], "sqrt"),
                     (H[:, :, 0], "full")):
        assert np.all(np.isfinite(got)), key
        want = np.array([[r[key]] for r in ref])
        tol = dict(TOL[dtype])
        if curvature == "fisher" and dtype == "float32" and key in ("gn", "sqrt"):
            # [ours] the Fisher option is R(h) R(−h); R(±h) itself underflows float32 beyond |h| ≈ 87
            got, want = got[np.abs(h) < 80][:, None], want[np.abs(h) < 80][:, None]
        if key == "full":  # μ″(μ − y)/(μ(1 − μ)) holds differences of sigmoids: a looser relative bound
            tol["rtol"] = max(tol["rtol"], 2e-3 if dtype == "float32" else 1e-9)
            tol["atol"] = 1e-6 if dtype == "float32" else 1e-14
        np.testing.assert_allclose(got, want, err_msg=f"{key} ({dtype}, y={y})", **tol)
    assert np.all(E >= 0), "a negative cross-entropy"


def test_mixture_curvature_is_the_exact_hessian_where_it_is_positive():
    """Issue 25: at confident correct points the exact ``H_L`` is up to 10⁴ × the convex split's (h = 5: 3.4e-3
    against 1.1e-5), so α* exploded on easy batches.  The default curvature equals the exact Hessian (brute
    force: PyTensor's own second derivative of the loss) wherever it is positive, and 0 elsewhere.

    Caught: the default back at the convex split (sabotage ``mixture-gn-split``)."""
    loss = get_loss("mixture")
    fn = _functions(loss, "float64")
    h = np.linspace(-12, 12, 97)[:, None]
    for y in (0, 1):
        _, _, gn, _, H = fn(h, np.full_like(h, y))
        np.testing.assert_allclose(gn[:, :, 0], np.maximum(H[:, :, 0], 0), rtol=1e-9, atol=1e-15)
        assert (H < 0).any() and (gn >= 0).all()


def test_mixture_model_curvature_reaches_the_gn_products_only():
    """``Mixture(curvature, model_curvature)``: the Kronecker factors' terms (``gn_hessian``, ``sqrt_hessian``)
    use ``curvature``, the GN-vector products of the step's model use ``model_curvature`` — at a confidently
    misclassified point the positive part is 0 and the Fisher is not.

    Caught: ``hessian_vector`` on ``curvature`` (the model's option ignored)."""
    h, y, u = pt.matrix("h"), pt.matrix("y"), pt.matrix("u")
    split = Mixture("positive-part", model_curvature="fisher")
    fn = compile_function([h, y, u], [split.gn_hessian(h, y)[:, :, 0], split.hessian_vector(h, y, u)],
                          backend="fast")
    hv = np.array([[-9.0], [-2.0], [0.5], [4.0]])
    gn, Hu = fn(hv, np.ones_like(hv), np.full_like(hv, 3.0))
    fisher = np.array([mixture_fisher(v, 1.0)[0, 0] for v in hv[:, 0]])[:, None]  # numpy closed form
    np.testing.assert_allclose(gn, np.array([mixture_gn_hessian(v, 1.0)[0, 0] for v in hv[:, 0]])[:, None],
                               rtol=1e-9, atol=1e-15)  # the factors' curvature: the positive part
    assert gn[0, 0] == 0 and fisher[0, 0] > 1e-5  # h = −9, y = 1: a confident mistake
    np.testing.assert_allclose(Hu, 3.0 * fisher, rtol=1e-9)
    assert Mixture("gn-split", model_curvature=None).model_curvature == "gn-split"  # None: the factors' own
    with pytest.raises(ValueError, match="model_curvature"):
        Mixture(model_curvature="exact")


def test_mixture_terms_under_the_default_backend_rewrites():
    """The default backend rewrites the graph (fusion, stabilisation); the values must survive them."""
    loss = get_loss("mixture")
    fn = _functions(loss, "float32", backend="numba")
    h = LOGITS.astype("float32")[:, None]
    for y in (0, 1):
        E, g, gn, S, _ = fn(h, np.full_like(h, y))
        ref = [mixture_reference(float(v), y) for v in h[:, 0]]
        for got, key in ((E[:, None], "E"), (g, "g"), (gn[:, :, 0], "gn"), (S[:, :, 0], "sqrt")):
            want = np.array([[r[key]] for r in ref])
            np.testing.assert_allclose(got, want, err_msg=key, **TOL["float32"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_terms_are_accurate_at_every_logit(dtype):
    loss = get_loss("bce")
    fn = _functions(loss, dtype)
    h = np.stack([LOGITS, LOGITS], axis=1).astype(dtype)
    yv = np.stack([np.zeros_like(LOGITS), np.ones_like(LOGITS)], axis=1).astype(dtype)
    E, g, gn, S, _ = fn(h, yv)
    ref = [[bce_reference(float(a), float(b)) for a, b in zip(hr, yr)] for hr, yr in zip(h, yv)]
    tol = TOL[dtype]
    np.testing.assert_allclose(E, [sum(r["E"] for r in row) for row in ref], **tol)
    # σ(h) − y with a target y ∈ [0, 1]: accurate to float eps absolutely (PyTensor's canonicaliser
    # regroups the gradient's sum, so a relative bound at |g| ≪ eps is not asked for)
    np.testing.assert_allclose(g, [[r["g"] for r in row] for row in ref], rtol=tol["rtol"],
                               atol=np.finfo(dtype).eps)
    np.testing.assert_allclose(np.diagonal(gn, axis1=1, axis2=2), [[r["gn"] for r in row] for row in ref], **tol)
    np.testing.assert_allclose(np.diagonal(S, axis1=1, axis2=2), [[r["sqrt"] for r in row] for row in ref],
                               **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_terms_are_finite_and_exact_at_saturated_logits(dtype):
    loss = get_loss("softmax_ce")
    fn = _functions(loss, dtype)
    h = np.array([[100.0, -100.0, 0.0], [-100.0, -100.0, 100.0], [30.0, 30.0, -30.0], [0.1, 0.0, -0.1]], dtype)
    y = np.eye(3, dtype=dtype)[[1, 2, 0, 1]]
    E, g, gn, S, _H = fn(h, y)
    for row, (hr, yr) in enumerate(zip(h, y)):
        hd = [Decimal(float(v)) for v in hr]
        m = max(hd)
        lse = m + sum((v - m).exp() for v in hd).ln()
        p = np.array([float((v - lse).exp()) for v in hd])
        np.testing.assert_allclose(E[row], float(lse - sum(Decimal(float(a)) * b for a, b in zip(yr, hd))),
                                   **TOL[dtype])
        # p − y: the saturated target class is accurate to float eps absolutely [ours: PyTensor's
        # log-softmax gradient; the paper's experiments use no softmax]
        np.testing.assert_allclose(g[row], p - yr, rtol=TOL[dtype]["rtol"], atol=np.finfo(dtype).eps,
                                   err_msg=f"row {row}")
        ref_H = np.diag(p) - np.outer(p, p)
        np.testing.assert_allclose(gn[row], ref_H, **TOL[dtype])
        np.testing.assert_allclose(S[row].T @ S[row], ref_H, rtol=TOL[dtype]["rtol"], atol=1e-7)


@pytest.mark.parametrize("name", ["bce", "mixture"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sampled_gradients_are_finite_and_take_the_two_exact_values(name, dtype):
    """KFAC's ĝ for ŷ ∈ {0, 1}: exactly one of the two per-target gradients, at every logit."""
    loss = get_loss(name)
    h = pt.matrix("h", dtype=dtype)
    noise = pt.matrix("noise", dtype=dtype)
    with pytensor.config.change_flags(floatX=dtype):
        g = loss.sample_grad(h, noise)
    fn = compile_function([h, noise], g, backend="fast")
    hv = np.repeat(LOGITS.astype(dtype)[:, None], 50, axis=1) if name == "bce" else LOGITS.astype(dtype)[:, None]
    if name == "mixture":
        hv = np.repeat(hv, 50, axis=0)
    got = fn(hv, loss.draw_noise(new_rng(3), hv.shape[0], hv.shape[1], dtype))
    assert np.all(np.isfinite(got))
    ref = mixture_reference if name == "mixture" else bce_reference
    g0 = np.vectorize(lambda v: ref(float(v), 0)["g"])(hv)
    g1 = np.vectorize(lambda v: ref(float(v), 1)["g"])(hv)
    close = {"rtol": TOL[dtype]["rtol"], "atol": TOL[dtype]["atol"]}
    assert np.all(np.isclose(got, g0, **close) | np.isclose(got, g1, **close))


def test_mixture_sampler_is_unbiased_for_the_fisher():
    """E_ŷ[ĝ] = 0 and E_ŷ[ĝ²] = μ′²/(μ(1 − μ)) (the Fisher KFAC estimates), within 5 standard errors."""
    loss = get_loss("mixture")
    h, noise = pt.matrix("h"), pt.matrix("noise")
    fn = compile_function([h, noise], loss.sample_grad(h, noise), backend="fast")
    logits = np.array([-3.0, -0.7, 0.0, 0.4, 2.5])
    n = 20000
    hv = np.repeat(logits[None, :], n, axis=0).reshape(-1, 1)
    draws = fn(hv, loss.draw_noise(new_rng(11), len(hv), 1, "float64")).reshape(n, -1)
    for j, v in enumerate(logits):
        ref = mixture_reference(float(v), 1)
        se_mean = draws[:, j].std() / np.sqrt(n)
        assert abs(draws[:, j].mean()) <= 5 * se_mean + 1e-12
        sq = draws[:, j] ** 2
        assert abs(sq.mean() - ref["fisher"]) <= 5 * sq.std() / np.sqrt(n) + 1e-12


@pytest.mark.parametrize("name", ["mse", "bce", "softmax_ce", "mixture"])
def test_float32_losses_stay_float32(name):
    """No term of a float32 loss upcasts to float64 (a NumPy float64 constant would: slower on Numba, and on
    JAX it forced x64 mode for the whole process)."""
    from pytensor.graph.traversal import ancestors

    from pt_kfgn.backend import floatx

    loss = get_loss(name)
    d = 1 if name == "mixture" else 3
    h, y, noise = (pt.tensor(dtype="float32", shape=(None, d)) for _ in range(3))
    with floatx("float32"):  # as the optimisers build their graphs
        terms = [loss.per_sample(h, y).sum(), pt.grad(loss.per_sample(h, y).sum(), h), loss.gn_hessian(h, y),
                 loss.sqrt_hessian(h, y), loss.mean_hessian(h, y)]
        if name != "mse":
            terms.append(loss.sample_grad(h, noise))
    upcast = [v for v in ancestors(terms) if getattr(v, "dtype", None) == "float64"]
    assert not upcast, upcast[:3]


@pytest.mark.parametrize("name", ["mse", "bce", "softmax_ce", "mixture"])
def test_infimum_is_the_losss_lowest_value_on_the_targets(name):
    """``Loss.infimum(y)`` is ``inf_h Ē(h, y)``: reached (to 1e-12) at the output that fits the targets —
    ``h = y``, ``σ(h) = y``, ``softmax(h) = y``, ``h = ±40`` for 0/1 targets — and no perturbed output goes below
    it; for soft BCE targets it is their entropy (``scipy.special.entr``, an independent form).

    Caught: 0 as BCE's infimum (``tests/sabotage.py infimum``: 0.83 off)."""
    from scipy.special import entr, logit

    loss = get_loss(name)
    r = np.random.default_rng(0)
    n, d = 6, 4
    Y = {"mse": lambda: r.standard_normal((n, d)), "bce": lambda: np.c_[r.random((n, d - 2)), np.zeros(n), np.ones(n)],
         "softmax_ce": lambda: np.r_[r.dirichlet(np.ones(d), n - 1), np.eye(d)[:1]],
         "mixture": lambda: r.integers(0, 2, (n, 1)).astype(float)}[name]()
    best = {"mse": Y, "bce": logit(np.clip(Y, 1e-300, 1 - 1e-16)).clip(-40, 40),
            "softmax_ce": np.log(np.maximum(Y, 1e-300)).clip(-80, None), "mixture": 40 * (2 * Y - 1)}[name]
    h, y = pt.matrix("h", dtype="float64"), pt.matrix("y", dtype="float64")
    inf_fn = compile_function([y], loss.infimum(y), backend="fast")
    mean_fn = compile_function([h, y], loss.mean(h, y), backend="fast")
    low = float(inf_fn(Y))
    np.testing.assert_allclose(float(mean_fn(best, Y)), low, rtol=1e-12, atol=1e-12)
    for _ in range(20):
        assert float(mean_fn(best + 0.3 * r.standard_normal(best.shape), Y)) >= low - 1e-12
    if name == "bce":
        np.testing.assert_allclose(low, (entr(Y) + entr(1 - Y)).sum(axis=1).mean(), rtol=1e-13)
