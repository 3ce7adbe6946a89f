"""Data-parallel KFGN past this machine: bytes all-reduced, FLOPs per device, predicted step time and parallel
efficiency on 1-64 GPUs, from the layer sizes and stated assumptions; and step times measured on simulated
CPU devices (which share this machine's two cores: a check of the mechanism, not of speed-up).

The model [ours]: a step's work splits into a **data-parallel** part (forward, backward, ``ĀᵀĀ``, ``E[f'f'ᵀ]``
or KFAC's sampled factor, the forward-mode product for α*, the trial loss: all proportional to the batch and
divided over P devices) and a **replicated** part (KFRA's ``W Ḡ Wᵀ`` recursion, the Cholesky factorisations and
the two-sided solves: the same on every device).  The all-reduce (ring) moves ``2 (P−1)/P × bytes`` per device
at the link's bandwidth plus ``2 (P−1)`` latencies; bytes = the gradient plus the factor statistics
(``Q`` for every layer, ``E[f'f'ᵀ]`` for KFRA, the sampled ``G`` for KFAC), float32.  With amortised
curvature (every k steps) the factor all-reduce and the replicated factorisations are paid every k steps.

    python -m benchmarks.scaling --out results/scaling.json            # the model
    python -m benchmarks.scaling --simulate 4 --out results/scaling.json   # and simulated devices (JAX, CPU)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from benchmarks import write_report
from benchmarks.steps import flops, layer_dims, replicated_flops

# [assumed] one GPU's sustained float32 rate on these GEMMs, and the all-reduce links
ASSUMPTIONS = {
    "device_flops": 25e12,  # sustained FP32/TF32 GEMM rate of one H100-class GPU on 1000-wide layers [assumed]
    "intra_host_bandwidth": 300e9,  # bytes/s per GPU over NVLink, up to 8 GPUs per host [assumed]
    "inter_host_bandwidth": 25e9,  # bytes/s per GPU over 200 Gb/s InfiniBand beyond one host [assumed]
    "latency": 10e-6,  # seconds per all-reduce hop [assumed]
    "gpus_per_host": 8,
    "bytes_per_number": 4,
}
NETS = {"paper autoencoder 784-1000-500-250-30-…-784": (784, 1000, 500, 250, 30, 250, 500, 1000, 784),
        "10x wider 784-10000-5000-2500-300-…-784": (784, 10000, 5000, 2500, 300, 2500, 5000, 10000, 784)}
METHODS = {"adam": ("adam", 1), "kfra": ("kfra", 1), "kfra, curvature every 5": ("kfra", 5), "kfac": ("kfac", 1)}
DEVICES = (1, 2, 4, 8, 16, 32, 64)


def split_flops(method: str, sizes, N: int, every: int) -> tuple[float, float]:
    """(data-parallel FLOPs for the whole batch, replicated FLOPs) of one step (averaged over ``every``)."""
    total = flops(method, sizes, N, every)
    if method == "adam":
        return total, 0.0
    dims = layer_dims(sizes)
    rep = replicated_flops(sizes, every)
    recursion = 0.0
    if method == "kfra":  # W Ḡ Wᵀ: independent of the batch
        a_L, b_L = dims[-1]
        recursion = 2 * a_L * a_L * b_L + sum(2 * b * b * a + 2 * b * a * a for a, b in dims[1:-1])
    replicated = (rep["chol"] + rep["inverses"] + recursion) / every + rep["solves"]
    return total - replicated, replicated


def allreduce_bytes(method: str, sizes, every: int) -> float:
    """Bytes one step all-reduces: the gradient every step, the factor statistics every ``every`` steps."""
    dims = layer_dims(sizes)
    grad = sum((a + 1) * b for a, b in dims)
    stats = 0.0
    if method != "adam":
        stats = sum((a + 1) ** 2 for a, _ in dims)  # ĀᵀĀ
        stats += sum(a * a for a, _ in dims[1:]) if method == "kfra" else sum(b * b for _, b in dims)
    return ASSUMPTIONS["bytes_per_number"] * (grad + stats / every)


def predict(method: str, sizes, N: int, every: int, P: int) -> dict:
    par, rep = split_flops(method, sizes, N, every)
    A = ASSUMPTIONS
    compute = par / (P * A["device_flops"]) + rep / A["device_flops"]
    nbytes = allreduce_bytes(method, sizes, every)
    bw = A["intra_host_bandwidth"] if P <= A["gpus_per_host"] else A["inter_host_bandwidth"]
    comm = 0.0 if P == 1 else 2 * (P - 1) / P * nbytes / bw + 2 * (P - 1) * A["latency"]
    return {"devices": P, "flops_per_device": par / P + rep, "allreduce_bytes": nbytes, "compute_s": compute,
            "allreduce_s": comm, "step_s": compute + comm}


def model(batch: int = 1000) -> dict:
    """Strong scaling (the paper's batch split over P devices) and weak scaling (``batch`` per device)."""
    out = {"assumptions": ASSUMPTIONS, "batch": batch, "nets": {}, "weak": {}}
    for net, sizes in NETS.items():
        strong, weak = {}, {}
        for label, (method, every) in METHODS.items():
            preds = [predict(method, sizes, batch, every, P) for P in DEVICES]
            wpreds = [predict(method, sizes, batch * P, every, P) for P in DEVICES]
            for p in preds:
                p["efficiency"] = preds[0]["step_s"] / (p["devices"] * p["step_s"])
            for p in wpreds:
                p["efficiency"] = wpreds[0]["step_s"] / p["step_s"]
            strong[label], weak[label] = preds, wpreds
        out["nets"][net], out["weak"][net] = strong, weak
    return out


def simulate(n_devices: int, reps: int = 5) -> dict:
    """KFRA and Adam step times on 1..n simulated CPU devices (run in a subprocess: XLA_FLAGS must be set
    before jax is imported)."""
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--_worker", str(n_devices), "--reps", str(reps)],
                         env=env, capture_output=True, text=True, check=False)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    if res.returncode or not line:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(line[0][len("RESULT "):])


