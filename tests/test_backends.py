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


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.skipif(not (importlib.util.find_spec("jax") and importlib.util.find_spec("threadpoolctl")),
                    reason="needs jax and threadpoolctl")
def test_jax_runs_lapack_with_one_blas_thread_and_gives_the_threads_back(monkeypatch):
    """XLA's LAPACK calls on CPU run with one OpenBLAS thread (``one_blas_thread_on_cpu``), only for the call.

    PyTensor's JAX dispatch calls ``jax.scipy.linalg.cholesky`` while the jitted graph is traced, i.e. inside
    the first call: a wrapper records the BLAS threads it sees there.
    """
    import jax
    import jax.scipy.linalg as jsl
    import pytensor.tensor as pt
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS, the one XLA's LAPACK calls use)
    from threadpoolctl import threadpool_limits

    from pt_kfgn.backend import compile_function, one_blas_thread_on_cpu

    if jax.default_backend() != "cpu":
        pytest.skip("the limit applies on CPU only")
    seen, cholesky = [], jsl.cholesky
    monkeypatch.setattr(jsl, "cholesky", lambda *a, **k: seen.append(_blas_threads()) or cholesky(*a, **k))
    A = pt.matrix("A", dtype="float32")
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        fn = compile_function([A], pt.linalg.cholesky(A, lower=True), backend="jax")
        L = np.asarray(fn(np.array([[4.0, 2.0], [2.0, 5.0]], dtype="float32")))
        after = _blas_threads()
    np.testing.assert_allclose(L, [[2, 0], [1, 2]])
    assert seen and all(n == 1 for n in seen[0].values()), seen
    assert after == before and max(before.values()) == 2
    plain = compile_function([A], 2 * A, backend="jax")  # no LAPACK call: left as it is
    assert one_blas_thread_on_cpu(len, plain.maker.fgraph) is len


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
def test_a_float64_graph_runs_in_float64_on_jax_after_a_float32_one():
    """PyTensor sets JAX's x64 flag once from floatX; a later float64 graph must not run in float32."""
    import jax
    import pytensor.tensor as pt

    from pt_kfgn.backend import compile_function

    x32, x64 = pt.vector("x", dtype="float32"), pt.vector("x", dtype="float64")
    compile_function([x32], pt.exp(x32), backend="jax")
    jax.config.update("jax_enable_x64", False)  # as after a first import under floatX=float32
    try:
        out = compile_function([x64], x64 / 3, backend="jax")(np.array([1.0]))
        assert np.asarray(out).dtype == np.float64 and abs(float(out[0]) - 1 / 3) < 1e-15
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
@pytest.mark.parametrize("method", ["kfra", "adam", "hf"])
def test_a_float32_step_stays_float32_on_jax_when_x64_is_on(method):
    """With JAX's x64 mode on (PyTensor turns it on from floatX = float64; a float64 graph turns it on), a float32
    step computes in float32 throughout and writes float32 parameters and state back.

    Caught: without the JAX modes' reductions in the output dtype (``JAX_REDUCE_TAG``), PyTensor's float64
    accumulators of the bias gradients come out float64, the whole KFRA step after them runs in float64, and
    the parameters come back float64."""
    import jax
    from pytensor.link.jax.dispatch import jax_funcify

    from pt_kfgn.optim import make_optimizer

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        net = pt_kfgn.mlp([5, 4, 3], ["tanh", "identity"], seed=1, dtype="float32")
        X, Y = (a.astype("float32") for a in make_batch("bce", 16, 5, 3))
        kwargs = {"T2": 2} if method == "kfra" else ({"max_iters": 3} if method == "hf" else {})
        opt = make_optimizer(method, net, "bce", backend="jax", **kwargs)
        for _ in range(2):
            opt.step(X, Y)
        assert {np.asarray(v.get_value()).dtype for v in opt.params} == {np.dtype("float32")}
        if method == "hf":  # the linearisation's arrays, which CG works on, as declared
            lin = opt.operator.linearise(X, Y)
            assert {np.asarray(a).dtype for a in [*lin.grads, *lin.hs]} == {np.dtype("float32")}
            return
        fns = list(opt._fns.values()) if method == "kfra" else [opt._fn]
        for fn in fns:  # no float64 value anywhere in the traced step
            inputs = zip(fn.input_storage, fn.maker.fgraph.inputs)  # explicit inputs: X, Y, then scalars
            args = [jax.ShapeDtypeStruct(np.shape(c.data), np.asarray(c.data).dtype) if c.data is not None else
                    jax.ShapeDtypeStruct((X, Y)[k].shape if k < 2 else v.type.shape, v.type.dtype)
                    for k, (c, v) in enumerate(inputs)]
            jaxpr = jax.make_jaxpr(jax_funcify(fn.maker.fgraph))(*args).jaxpr
            # weakly typed float64 (a Python scalar constant broadcast) yields to float32 wherever it meets one
            wide = {str(e.primitive) for e in jaxpr.eqns for v in e.outvars
                    if v.aval.dtype == np.float64 and not v.aval.weak_type}
            assert not wide, wide
            stored = {v.name: np.asarray(c.data).dtype for c, v in zip(fn.input_storage, fn.maker.fgraph.inputs)
                      if c.data is not None and np.asarray(c.data).dtype != v.type.dtype}
            assert not stored, stored  # every shared variable (parameters, moments, caches) as declared
    finally:
        jax.config.update("jax_enable_x64", before)


