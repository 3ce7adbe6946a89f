"""Sensitivity of KFRA to its initial damping λ₀ [ours: the paper's λ₀ was not recovered; M&G used 150].

λ₀ ∈ {150, 15, 1.5, 0.15} with the default coupling γ₀ = λ₀ (ε₀ = λ₀ + η), everything else as in the figures
(the defaults, plus a problem's options in ``experiments.figures.PROBLEMS``: the mixture's factor moving average),
one seed: if the adaptive damping does what Appendix B promises, the runs forget their start.  Each run is
resumable; the table and ``sensitivity.png`` (training loss against updates, one line per λ₀) are rewritten
from the logs.

    python -m experiments.sensitivity --quick --out results/sensitivity
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.common import config_parser, dataset, run
from experiments.figures import PROBLEMS, options_text
from pt_kfgn.train import read_log

CONFIGS = {
    "quick": dict(datasets=("mnist-oddeven", "curves"), lams=(150.0, 15.0, 1.5, 0.15), steps=500, n_train=None,
                  eval_every=25, eval_n=10000, widths=(1000, 500, 250, 30), batch_size=1000),
    "full": dict(datasets=("mnist-oddeven", "curves", "mnist", "faces"), lams=(150.0, 15.0, 1.5, 0.15), steps=2000,
                 n_train=None, eval_every=50, eval_n=10000, widths=(1000, 500, 250, 30), batch_size=1000),
    "smoke": dict(datasets=("curves",), lams=(150.0, 1.5), steps=3, n_train=100, eval_every=3, eval_n=50,
                  widths=(6, 2), batch_size=50, backend="fast", dtype="float64"),
}


def main(config="quick", out="results/sensitivity", **over) -> dict:
    cfg = {**CONFIGS[config], **over}
    out, res = Path(out), {}
    for name in cfg["datasets"]:
        X, Y, loss, label = dataset(name, cfg["n_train"])
        logs = {}
        for lam in cfg["lams"]:
            d = out / name / f"lam{lam:g}"
            s = run("kfra", X, Y, loss, out=d, steps=cfg["steps"], widths=cfg["widths"],
                    autoencoder=name != "mnist-oddeven", eval_every=cfg["eval_every"], batch_size=cfg["batch_size"],
                    backend=cfg.get("backend"), dtype=cfg.get("dtype", "float32"), X_eval=X[:cfg["eval_n"]],
                    Y_eval=Y[:cfg["eval_n"]], resume=True, lam=lam, **PROBLEMS.get(name, {}).get("options", {}))
            res[f"{name}/lam{lam:g}"] = s["final_train_loss"]
            logs[f"λ₀ = {lam:g}"] = [r for r in read_log(d / "log.csv") if r["train_loss"] is not None]
            print(f"{label}: λ₀ = γ₀ = {lam:g}: training loss {s['final_train_loss']:.4g} after {s['steps']} steps",
                  flush=True)
        try:
            from pt_kfgn.plotting import plot_logs
        except ImportError:  # the optional plot extra
            continue
        plot_logs(logs, out / name / "sensitivity.png", title=f"{name}: KFRA against λ₀ (γ₀ = λ₀)",
                  note="[ours] one seed; everything else as in the figures" + (
                      f" ({options_text(PROBLEMS[name]['options'])})" if PROBLEMS.get(name, {}).get("options") else ""))
    (out / "sensitivity.json").write_text(json.dumps({"config": config, **res}, indent=2))
    return res


if __name__ == "__main__":
    a = config_parser(__doc__, "results/sensitivity").parse_args()
    main(a.config, a.out)