def _worker(n_devices: int, reps: int) -> None:
    import numpy as np

    from pt_kfgn.graph.layers import build_net
    from pt_kfgn.optim import make_optimizer

    rng = np.random.default_rng(0)
    X = (rng.random((1000, 784)) < 0.13).astype(np.float32)
    out = {"note": "simulated devices share this machine's cores: no speed-up is expected", "steps": {}}
    for method in ("adam", "kfra"):
        for P in sorted({1, 2, n_devices}):
            net = build_net(784, 784, (1000, 500, 250, 30), "tanh", 0, "float32", True)
            opt = make_optimizer(method, net, "bce", backend="jax", devices=P)
            opt.compile(example=(X, X))
            opt.step(X, X)
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                opt.step(X, X)
                ts.append(time.perf_counter() - t)
            out["steps"][f"{method}, {P} simulated device(s)"] = float(np.median(ts))
    print("RESULT " + json.dumps(out))


def print_table(report: dict) -> None:
    for key, how in (("nets", "strong scaling: the batch split over P"), ("weak", "weak scaling: the batch per device")):
        for net, rows in report[key].items():
            print(f"\n{net}, batch {report['batch']} ({how}); step time and efficiency")
            print(f"{'method':26s} {'MB all-reduced':>14s} " + " ".join(f"{'P=' + str(P):>13s}" for P in DEVICES))
            for label, preds in rows.items():
                cells = " ".join(f"{p['step_s'] * 1e3:8.1f}ms {p['efficiency']:3.0%}" for p in preds)
                print(f"{label:26s} {preds[0]['allreduce_bytes'] / 1e6:14.1f} {cells}")


def main(out=None, simulate_devices: int | None = None) -> dict:
    report = model()
    if simulate_devices:
        report["simulated"] = simulate(simulate_devices)
    print_table(report)
    if "simulated" in report:
        print("\nsimulated CPU devices (labelled simulation):", json.dumps(report["simulated"]["steps"], indent=1))
    write_report(report, out)
    return report


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None)
    p.add_argument("--simulate", type=int, default=None, help="also time steps on this many simulated CPU devices")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--_worker", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._worker:
        _worker(a._worker, a.reps)
    else:
        main(a.out, a.simulate)
