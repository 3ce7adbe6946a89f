"""Step times of the graphs users write (issue 27): a user's own loss, and a residual network.

1. **Your own loss**: the KFRA step with a Huber loss written as a ``pk.CustomLoss`` against the built-in squared
   error, on a 784-64-16-64-784 autoencoder at batch 64 and 256 (``huber_over_mse``); a loss that is a sum over
   outputs of an elementwise function is recognised and gets a diagonal ``H_L``.
2. **A residual network**: KFRA, KFAC and Adam on ``examples/residual_mlp.py``'s 784-128-3×[128]-10 MLP (every block
   ``a ← tanh(a W + b) + a``) against the same widths without the skips (``residual_over_chain`` per method).

Every row's steps are timed interleaved with its baseline (:func:`benchmarks.steps.time_methods`), on the default
backend; only the ratios mean anything across machines.

    python -m benchmarks.graphs --json results/bench_graphs.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
from pathlib import Path

import numpy as np
import pytensor.tensor as pt

import pt_kfgn as pk
from benchmarks import write_report
from benchmarks.steps import time_methods
from pt_kfgn.backend import default_backend

DELTA = np.float32(1.0)  # in the graph's dtype


def huber(h, y, delta=DELTA):
    r = pt.abs(h - y)
    return pt.switch(r < delta, 0.5 * r ** 2, delta * (r - 0.5 * delta)).sum(axis=1)


def _prepared(opt, X, Y, kfgn=True):
    opt.compile(example=(X, Y))
    opt.step(X, Y)
    return {"opt": opt, "batch": (X, Y), "kfgn": kfgn, "compile_s": float("nan"), "flops": float("nan"),
            "sizes": list(opt.net.sizes)}


def own_loss(batch: int, reps: int) -> dict:
    r = np.random.default_rng(0)
    X = r.random((batch, 784), dtype=np.float32)
    prepared = {}
    for name, loss in (("mse", "mse"), ("huber", pk.CustomLoss(huber, name="huber"))):
        net = pk.mlp([784, 64, 16, 64, 784], ["tanh", "identity", "tanh", "identity"], dtype="float32")
        prepared[name] = _prepared(pk.KFGN(net, loss, "kfra"), X, X)
    t = time_methods(prepared, reps)
    return {"batch": batch, "mse_step_s": t["mse"]["step_s"], "huber_step_s": t["huber"]["step_s"],
            "huber_over_mse": t["huber"]["step_s"] / t["mse"]["step_s"]}


def _residual_mlp():
    path = Path(__file__).resolve().parents[1] / "examples" / "residual_mlp.py"
    spec = importlib.util.spec_from_file_location("residual_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.residual_mlp


def residual(batch: int, reps: int) -> dict:
    r = np.random.default_rng(0)
    X = r.random((batch, 784), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[r.integers(0, 10, batch)]
    build = _residual_mlp()
    prepared = {}
    for method in ("adam", "kfra", "kfac"):
        for kind in ("residual", "chain"):
            if kind == "residual":
                net = build(784, 128, 3, 10)
            else:
                net = pk.mlp([784, 128, 128, 128, 128, 10], ["tanh"] * 4 + ["identity"], dtype="float32")
            prepared[f"{method}_{kind}"] = _prepared(pk.make_optimizer(method, net, "softmax_ce"), X, Y,
                                                     kfgn=method != "adam")
    t = time_methods(prepared, reps)
    out = {"batch": batch}
    for method in ("adam", "kfra", "kfac"):
        out[f"{method}_residual_step_s"] = t[f"{method}_residual"]["step_s"]
        out[f"{method}_residual_over_chain"] = t[f"{method}_residual"]["step_s"] / t[f"{method}_chain"]["step_s"]
    for method in ("kfra", "kfac"):
        out[f"{method}_over_adam_residual"] = t[f"{method}_residual"]["step_s"] / t["adam_residual"]["step_s"]
    return out


def main(json_path=None, reps: int = 20) -> dict:
    report = {"machine": platform.processor() or platform.machine(), "backend": default_backend(),
              "own_loss": [own_loss(b, reps) for b in (64, 256)], "residual": residual(1000, reps)}
    print(json.dumps(report, indent=2))
    write_report(report, json_path)
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args()
    main(a.json, a.reps)
