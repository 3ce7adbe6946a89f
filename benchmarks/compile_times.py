"""Cold and warm compile times per configuration a user tries first, and the time to the first step.

    python -m benchmarks.compile_times --json results/compile_times.json

Each configuration runs in a fresh process twice: first with empty PyTensor, JAX and data caches — a fresh
machine — then with the caches the first run left (warm).  The net is the quick start's (CURVES autoencoder, batch 1000,
float32, the default backend).  ``compile_s`` is what :meth:`Optimizer.compile` takes before training (for KFGN
with ``background=True``: the first step's kind only), ``first_step_s`` the seconds from process start to the
end of the first step.  Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CONFIGS = {
    "KFRA": dict(method="kfra"),
    "KFAC": dict(method="kfac"),
    "KFRA, curvature every 5": dict(method="kfra", curvature_every=5, inverse_every=5),
    "Adam": dict(method="adam"),
    "HF": dict(method="hf"),
}


def _worker(spec: dict) -> dict:
    t0 = time.perf_counter()
    import pt_kfgn as pk

    # as ``pt-kfgn train`` does: the images load (cold: are generated) while the step compiles
    info = pk.data.dataset_info("curves", 2000)
    data = pk.data.load_dataset_in_background("curves", 2000)
    spec = dict(spec)
    method = spec.pop("method")
    opt = pk.make_optimizer(method, pk.autoencoder(info.d_in), info.loss, **spec)
    t = time.perf_counter()
    opt.compile(example=1000, background=True)
    compile_s = time.perf_counter() - t
    X, Y, _, _ = data()
    opt.step(X[:1000], Y[:1000])
    return {"compile_s": round(compile_s, 1), "first_step_s": round(time.perf_counter() - t0, 1)}


def main(json_path=None) -> dict:
    res = {}
    for name, spec in CONFIGS.items():
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={cache}", "PT_KFGN_DATA": f"{cache}/data"}
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
            runs = []
            for _ in ("cold", "warm"):
                out = subprocess.run([sys.executable, "-m", "benchmarks.compile_times", "--_worker", json.dumps(spec)],
                                     env=env, capture_output=True, text=True, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        res[name] = {"cold": runs[0], "warm": runs[1]}
        print(f"{name}: {res[name]}", flush=True)
    lines = ["| configuration | compile, cold | first step, cold | compile, warm | first step, warm |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {r['cold']['compile_s']} s | {r['cold']['first_step_s']} s | {r['warm']['compile_s']} s | "
              f"{r['warm']['first_step_s']} s |" for n, r in res.items()]
    print("\n".join(lines))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(res, fh, indent=2)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    p.add_argument("--_worker")
    a = p.parse_args()
    if a._worker:
        print(json.dumps(_worker(json.loads(a._worker))))
    else:
        main(a.json)