_C_BLAS_CHECK = """
import warnings, numpy as np, pytensor, pytensor.tensor as pt
from pt_kfgn.backend import compile_function
A = pt.matrix("A", dtype="float32"); v = pt.vector("v", dtype="float32")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    f = compile_function([A, v], [pt.tanh(A @ A).sum() + (A @ v).sum() + (A.T @ A).sum()], backend="c")
a = np.random.default_rng(0).standard_normal((64, 64)).astype("float32")
assert np.isclose(f(a, a[0])[0], np.tanh(a @ a).sum() + (a @ a[0]).sum() + (a.T @ a).sum(), rtol=1e-4)
print(repr(pytensor.config.blas__ldflags), any("could not link to a BLAS" in str(w.message) for w in caught))
"""


@pytest.mark.skipif(not importlib.util.find_spec("scipy_openblas32"), reason="needs the c extra")
def test_the_c_backend_links_the_c_extras_openblas_unless_the_user_set_a_blas(tmp_path):
    """With the ``c`` extra, PyTensor's C backend links its OpenBLAS (renamed symbols, ``link_c_blas``): no "could
    not link to a BLAS" warning, and the products agree with NumPy. A ``blas__ldflags`` of the user's is kept.
    Caught: ``link_c_blas`` doing nothing (the flags stay empty and PyTensor warns)."""
    import os
    import subprocess
    import sys

    def run(code, flags=""):
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path}{flags}"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    linked = run(_C_BLAS_CHECK)
    assert "-lscipy_openblas" in linked and "-Dsgemm_=scipy_sgemm_" in linked and linked.endswith("False")
    assert run("from pt_kfgn.backend import link_c_blas; print(link_c_blas())", ",blas__ldflags=-lmyblas") == "-lmyblas"


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
def test_jax_on_cpu_runs_every_product_with_eigen_unless_asked_or_xla_flags_choose(monkeypatch):
    """XLA would hand ``X @ W`` to a YNNPACK fusion; our JAX modes compile it as a plain (Eigen) product
    (``pt_kfgn.backend.xla_compiler_options``) unless ``products="xla"`` (Hessian-free's functions), and leave the
    choice to a user's ``XLA_FLAGS``."""
    import jax
    import pytensor
    import pytensor.tensor as pt

    from pt_kfgn.backend import compile_function, compiled_text, xla_compiler_options

    if jax.default_backend() != "cpu":
        pytest.skip("the option is for XLA on CPU")
    X, W = pt.matrix("X", dtype="float32"), pytensor.shared(np.ones((32, 16), "float32"))
    x = np.ones((64, 32), "float32")
    assert "__ynn_fusion" in jax.jit(lambda x, w: jax.numpy.tanh(x @ w).sum()).lower(x, W.get_value()).compile().as_text()
    text = compiled_text(compile_function([X], [pt.tanh(X @ W).sum()], backend="jax"), x)
    assert "__ynn_fusion" not in text and " dot(" in text
    text = compiled_text(compile_function([X], [pt.tanh(X @ W).sum()], backend="jax", products="xla"), x)
    assert "__ynn_fusion" in text  # Hessian-free's choice
    with pytest.raises(ValueError, match="products='blas'"):
        xla_compiler_options("blas")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot")
    assert xla_compiler_options() == {}


@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
def test_jax_compiles_into_a_persistent_cache_beside_pytensors_unless_one_is_set(tmp_path):
    """A fresh process compiling a JAX step writes XLA's executable under ``<PyTensor compiledir>/jax``; a
    cache directory the user gave JAX is kept.

    Caught: the cache not enabled (nothing written), and a user's directory overwritten."""
    import os
    import subprocess
    import sys

    code = ("import jax, numpy as np, pytensor, pytensor.tensor as pt; "
            "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0); "
            "from pt_kfgn.backend import compile_function; x = pt.vector('x', dtype='float32'); "
            "compile_function([x], pt.exp(x) * 3, backend='jax')(np.ones(3, 'float32')); "
            "print(jax.config.jax_compilation_cache_dir)")
    for user in (None, str(tmp_path / "mine")):
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path / 'pt'}"}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        if user:
            env["JAX_COMPILATION_CACHE_DIR"] = user
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        used = out.stdout.strip().splitlines()[-1]
        if user:
            assert used == user
        else:
            assert used.startswith(str(tmp_path / "pt")) and used.endswith(os.sep + "jax")
        assert os.listdir(used), "nothing was cached"


