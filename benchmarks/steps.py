"""Step-time benchmark (issue 5): the MNIST autoencoder 784-1000-500-250-30-250-500-1000-784, batch 1000.

For each backend available (numba, c, jax) and dtype: time per step (after warm-up, in one process, the methods
interleaved: :func:`time_methods`) of Adam, KFRA, KFRA with curvature every 5 steps, KFAC, HF with 10 CG
iterations, and KFLR on the one-output classifier 784-1000-500-250-30-1; the
first-compile time of each step; peak RSS; the FLOP count of each step (from the layer sizes) and the achieved
GFLOP/s against numpy's 1000 × 1000 product, timed interleaved with the steps.  The key figures are ratios.
Peers (BackPACK, kfac-jax) are timed when installed; they are never dependencies.

    python -m benchmarks.steps --quick --json results/bench.json
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import resource
import sys
import time
from datetime import date

import numpy as np

from benchmarks import write_report
from pt_kfgn.backend import check_backend
from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim import make_optimizer

AE = (1000, 500, 250, 30)


def layer_dims(sizes):
    return list(itertools.pairwise(sizes))


def flops(method: str, sizes, N: int, every: int = 1, T1: int = 5, T2: int | None = None) -> float:
    """FLOPs of one step, counted from the layer sizes (multiply-add = 2), averaged over T₁ steps (and, with
    ``T2``, over the T₂ cycle of the γ search).

    HF with 10 CG iterations: see the comment in the code. KFGN: gradient, ``Q`` factors, output factors,
    Cholesky factorisations and their two-sided solves, the forward-mode product for α*, and the trial forward
    pass on every T₁-th step; with ``every`` > 1
    (amortised curvature) the factors, factorisations and explicit inverses (a triangular solve against the
    identity and a symmetric product, ``2 n³`` per factor) every ``every`` steps and the two GEMMs that apply
    them every step (as many FLOPs as the two-sided triangular solves).
    The Gram products ``ĀᵀĀ``, ``E[f′f′ᵀ]`` and ``SᵀS`` count as the symmetric rank-k updates they run as
    (:mod:`pt_kfgn.graph.gram`: ``N d (d + 1)`` for a ``d × d`` result).  With ``T2``, every T₂-th step's γ
    search adds two more candidates (each its Cholesky factorisations, solves and forward-mode product) and,
    amortised, one more factorisation for the chosen γ's inverses.
    """
    dims = layer_dims(sizes)
    fwd = sum(2 * N * a * b for a, b in dims)
    first = 2 * N * dims[0][0] * dims[0][1]  # the first layer's product with its input
    # forward + two backward products per layer, but no gradient w.r.t. the data (the first layer's input)
    grad = 3 * fwd - first
    jvp = 2 * fwd - first  # forward mode: J v needs two products per layer, one for the first (its input is data)
    if method in ("adam", "sgd"):
        return grad
    if method == "hf":
        # Martens' diagonal (a per-datapoint backward and one product per layer), 12 GN products (forward and
        # reverse mode on the step's forward pass: the warm start's residual, 10 CG iterations, ρ's model) and
        # one trial forward pass (CG-backtracking and the line search may add more)
        return grad + (2 * fwd - first) + 12 * 2 * jvp + fwd
    Q = sum(N * (a + 1) * (a + 2) for a, _ in dims)
    chol, solves, inverses = (replicated_flops(sizes, every)[k] for k in ("chol", "solves", "inverses"))
    extra = jvp + fwd / T1  # R-op for α*, trial forward on T₁ steps
    if method.startswith("kfra"):
        # first push with a diagonal E[H_L]: (W⊙g)Wᵀ; later pushes W G Wᵀ; E[f'f'ᵀ] symmetric
        a_L, b_L = dims[-1]
        G = 2 * a_L * a_L * b_L + sum(2 * b * b * a + 2 * b * a * a for a, b in dims[1:-1])
        G += sum(N * a * (a + 1) for a, _ in dims[1:])
    elif method == "kfac":
        G = sum(2 * N * a * b for a, b in dims[1:]) + sum(N * b * (b + 1) for _, b in dims)
    else:  # kflr with r outputs
        r = sizes[-1]
        G = sum(2 * N * r * a * b for a, b in dims[1:]) + sum(N * r * b * (b + 1) for _, b in dims)
    search = 0.0 if T2 is None else (2 * (chol + solves + jvp) + (chol if every > 1 else 0)) / T2
    return grad + (Q + G + chol + inverses) / every + solves + extra + search


def replicated_flops(sizes, every: int = 1) -> dict:
    """The batch-independent FLOPs of a KFGN step per refresh: Cholesky factorisations, the two-sided solves
    (or, amortised, the two GEMMs with the cached inverses: as many FLOPs) and, with ``every`` > 1, the explicit
    inverses (a triangular solve against the identity and a symmetric product, ``2 n³`` per factor)."""
    dims = layer_dims(sizes)
    return {"chol": sum(((a + 1) ** 3 + b ** 3) / 3 for a, b in dims),
            "solves": sum(2 * (a + 1) ** 2 * b + 2 * b ** 2 * (a + 1) for a, b in dims),
            "inverses": sum(2 * ((a + 1) ** 3 + b ** 3) for a, b in dims) if every > 1 else 0}


class NumpyGemm:
    """numpy's ``n × n`` product, timed **interleaved** with our methods (:func:`time_methods`), so that the
    "of GEMM" fractions divide by the machine's speed while the steps ran (it drifts by ±10 % over minutes).

    Each round starts after a pause (:meth:`before_round`): right after a Numba step, the threads of SciPy's
    OpenBLAS (which Numba's products call) still spin, and numpy's own OpenBLAS ran at 200 GFLOP/s instead of 345
    (measured); half a second later they have stopped."""

    def __init__(self, n: int, dtype):
        self.a, self.b = np.random.rand(n, n).astype(dtype), np.random.rand(n, n).astype(dtype)
        self.flops = 2 * n ** 3

    def before_round(self):
        time.sleep(0.5)

    def step(self, *_):
        self.a @ self.b


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


CYCLE = 20  # T₂: one γ search and four T₁ steps (trial loss, λ update) in every 20 KFGN steps


def prepare_method(method, backend, dtype, X, Y, sizes_widths, classifier=False) -> dict:
    """Build and compile one method's optimiser (compile and JIT timed) and take one step; what
    :func:`time_methods` needs to time it."""
    loss = "mixture" if classifier else "bce"
    net = build_net(X.shape[1], Y.shape[1], sizes_widths, "tanh", 0, dtype, autoencoder=not classifier)
    kwargs = {"max_iters": 10} if method == "hf" else {}
    name = method
    if method == "kfra_amortised":
        name, kwargs = "kfra", {"curvature_every": 5, "inverse_every": 5}
    t = time.perf_counter()
    opt = make_optimizer(name, net, loss, backend=backend, **kwargs)
    opt.compile(example=(X, Y))
    compile_s = time.perf_counter() - t
    opt.step(X, Y)
    kfgn = name in ("kfra", "kfac", "kflr")
    every = 5 if method == "kfra_amortised" else 1
    return {"opt": opt, "batch": (X, Y), "kfgn": kfgn, "compile_s": compile_s, "sizes": net.sizes,
            "flops": flops(method, net.sizes, len(X), every, T2=CYCLE if kfgn else None)}


def time_methods(prepared: dict, reps: int, rounds: int = 3) -> dict:
    """Per-step times of prepared methods, **interleaved**: ``rounds`` rounds, each running every method in
    turn — a KFGN method a whole T₂ cycle of 20 steps (one γ search, four T₁ steps with the trial loss: what a
    run pays per step), HF ``max(1, reps // 5)`` steps, a first-order method ``reps`` steps — so that a drift of
    the machine's speed (±10 % over minutes here) falls on every method alike.

    Returns per method ``step_s`` (KFGN: the mean over its cycles; others: the median), ``median_s``,
    ``compile_s``, ``flops``, ``sizes`` and ``peak_rss_mb``.
    """
    times = {m: [] for m in prepared}
    for _ in range(rounds):
        for m, p in prepared.items():
            n = CYCLE if p["kfgn"] else (max(1, reps // 5) if m == "hf" else reps)
            if hasattr(p["opt"], "before_round"):
                p["opt"].before_round()
            for _ in range(n):
                t = time.perf_counter()
                p["opt"].step(*p["batch"])
                times[m].append(time.perf_counter() - t)
    out = {}
    for m, p in prepared.items():
        ts = times[m]
        out[m] = {"step_s": float(np.mean(ts) if p["kfgn"] else np.median(ts)), "median_s": float(np.median(ts)),
                  "compile_s": p["compile_s"], "flops": p["flops"], "peak_rss_mb": peak_rss_mb(),
                  "sizes": p["sizes"], "steps_timed": len(ts)}
    return out


def first_step_cold() -> float:
    """Seconds from process start to the end of the quick start's first KFRA step, empty caches (PyTensor's,
    JAX's, the generated CURVES), in a fresh process (:mod:`benchmarks.first_step`)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}", "PT_KFGN_DATA": f"{cache}/data"}
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
        out = subprocess.run([sys.executable, "-m", "benchmarks.first_step", "background"], env=env,
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["first_step_cold_s"]


def cold_compile(backend: str, dtype: str = "float32") -> dict:
    """Seconds to compile (and JIT, at batch 1000) every KFRA step kind of the MNIST autoencoder in a fresh
    process with an empty PyTensor cache (cold), then again in a fresh process with that cache (warm); the
    time to import pt_kfgn is included."""
    import os
    import subprocess
    import sys
    import tempfile

    code = ("import time, numpy as np, pt_kfgn as pk; t = time.perf_counter(); "
            "X = (np.random.default_rng(0).random((1000, 784)) < 0.13).astype('float32'); "
            f"pk.KFGN(pk.autoencoder(784, dtype='{dtype}'), 'bce', 'kfra', backend='{backend}')"
            ".compile(example=(X, X)); print(time.perf_counter() - t)")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={d}"}
        for label in ("cold", "warm"):
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
            out[f"compile_{label}_s"] = float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
    return out


def available_backends():
    """The default backend first (its ratios go to the report's top level), then the others installed."""
    out = ["numba", "c"] + (["jax"] if importlib.util.find_spec("jax") is not None else [])
    return sorted(out, key=lambda b: b != check_backend(None))


def _torch_autoencoder(X, widths=AE):
    """The autoencoder in torch (tanh hidden, linear code layer), extended for BackPACK, and the batch."""
    import torch
    from backpack import extend

    torch.manual_seed(0)
    dims = [X.shape[1], *widths, *widths[-2::-1], X.shape[1]]
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(dims) - 2 and i != len(widths) - 1:
            layers.append(torch.nn.Tanh())
    return extend(torch.nn.Sequential(*layers)), torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


class TorchGradient:
    """A torch gradient step on the same net and batch (squared error), timed **interleaved** with our methods
    (:func:`time_methods`): the ``adam_over_torch_grad`` peer."""

    def __init__(self, X, widths=AE):
        import torch
        from backpack import extend

        self.model, self.x = _torch_autoencoder(X, widths)
        self.lossf = extend(torch.nn.MSELoss(reduction="mean"))

    def step(self, *_):
        self.model.zero_grad()
        self.lossf(self.model(self.x), self.x).backward()


def torch_available() -> bool:
    return importlib.util.find_spec("backpack") is not None and importlib.util.find_spec("torch") is not None


def peers(X, reps: int) -> dict:
    """BackPACK's KFRA/KFAC factors with the gradient (CPU torch), when installed."""
    res = {}
    if not torch_available():
        return {"backpack": "not installed"}
    import torch
    from backpack import backpack, extend
    from backpack.extensions import KFAC, KFRA

    model, x = _torch_autoencoder(X)
    # squared error: BackPACK's KFRA does not implement BCEWithLogitsLoss (NotImplementedError, BackPACK 1.7);
    # the loss's share of the cost is negligible next to the layers' products
    lossf = extend(torch.nn.MSELoss(reduction="mean"))
    res["backpack_loss"] = "mse"
    for name, ext in (("grad", None), ("kfra", KFRA), ("kfac", KFAC)):
        ts = []
        for _ in range(reps + 1):
            model.zero_grad()
            t = time.perf_counter()
            loss = lossf(model(x), x)
            if ext is None:
                loss.backward()
            else:
                with backpack(ext()):
                    loss.backward()
            ts.append(time.perf_counter() - t)
        res[f"backpack_{name}_s"] = float(np.median(ts[1:]))
    return res


def _kfac_jax_adapter() -> None:
    """[ours] kfac-jax 0.0.8 unpacks ``Primitive.get_bind_params`` as ``(subfuns, params)``; the JAX installed here
    (0.10.2) returns the parameters alone, sub-functions included. This replaces kfac-jax's one-line equation
    evaluator (``tag_graph_matcher.eval_jaxpr_eqn``) by one that takes either form; nothing else of the peer
    is touched."""
    import jax.extend as jex
    from kfac_jax._src import tag_graph_matcher

    def eval_jaxpr_eqn(eqn, in_values):
        params = eqn.primitive.get_bind_params(eqn.params)
        subfuns, params = params if isinstance(params, tuple) else ((), params)
        with jex.source_info_util.user_context(eqn.source_info.traceback):
            out = eqn.primitive.bind(*subfuns, *in_values, **params)
        return out if isinstance(out, list) else [out]

    tag_graph_matcher.eval_jaxpr_eqn = eval_jaxpr_eqn


def kfac_jax_times(x_path: str, widths=AE, warmup: int = 10, steps: int = 20) -> dict:
    """kfac-jax's KFAC step on the same autoencoder and batch (tanh hidden, linear code layer, sigmoid
    cross-entropy, float32, ``l2_reg`` 1e-5 as our η), at its defaults (adaptive learning rate, momentum and
    damping; curvature every step) with inverses every step and every 5 (its default). Run in a fresh process
    (:func:`kfac_jax_peer`): JAX's x64 mode is then off, as a kfac-jax user has it.

    Per configuration: the first step (tracing and compiling), then the mean over ``steps`` steps after
    ``warmup`` (its damping adaptation every 5 steps compiles a second variant on the 5th), i.e. over whole
    5-step cycles, and the median.
    """
    import jax
    import jax.numpy as jnp
    import kfac_jax

    _kfac_jax_adapter()
    X = jnp.asarray(np.load(x_path).astype(np.float32))
    dims = layer_dims([X.shape[1], *widths, *widths[-2::-1], X.shape[1]])
    rng = np.random.default_rng(0)
    init = [(rng.standard_normal((a, b)).astype(np.float32) / np.sqrt(a), np.zeros(b, np.float32)) for a, b in dims]

    def loss(params, x):
        h = x
        for i, (W, b) in enumerate(params):
            h = h @ W + b
            if i < len(params) - 1 and i != len(widths) - 1:  # tanh, except on the code and output layers
                h = jnp.tanh(h)
        kfac_jax.register_sigmoid_cross_entropy_loss(h, x)
        return jnp.mean(jnp.sum(jnp.logaddexp(0, h) - x * h, axis=1))

    out = {"version": kfac_jax.__version__, "jax": jax.__version__, "x64": bool(jax.config.jax_enable_x64)}
    for key, period in (("every_step", 1), ("default", 5)):
        opt = kfac_jax.Optimizer(value_and_grad_func=jax.value_and_grad(loss), l2_reg=1e-5,
                                 use_adaptive_learning_rate=True, use_adaptive_momentum=True,
                                 use_adaptive_damping=True, initial_damping=1.0, multi_device=False,
                                 num_burnin_steps=0, inverse_update_period=period)
        rng_key = jax.random.PRNGKey(0)
        params = [tuple(jnp.asarray(a) for a in layer) for layer in init]  # fresh buffers: kfac-jax donates them
        t = time.perf_counter()
        state = opt.init(params, rng_key, X)
        ts = []
        for i in range(warmup + steps + 1):
            t0 = time.perf_counter()
            params, state, stats = opt.step(params, state, rng_key, batch=X, global_step_int=i)
            jax.block_until_ready(params)
            ts.append(time.perf_counter() - t0)
            if i == 0:
                out[f"{key}_first_step_s"] = time.perf_counter() - t
        timed = ts[warmup + 1:]
        out[f"{key}_s"], out[f"{key}_median_s"] = float(np.mean(timed)), float(np.median(timed))
        out[f"{key}_final_loss"] = float(stats["loss"])
    return out


def kfac_jax_peer(X, timeout: int = 900) -> dict | str:
    """:func:`kfac_jax_times` in a fresh process when kfac-jax is installed; else, or on failure, why not."""
    import os
    import subprocess
    import sys
    import tempfile

    if importlib.util.find_spec("kfac_jax") is None:
        return "not installed"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        np.save(path, X)
        code = ("import json; from benchmarks.steps import kfac_jax_times; "
                f"print('RESULT ' + json.dumps(kfac_jax_times({path!r})))")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                             check=False, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode or not line:  # an incompatible peer is reported, never fatal
        return f"kfac-jax failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"[:300]
    return json.loads(line[0][len("RESULT "):])


def main(quick: bool = False, json_path=None, backends=None, dtypes=None, reps=None, batch: int = 1000,
         widths=AE, methods=("adam", "kfra", "kfra_amortised", "kfac", "hf", "kflr"), dim: int = 784,
         cold: bool | None = None) -> dict:
    backends = backends or ([check_backend(None)] if quick else available_backends())
    dtypes = dtypes or (["float32"] if quick else ["float32", "float64"])
    reps = reps or (3 if quick else 10)
    rng = np.random.default_rng(0)
    X = (rng.random((batch, dim)) < 0.13).astype(np.float64)  # MNIST-like binary batch; timing only
    Yc = (rng.random((batch, 1)) < 0.5).astype(np.float64)
    report = {"machine": f"{platform.processor() or platform.machine()}, 2-core CPU", "date": str(date.today()),
              "batch": batch, "reps": reps, "runs": {}}
    for dtype in dtypes:
        gemms = []
        for be in backends:
            res, prepared = {}, {}
            for m in methods:  # compile every method first, then time them interleaved
                try:
                    if m == "kflr":
                        prepared[m] = prepare_method(m, be, dtype, X, Yc, widths, classifier=True)
                    else:
                        prepared[m] = prepare_method(m, be, dtype, X, X, widths)
                except Exception as err:  # a backend may lack an op: report it, go on
                    res[m] = {"error": f"{type(err).__name__}: {err}"[:300]}
            torch_peer = not quick and dtype == "float32" and be == backends[0] and torch_available()
            if torch_peer:  # the torch gradient step, timed interleaved with ours
                prepared["torch_grad"] = {"opt": TorchGradient(X, widths), "batch": (), "kfgn": False,
                                          "compile_s": 0.0, "sizes": None, "flops": None}
            numpy_gemm = NumpyGemm(1000, dtype)
            prepared["numpy_gemm"] = {"opt": numpy_gemm, "batch": (), "kfgn": False, "compile_s": 0.0, "sizes": None,
                                      "flops": numpy_gemm.flops}
            timed = time_methods(prepared, reps, rounds=1 if quick else 3)
            prepared.clear()
            gemm = numpy_gemm.flops / timed["numpy_gemm"]["step_s"] / 1e9
            gemms.append(gemm)
            if torch_peer:
                report["torch_grad_interleaved_s"] = timed["torch_grad"]["step_s"]
            for m in methods:
                res[m] = timed.get(m, res.get(m))
                if "step_s" in res[m]:
                    res[m]["gflops"] = res[m]["flops"] / res[m]["step_s"] / 1e9
                    res[m]["gemm_fraction"] = res[m]["gflops"] / gemm
                print(f"{dtype} {be} {m}: {res[m]}", flush=True)
            ok = {k: v for k, v in res.items() if "step_s" in v}
            ratios = {}
            for key, a, b in (("kfra_over_adam", "kfra", "adam"), ("kfra_amortised_over_adam", "kfra_amortised", "adam"),
                              ("kfac_over_kfra", "kfac", "kfra"), ("hf10_over_adam", "hf", "adam")):
                if a in ok and b in ok:
                    ratios[key] = ok[a]["step_s"] / ok[b]["step_s"]
            for m in ("kfra", "kfra_amortised"):  # the FLOP ratio beside each time ratio
                if m in ok and "adam" in ok:
                    ratios[f"{m}_flop_ratio"] = ok[m]["flops"] / ok["adam"]["flops"]
            for m in ("adam", "kfra"):
                if m in ok:
                    ratios[f"{m}_gemm_fraction"] = ok[m]["gemm_fraction"]
            report["runs"][f"{be}-{dtype}"] = {"methods": res, "ratios": ratios, "numpy_gemm_gflops": gemm}
        report[f"numpy_gemm_gflops_{dtype}"] = gemms[0]  # interleaved with the first backend's methods
    first = report["runs"].get(f"{backends[0]}-{dtypes[0]}", {}).get("ratios", {})
    report.update(first)  # the keys at the top level: the first backend and dtype of this run
    if cold if cold is not None else not quick:
        for be in backends:
            report[f"compile_{be}"] = cold_compile(be)
            print(f"compile {be}: {report[f'compile_{be}']}", flush=True)
        report["compile_cold_s"] = report[f"compile_{backends[0]}"]["compile_cold_s"]
        report["compile_warm_s"] = report[f"compile_{backends[0]}"]["compile_warm_s"]
        report["first_step_cold_s"] = first_step_cold()
    if not quick:
        try:
            report["peers"] = peers(X, reps)
        except Exception as err:  # a peer's failure is reported, never fatal
            report["peers"] = {"error": f"{type(err).__name__}: {err}"[:300]}
        ours = report["runs"].get(f"{backends[0]}-float32", {}).get("methods", {})  # the first backend's
        for mine, theirs in (("kfra", "kfra"), ("kfac", "kfac"), ("adam", "grad")):
            if f"backpack_{theirs}_s" in report["peers"] and "step_s" in ours.get(mine, {}):
                what = "gradient" if theirs == "grad" else f"{theirs}_factors"
                report["peers"][f"{mine}_step_over_backpack_{what}"] = (
                    ours[mine]["step_s"] / report["peers"][f"backpack_{theirs}_s"])
        if "torch_grad_interleaved_s" in report and "step_s" in ours.get("adam", {}):  # timed beside ours
            report["adam_over_torch_grad"] = ours["adam"]["step_s"] / report["torch_grad_interleaved_s"]
        elif "adam_step_over_backpack_gradient" in report["peers"]:  # BackPACK's gradient is a plain torch one
            report["adam_over_torch_grad"] = report["peers"]["adam_step_over_backpack_gradient"]
        kj = report["peers"]["kfac_jax"] = kfac_jax_peer(X)
        if isinstance(kj, dict):  # the keys: ours at our defaults against kfac-jax's
            for key, mine, theirs in (("kfra_over_kfacjax_kfac", "kfra", "every_step_s"),
                                      ("kfra_amortised_over_kfacjax_amortised", "kfra_amortised", "default_s"),
                                      ("kfra_default_over_kfacjax_default", "kfra", "default_s")):
                if "step_s" in ours.get(mine, {}):
                    report[key] = ours[mine]["step_s"] / kj[theirs]
    print_table(report)
    write_report(report, json_path)
    return report


def print_table(report: dict) -> None:
    print(f"\nbatch {report['batch']}, {report['machine']}, {report['date']}")
    print(f"{'backend-dtype':16} {'method':6} {'step ms':>9} {'compile s':>10} {'GFLOP/s':>8} {'of GEMM':>8}")
    for key, run in report["runs"].items():
        for m, r in run["methods"].items():
            if "step_s" in r:
                print(f"{key:16} {m:6} {1e3 * r['step_s']:9.1f} {r['compile_s']:10.1f} {r['gflops']:8.1f} "
                      f"{100 * r['gemm_fraction']:7.0f}%")
            else:
                print(f"{key:16} {m:6} {r['error'][:60]}")
        print(f"{key:16} ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in run["ratios"].items()))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the default backend, float32, 3 repetitions")
    p.add_argument("--json", default=None)
    p.add_argument("--backends", default=None, help="comma list of numba,c,jax")
    p.add_argument("--dtypes", default=None)
    p.add_argument("--reps", type=int, default=None)
    a = p.parse_args()
    main(a.quick, a.json, a.backends.split(",") if a.backends else None,
         a.dtypes.split(",") if a.dtypes else None, a.reps)
