"""Figure 3: the non-exponential-family mixture classifier on MNIST odd vs even.

D-1000-500-250-30-1 with the MIX-v0 likelihood ``μ(h) = ½σ(h) + ½σ(2h)`` [ours: eq. 27's exact form was lost];
KFLR vs KFRA vs KFAC (defaults) vs Adam (default lr and a small grid), per update and per second.

    python -m experiments.mixture --quick --out results/mixture
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.common import config_parser, dataset, grid_summary, logs_of, run
from pt_kfgn.plotting import plot_logs

CONFIGS = {
    "full": dict(n_train=50000, widths=(1000, 500, 250, 30), steps=5000, adam_steps=40000,
                 lrs=[2.0 ** -k for k in range(6, 14)], decay_fractions=[1.0, 0.5, 0.25, 0.125, 0.0625],
                 eval_every=100, batch_size=1000, eval_n=10000),
    "quick": dict(n_train=50000, widths=(1000, 500, 250, 30), steps=60, adam_steps=150,
                  lrs=[2.0 ** -8, 2.0 ** -10, 2.0 ** -12], decay_fractions=[1.0], eval_every=15,
                  batch_size=1000, eval_n=5000),
    "smoke": dict(n_train=200, widths=(8, 3), steps=3, adam_steps=4, lrs=[2.0 ** -8], decay_fractions=[1.0],
                  eval_every=2, batch_size=50, eval_n=100, backend="fast", dtype="float64"),
}


def main(config: str = "quick", out="results/mixture", **over) -> dict:
    cfg = {**CONFIGS[config], **over}
    out = Path(out)
    X, Y, loss, label = dataset("mnist-oddeven", cfg["n_train"])
    kw = dict(loss=loss, widths=cfg["widths"], autoencoder=False, eval_every=cfg["eval_every"],
              batch_size=cfg["batch_size"], backend=cfg.get("backend"), dtype=cfg.get("dtype", "float32"),
              X_eval=X[:cfg["eval_n"]], Y_eval=Y[:cfg["eval_n"]])
    res = {"dataset": label, "config": {k: v for k, v in cfg.items()}}
    for m in ("kflr", "kfra", "kfac"):
        res[m] = run(m, X, Y, out=out / m, steps=cfg["steps"], **kw)
    res["adam_default"] = run("adam", X, Y, out=out / "adam_default", steps=cfg["adam_steps"], lr=1e-3, **kw)
    grid = [dict(run("adam", X, Y, out=out / "grid" / f"lr{lr:g}_dp{int(f * cfg['adam_steps'])}",
                     steps=cfg["adam_steps"], lr=lr, decay_period=max(1, int(f * cfg["adam_steps"])), **kw),
                 tag=f"lr{lr:g}_dp{int(f * cfg['adam_steps'])}")
            for lr in cfg["lrs"] for f in cfg["decay_fractions"]]
    res["adam_grid"] = grid_summary(grid)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    logs = logs_of(out, ["kflr", "kfra", "kfac", "adam_default"])
    best = res["adam_grid"]["best"]
    if best:
        tag = next(g["tag"] for g in grid if g is best or g["final_train_loss"] == best["final_train_loss"])
        logs[f"adam best (lr {best['lr']:g})"] = logs_of(out / "grid", [tag])[tag]
    note = f"{label}; net {res['kfra']['sizes']}; tanh hidden [ours]; MIX-v0 likelihood [ours]"
    for x in ("step", "wall_time"):
        plot_logs({k.upper(): v for k, v in logs.items()}, out / f"loss_vs_{x}.png",
                  title="MNIST odd/even, mixture likelihood: training error", x=x, note=note)
    print(", ".join(f"{m} {res[m]['final_train_loss']:.4g}" for m in ("kflr", "kfra", "kfac", "adam_default")))
    return res


if __name__ == "__main__":
    p = config_parser(__doc__, "results/mixture")
    a = p.parse_args()
    main(a.config, a.out)