def test_the_default_backend_is_jax_when_installed_else_numba(monkeypatch):
    """README "Backends": JAX when the extra is installed (fastest here), Numba without it; the variable wins."""
    import importlib.util as iu

    from pt_kfgn import backend

    monkeypatch.delenv("PT_KFGN_BACKEND", raising=False)
    assert backend.default_backend() == ("jax" if iu.find_spec("jax") else "numba")
    find_spec = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name.startswith("jax") else find_spec(name, *a))
    assert backend.default_backend() == "numba"
    monkeypatch.setenv("PT_KFGN_BACKEND", "c")
    assert backend.check_backend(None) == "c"


def test_the_fast_mode_evaluates_products_and_sums_of_many_tensors_by_binary_ufuncs():
    """FAST_COMPILE falls back to one Python call per element for an n-ary Elemwise; the "fast" mode splits them
    (pt_kfgn.backend), and the result is unchanged."""
    import pytensor.tensor as pt
    from pytensor.scalar.basic import Add, Mul
    from pytensor.tensor.elemwise import Elemwise

    from pt_kfgn.backend import compile_function

    x, y, z = pt.matrix("x"), pt.vector("y"), pt.scalar("z")
    fn = compile_function([x, y, z], x * y * z * x + x + y + 2 * z, backend="fast")
    arity = [len(n.inputs) for n in fn.maker.fgraph.apply_nodes
             if isinstance(n.op, Elemwise) and isinstance(n.op.scalar_op, Add | Mul)]
    assert arity and max(arity) == 2, arity
    a, b, c = np.random.default_rng(0).random((3, 4)), np.arange(4.0), 1.5
    np.testing.assert_allclose(fn(a, b, c), a * b * c * a + a + b + 2 * c, rtol=1e-15)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs the jax extra")
@pytest.mark.parametrize("method", ["kfra", pytest.param("kfac", marks=pytest.mark.slow)])  # suite time
def test_background_compilation_changes_nothing_but_the_wait(method, caplog):
    """``compile(background=True)`` compiles only the first step's kind up front; the T₁ and T₂ kinds are
    JIT-compiled by a thread; 25 steps (five T₁ steps, one γ search) are bit-identical to a run compiled up
    front, KFAC's sampler included.

    Caught: the warm-up calling the PyTensor function (it applied a step: θ differed); KFAC's noise drawn after
    the state was restored (its sampler advanced); ``example=20`` read as the default two-point batch (each kind
    compiled twice)."""
    import logging

    import jax

    r = np.random.default_rng(0)
    X = r.random((40, 12)).astype("float32")
    runs = []
    for background in (False, True):
        net = pt_kfgn.mlp([12, 8, 3, 8, 12], ["tanh", "identity", "tanh", "identity"], seed=1, dtype="float32")
        opt = pt_kfgn.KFGN(net, "bce", method, backend="jax")
        # the background run compiles on a batch of zeros of the size it trains with, as ``pt-kfgn train`` does
        opt.compile(example=20 if background else (X[:20], X[:20]), background=background)
        if background:
            assert len(opt._fns) == 1  # the first step's kind only; the others come from the thread
        caplog.clear()
        with jax.log_compiles(), caplog.at_level(logging.WARNING):
            for t in range(25):
                opt.step(X[20 * (t % 2):20 * (t % 2) + 20], X[20 * (t % 2):20 * (t % 2) + 20])
        runs.append(net.get_params())
        if background:
            assert len(opt.background_compile_seconds) == 2
            # every XLA compilation came before the steps or from the thread; none at a step (the first kind was
            # compiled for the batch it ran)
            assert not [r for r in caplog.records if "Compiling jit(" in r.getMessage()
                        and r.threadName == "MainThread"]
    for (Wa, ba), (Wb, bb) in zip(*runs):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs the jax extra")
def test_kfac_on_jax_with_more_outputs_than_int8_holds():
    """FACES has 625 outputs. Caught: KFAC's damped factors failed to compile under JAX with "Python integer
    625 out of bounds for int8" (the diagonal's ``arange`` started from an int8 constant)."""
    d = 625
    net = pt_kfgn.mlp([d, 8, d], ["tanh", "identity"], dtype="float32")
    X = np.random.default_rng(0).random((16, d)).astype("float32")
    assert KFGN(net, "mse", "kfac", backend="jax").step(X, X)["accepted"]
