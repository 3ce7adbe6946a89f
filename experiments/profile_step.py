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

    python -m experiments.profile_step --json results/profile_step.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytensor.tensor as pt

from experiments.benchmarks import AE, flops
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
    deltas = stages.direction(stages.damped_inverse(factors, opt.gamma + eta), grads)
    if k == 4:
        return outs + deltas
    model = stages.quadratic_model(opt.chain, opt.loss, y, params, grads, deltas, opt.lam, eta)
    return outs + deltas + [model.alpha]


def main(reps: int = 10, batch: int = 1000, dtype: str = "float32", backend=None, json_path=None,
         widths=AE, dim: int = 784) -> dict:
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
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    main(a.reps, a.batch, a.dtype, a.backend, a.json)
