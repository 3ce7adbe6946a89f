"""The GPU benchmark (issue 28): the MNIST autoencoder's steps on one accelerator with the JAX backend.

Per batch size (1000 and 4000), in one process: every method is compiled first (``first_step_s``: from the start of
its compilation to the end of its first step; at the second batch size only XLA retraces), then timed interleaved (:func:`benchmarks.steps.time_methods`:
a KFGN method a whole T₂ cycle per round), beside a float32 product of JAX on the same device
(``device_gemm_tflops``).  kfac-jax's KFAC step is timed on the same device when it is installed.  One JSON.

    python -m benchmarks.gpu --json gpu.json               # on the GPU machine (benchmarks/gpu.sh)
    python -m benchmarks.gpu --cpu --json /tmp/gpu.json    # the same script end to end on CPU, tiny
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

METHODS = ("adam", "kfra", "kfra_amortised", "kfac", "hf", "kflr")


class DeviceGemm:
    """An ``n × n`` float32 product of JAX on the default device, synchronised: the device's product rate."""

    def __init__(self, n: int):
        import jax
        import jax.numpy as jnp

        k = jax.random.split(jax.random.PRNGKey(0))
        self.a, self.b = (jax.random.normal(key, (n, n), jnp.float32) for key in k)
        self.mm = jax.jit(lambda a, b: a @ b)
        self.mm(self.a, self.b).block_until_ready()
        self.flops = 2 * n ** 3

    def step(self, *_):
        self.mm(self.a, self.b).block_until_ready()


def run(batches, widths, dim: int, reps: int, rounds: int, kfac_jax: bool) -> dict:
    import jax

    from benchmarks.steps import CYCLE, flops, kfac_jax_peer, prepare_method, time_methods

    dev = jax.devices()[0]
    report = {"date": str(date.today()), "device": f"{dev.platform}: {dev.device_kind}", "jax": jax.__version__,
              "python": platform.python_version(), "widths": list(widths), "reps": reps, "rounds": rounds, "batches": {}}
    try:
        import pytensor

        report["pytensor"] = pytensor.__version__
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    prepared = {}
    for batch in batches:
        X = (rng.random((batch, dim)) < 0.13).astype(np.float64)  # MNIST-like binary batch; timing only
        Yc = (rng.random((batch, 1)) < 0.5).astype(np.float64)
        res = {}
        for m in METHODS:  # each optimiser is built once; a new batch size only retraces and recompiles XLA
            Y = Yc if m == "kflr" else X
            t = time.perf_counter()
            try:
                if m in prepared:
                    opt = prepared[m]["opt"]
                    Xc, Yk = opt.check(X, Y)
                    opt.compile(example=(Xc, Yk))  # every step kind at the new shape (PyTensor's graphs are kept)
                    opt.step(Xc, Yk)
                    prepared[m]["batch"] = (Xc, Yk)
                else:
                    prepared[m] = prepare_method(m, "jax", "float32", X, Y, widths, classifier=m == "kflr")
                res[m] = {"first_step_s": time.perf_counter() - t}
            except Exception as err:
                prepared.pop(m, None)
                res[m] = {"error": f"{type(err).__name__}: {err}"[:400]}
            print(f"batch {batch} {m}: prepared {res[m]}", flush=True)
        gemm = DeviceGemm(4096 if dev.platform == "gpu" else 512)
        timing = {**prepared, "device_gemm": {"opt": gemm, "batch": (), "kfgn": False, "compile_s": 0.0,
                                              "sizes": None, "flops": gemm.flops}}
        for m, p in prepared.items():  # the FLOP count at this batch size
            every = 5 if m == "kfra_amortised" else 1
            p["flops"] = flops(m, p["sizes"], batch, every, T2=CYCLE if p["kfgn"] else None)
        timed = time_methods(timing, reps, rounds)
        gemm_tflops = gemm.flops / timed.pop("device_gemm")["step_s"] / 1e12
        for m, r in timed.items():
            r.pop("sizes", None)
            res[m].update(r, tflops=r["flops"] / r["step_s"] / 1e12)
            print(f"batch {batch} {m}: {1e3 * r['step_s']:.2f} ms", flush=True)
        ok = {m: r for m, r in res.items() if "step_s" in r}
        ratios = {f"{a}_over_{b}": ok[a]["step_s"] / ok[b]["step_s"]
                  for a, b in (("kfra", "adam"), ("kfra_amortised", "adam"), ("kfac", "kfra"), ("hf", "adam"))
                  if a in ok and b in ok}
        entry = {"methods": res, "ratios": ratios, "device_gemm_tflops": gemm_tflops}
        if kfac_jax:
            kj = kfac_jax_peer(X, timeout=300)
            entry["kfac_jax"] = kj
            if isinstance(kj, dict) and "kfra" in ok:
                entry["ratios"]["kfra_over_kfacjax_kfac_every_step"] = ok["kfra"]["step_s"] / kj["every_step_s"]
                entry["ratios"]["kfra_default_over_kfacjax_default"] = ok["kfra"]["step_s"] / kj["default_s"]
            print(f"batch {batch} kfac-jax: {kj}", flush=True)
        report["batches"][str(batch)] = entry
    return report


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None)
    p.add_argument("--cpu", action="store_true", help="a tiny end-to-end run on CPU (checks the script)")
    p.add_argument("--batches", default=None, help="comma list, default 1000,4000 (--cpu: 64)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-kfac-jax", action="store_true")
    a = p.parse_args(argv)
    if a.cpu:
        os.environ["JAX_PLATFORMS"] = "cpu"
    batches = [int(b) for b in (a.batches or ("64" if a.cpu else "1000,4000")).split(",")]
    widths, dim = ((16, 8, 4), 32) if a.cpu else ((1000, 500, 250, 30), 784)
    t0 = time.perf_counter()
    report = run(batches, widths, dim, 2 if a.cpu else a.reps, 1 if a.cpu else a.rounds,
                 kfac_jax=not a.no_kfac_jax and not a.cpu)
    report["wall_s"] = time.perf_counter() - t0
    report["argv"] = sys.argv[1:]
    text = json.dumps(report, indent=2)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text)
    print(text)
    return report


if __name__ == "__main__":
    main()
