"""Seconds from process start to the end of the first KFRA step and of step 40, at the quick start's size.

    PYTENSOR_FLAGS=base_compiledir=$(mktemp -d) python -m benchmarks.first_step background   # or: all

An empty ``base_compiledir`` empties PyTensor's cache and the JAX cache beside it (a fresh machine).  ``all``
compiles every step kind before the first step; ``background`` only the first step's kind, the others in a
background thread (:meth:`pt_kfgn.KFGN.compile`).  Prints one JSON line.
"""

import time

T0 = time.perf_counter()

import json
import sys

import numpy as np

import pt_kfgn as pk


def main(mode: str = "background", steps: int = 40) -> dict:
    X, Y, loss, _ = pk.data.load_dataset("curves", n_train=2000)
    opt = pk.KFGN(pk.autoencoder(784), loss, "kfra")
    opt.compile(example=(X[:1000], Y[:1000]), background=mode == "background")
    compiled = time.perf_counter() - T0
    rng = np.random.default_rng(0)
    for t in range(steps):
        idx = rng.choice(len(X), 1000, replace=False)
        opt.step(X[idx], Y[idx])
        if t == 0:
            first = time.perf_counter() - T0
    return {"mode": mode, "compiled_s": round(compiled, 1), "first_step_cold_s": round(first, 1),
            f"step{steps}_s": round(time.perf_counter() - T0, 1)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "background")))
