"""Seconds from process start to the end of the first KFRA step and of step 40, at the quick start's size
(the path ``pt-kfgn train`` takes: CURVES generated beside the compilation).

    d=$(mktemp -d); PYTENSOR_FLAGS=base_compiledir=$d PT_KFGN_DATA=$d/data python -m benchmarks.first_step background

(or ``all``).  An empty ``base_compiledir`` empties PyTensor's cache and the JAX cache beside it, an empty
``PT_KFGN_DATA`` the generated images: a fresh machine.  ``all``
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
    # as ``pt-kfgn train`` does: the images are generated while the step compiles on a batch of zeros
    info = pk.data.dataset_info("curves", 2000)
    data = pk.data.load_dataset_in_background("curves", 2000)
    opt = pk.KFGN(pk.autoencoder(info.d_in), info.loss, "kfra")
    opt.compile(example=1000, background=mode == "background")
    compiled = time.perf_counter() - T0
    X, Y, _, _ = data()
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
