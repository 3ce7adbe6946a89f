"""Sensitivity of KFRA to its initial dampings [ours: the paper's λ₀ was not recovered].

Two one-factor sweeps, so the effects are separated: λ₀ with γ₀ fixed at the default √(1.5 + η), and γ₀ with
λ₀ fixed at the default 1.5.  (The default couples them, γ₀ = √(λ₀ + η) [ours].)

    python -m experiments.sensitivity --quick --out results/sensitivity
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.common import config_parser, dataset, run

CONFIGS = {
    "quick": dict(datasets=("mnist-oddeven", "curves"), lams=(150.0, 15.0, 1.5), gammas=(12.25, 3.87, 0.387), steps=60, n_train=20000,
                  eval_every=15, eval_n=5000, widths=(1000, 500, 250, 30), batch_size=1000),
    "full": dict(datasets=("mnist-oddeven", "curves", "mnist", "faces"), lams=(150.0, 15.0, 1.5, 0.15),
                 gammas=(12.25, 3.87, 0.387, 0.122), steps=1000, n_train=None, eval_every=50, eval_n=10000, widths=(1000, 500, 250, 30),
                 batch_size=1000),
    "smoke": dict(datasets=("curves",), lams=(150.0, 1.5), gammas=(1.0,), steps=3, n_train=100, eval_every=3, eval_n=50,
                  widths=(6, 2), batch_size=50, backend="fast", dtype="float64"),
}


def main(config="quick", out="results/sensitivity", **over) -> dict:
    cfg = {**CONFIGS[config], **over}
    out, res = Path(out), {}
    for name in cfg["datasets"]:
        X, Y, loss, label = dataset(name, cfg["n_train"])
        default_lam = 1.5
        default_gamma = (default_lam + 1e-5) ** 0.5
        sweeps = [("lam", lam, {"lam": lam, "gamma": default_gamma}) for lam in cfg["lams"]]
        sweeps += [("gamma", g, {"lam": default_lam, "gamma": g}) for g in cfg["gammas"]]
        for which, value, kwargs in sweeps:
            s = run("kfra", X, Y, loss, out=out / name / f"{which}{value:g}", steps=cfg["steps"],
                    widths=cfg["widths"], autoencoder=name != "mnist-oddeven", eval_every=cfg["eval_every"],
                    batch_size=cfg["batch_size"], backend=cfg.get("backend"), dtype=cfg.get("dtype", "float32"),
                    X_eval=X[:cfg["eval_n"]], Y_eval=Y[:cfg["eval_n"]], **kwargs)
            res[f"{name}/{which}{value:g}"] = s["final_train_loss"]
            print(f"{label}: λ₀ = {kwargs['lam']:g}, γ₀ = {kwargs['gamma']:.3g}: training loss "
                  f"{s['final_train_loss']:.4g} after {s['steps']} steps")
    (out / "sensitivity.json").write_text(json.dumps({"config": config, **res}, indent=2))
    return res


if __name__ == "__main__":
    a = config_parser(__doc__, "results/sensitivity").parse_args()
    main(a.config, a.out)
