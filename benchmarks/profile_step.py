"""Where the time of a KFRA step goes (issue 5's profile): cumulative ablation on the MNIST autoencoder.

The JAX and Numba backends compile a whole step into one function, so PyTensor's per-op profiler
does not apply; instead each stage's graph is compiled *cumulatively* (stage k computes stages 1..k) and
timed in the same process, and the difference between consecutive stages is that stage's cost:

1. loss and gradient (with weight decay) — the work of a first-order step;
2. + input factors ``Q_λ = ĀᵀĀ / N`` (eq. 21);
3. + KFRA output factors (eq. 26);
4. + the direction ``δ`` by factored Tikhonov damping (Cholesky solves, eq. 35-38);
5. + ``δᵀḠδ`` by forward mode for α* (eq. 41);
6. the full compiled step (adds the guarded in-place update, and the trial loss at θ + α*δ on T₁ steps),
   beside an Adam step on the same batch.

    python -m benchmarks.profile_step --json results/profile_step.json

``--trace`` (JAX only) adds a second view that needs no ablation: the compiled step is run under JAX's profiler and
XLA's own op events are sorted into kinds — matrix products, LAPACK's triangular solves and Cholesky
factorisations, and the rest (elementwise fusions, layout copies, concatenations) — with the wall time per step
during which at least one op of a kind is in flight (from its trace event to its completion marker), and the time
during which none is (dispatch, Python). XLA runs independent ops on both cores at once, so the kinds overlap and
do not add up to the step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytensor.tensor as pt

from benchmarks import write_report
from benchmarks.steps import AE, flops
from pt_kfgn.backend import compile_function, floatx
from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim import make_optimizer, stages
from pt_kfgn.optim.base import regularised_objective

STAGES = ("gradient", "input factors Q", "KFRA factors G", "Cholesky solves", "forward-mode dᵀGd")


def _median_time(fn, args, reps):
    def call():  # JAX dispatches asynchronously: wait for the results
        out = fn(*args)
        for o in out if isinstance(out, (list, tuple)) else [out]:
            getattr(o, "block_until_ready", lambda: None)()

    call()
    call()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        call()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def stage_outputs(opt, k: int):
    """The outputs that make stage ``k`` (1-based) compute stages 1..k, from :mod:`pt_kfgn.optim.stages`."""
    y, params, eta = opt.y, opt.params, opt.eta
    _, f0 = regularised_objective(opt.loss, opt.chain, y, eta)
    grads = pt.grad(f0, params)
    outs = [f0, *grads]
    if k == 1:
        return outs
    factors = stages.curvature(opt.chain, opt.loss, y, opt.method, opt._noise)
    if k == 2:
        return outs + [Q for Q, _ in factors]
    if k == 3:
        return outs + [m for pair in factors for m in pair]
    deltas = stages.direction(opt.chain, stages.damped_inverse(factors, opt.gamma + eta), grads)
    if k == 4:
        return outs + deltas
    model = stages.quadratic_model(opt.chain, opt.loss, y, params, grads, deltas, opt.lam, eta)
    return outs + deltas + [model.alpha]


# XLA CPU op names (an HLO instruction's name without its numeric suffix) → the kind of work [ours]
OP_KINDS = (("matrix products", ("ynn_fusion", "dot", "onednn", "xnn")),
            ("triangular solves (LAPACK)", ("triangular_solve",)),
            ("Cholesky factorisations (LAPACK)", ("cholesky",)))
OTHER_OPS = "elementwise, copies, concatenations"
_NOT_OPS = ("ThunkExecutor", "end:", "Threadpool", "H2D", "Slinky", "Wait", "$")


def op_kind(name: str) -> str | None:
    """The kind of an XLA CPU trace event (:data:`OP_KINDS`, else :data:`OTHER_OPS`); None for the runtime's own
    events (thunk executor, thread pools, transfers, Python)."""
    if name.startswith(_NOT_OPS):
        return None
    for kind, prefixes in OP_KINDS:
        if name.startswith(prefixes):
            return kind
    return OTHER_OPS


def in_flight(starts: dict, ends: dict) -> list:
    """``(start, end, kind)`` of every op call: ``starts`` maps an op's name to its events ``(start, end, kind)``,
    ``ends`` to the times of its completion markers; a call ends at its event's end or at its marker, whichever is
    later. The calls of an op (one per step) pair with its markers in order; an op whose markers do not pair up
    keeps its events' ends."""
    calls = []
    for name, group in starts.items():
        group = sorted(group)
        marks = sorted(ends.get(name, ()))
        if len(marks) != len(group):
            marks = [0] * len(group)
        calls += [(start, max(end, mark), kind) for (start, end, kind), mark in zip(group, marks)]
    return calls


def trace_breakdown(step, args, reps: int, resolution_us: float = 20.0) -> dict:
    """Wall ms per call of ``step(*args)`` during which at least one XLA op of each kind is in flight, and during
    which none is, from a JAX profiler trace of ``reps`` calls (after two untraced ones).

    An op is in flight from the start of its trace event to its completion marker (``end: <name>``): XLA's Eigen
    products return from their event after handing the work to the thread pool, and complete later, so their
    events alone would show the cores idle while they run. In-flight time includes an op's wait for a free core.
    """
    import tempfile

    import jax

    step(*args)
    step(*args)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        t = time.perf_counter()
        for _ in range(reps):
            step(*args)
        wall = (time.perf_counter() - t) / reps
        jax.profiler.stop_trace()
        (path,) = Path(tmp).rglob("*.xplane.pb")
        data = jax.profiler.ProfileData.from_file(str(path))
    starts, ends = {}, {}
    for e in (e for plane in data.planes if plane.name == "/host:CPU" for line in plane.lines
              if not line.name.startswith("python") for e in line.events):
        if e.name.startswith("end: "):
            ends.setdefault(e.name[5:], []).append(e.start_ns)
        elif (kind := op_kind(e.name)) is not None:
            starts.setdefault(e.name, []).append((e.start_ns, e.start_ns + e.duration_ns, kind))
    if not starts:
        raise RuntimeError("the trace holds no XLA CPU op events (is the step compiled by JAX on CPU?)")
    events = in_flight(starts, ends)
    t0, res = min(e[0] for e in events), resolution_us * 1e3
    n = int((max(e[1] for e in events) - t0) / res) + 2
    kinds = [k for k, _ in OP_KINDS] + [OTHER_OPS]
    busy = {k: np.zeros(n, bool) for k in kinds}
    for start, end, kind in events:
        busy[kind][int((start - t0) / res):int((end - t0) / res) + 1] = True
    any_op = np.any(list(busy.values()), axis=0)
    per_step = res / 1e6 / reps
    return {"step_ms": 1e3 * wall, "traced_steps": reps,
            "kinds": {k: float(busy[k].sum() * per_step) for k in kinds},
            "no_op_running_ms": float((~any_op).sum() * per_step) + max(0.0, 1e3 * wall - n * per_step)}


def main(reps: int = 10, batch: int = 1000, dtype: str = "float32", backend=None, json_path=None,
         widths=AE, dim: int = 784, trace: bool = False) -> dict:
    if trace and backend != "jax":
        raise ValueError("--trace reads XLA's op events: it needs --backend jax")
    rng = np.random.default_rng(0)
    X = (rng.random((batch, dim)) < 0.13).astype(dtype)  # MNIST-like binary batch; timing only
    net = build_net(dim, dim, widths, "tanh", 0, dtype, autoencoder=True)
    kfra = make_optimizer("kfra", net, "bce", backend=backend, gamma_search=False)
    times = {}
    with floatx(dtype):
        for k in range(1, len(STAGES) + 1):
            fn = compile_function([net.X, kfra.y], stage_outputs(kfra, k), backend=backend)
            times[k] = _median_time(fn, (X, X), reps)
            print(f"stage {k} ({STAGES[k - 1]}): cumulative {1e3 * times[k]:.1f} ms", flush=True)
    state = kfra.state_dict()
    times["step"] = _median_time(kfra.step, (X, X), reps)
    kfra.load_state_dict(state)
    traced = None
    if trace:
        traced = trace_breakdown(kfra.step, (X, X), reps)
        kfra.load_state_dict(state)
    adam = make_optimizer("adam", build_net(dim, dim, widths, "tanh", 0, dtype, autoencoder=True), "bce",
                          backend=backend)
    times["adam"] = _median_time(adam.step, (X, X), reps)
    rows, prev = [], 0.0
    for k, name in enumerate(STAGES, start=1):
        rows.append({"stage": name, "ms": 1e3 * (times[k] - prev), "cumulative_ms": 1e3 * times[k]})
        prev = times[k]
    rows.append({"stage": "trial loss + guarded update (rest of the step)", "ms": 1e3 * (times["step"] - prev),
                 "cumulative_ms": 1e3 * times["step"]})
    report = {"batch": batch, "dtype": dtype, "backend": backend or "numba", "reps": reps, "rows": rows,
              "kfra_step_ms": 1e3 * times["step"], "adam_step_ms": 1e3 * times["adam"],
              "kfra_over_adam": times["step"] / times["adam"],
              "flops_kfra_over_adam": flops("kfra", net.sizes, batch) / flops("adam", net.sizes, batch)}
    print(f"\n{'stage':48} {'ms':>8} {'of step':>8}")
    for r in rows:
        print(f"{r['stage']:48} {r['ms']:8.1f} {100 * r['ms'] / report['kfra_step_ms']:7.0f}%")
    print(f"{'KFRA step':48} {report['kfra_step_ms']:8.1f}\n{'Adam step':48} {report['adam_step_ms']:8.1f}")
    print(f"KFRA / Adam {report['kfra_over_adam']:.2f} (FLOP ratio {report['flops_kfra_over_adam']:.2f})")
    if traced is not None:
        report["trace"] = traced
        print(f"\nXLA's ops in flight, by kind (JAX profiler, {reps} steps, mean step {traced['step_ms']:.1f} ms; "
              "kinds overlap on the two cores)")
        for kind, ms in [*traced["kinds"].items(), ("no XLA op in flight", traced["no_op_running_ms"])]:
            print(f"{kind:48} {ms:8.1f}")
    write_report(report, json_path)
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--trace", action="store_true", help="also sort XLA's ops by kind from a JAX profiler trace")
    a = p.parse_args()
    main(a.reps, a.batch, a.dtype, a.backend, a.json, trace=a.trace)
