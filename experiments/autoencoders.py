"""Figure 2: deep autoencoders on CURVES, FACES, MNIST — KFRA and KFAC (defaults) against Adam.

Adam: the default learning rate 1e-3, the best point of a grid of learning rates 2^-6 … 2^-13 × decay periods
(fractions of the run) and the mean of the top-10 / top-20 grid points.  Training error per update and per
wall-clock second.  ``--quick`` runs a reduced setting in minutes on a 2-core CPU; every figure carries the
settings it was made with.

    python -m experiments.autoencoders --quick --datasets curves --out results/autoencoders
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments.common import config_parser, dataset, grid_summary, logs_of, mean_curve, run
from pt_kfgn.plotting import plot_logs

CONFIGS = {
    # [paper] sizes and batch; run lengths are reconstructions (notes.md §8); grid [reconstructed]
    "full": dict(n_train={"curves": 20000, "mnist": 50000, "faces": None}, steps=5000, adam_steps=20000,
                 lrs=[2.0 ** -k for k in range(6, 14)], decay_fractions=[1.0, 0.5, 0.25, 0.125, 0.0625],
                 widths=(1000, 500, 250, 30), eval_every=100, batch_size=1000, eval_n=10000),
    # [ours] minutes on a 2-core CPU: fewer steps, a 3-point grid, training loss on 5,000 points
    "quick": dict(n_train={"curves": 20000, "mnist": 50000, "faces": 20000}, steps=60, adam_steps=150,
                  lrs=[2.0 ** -6, 2.0 ** -9, 2.0 ** -12], decay_fractions=[1.0],
                  widths=(1000, 500, 250, 30), eval_every=15, batch_size=1000, eval_n=5000),
    # [ours] the test suite's smoke run: a tiny net, a few steps, the fast-compiling backend
    "smoke": dict(n_train={"curves": 200, "mnist": 200, "faces": 200}, steps=3, adam_steps=4,
                  lrs=[2.0 ** -6, 2.0 ** -8], decay_fractions=[1.0], widths=(8, 3), eval_every=2,
                  batch_size=50, eval_n=100, backend="fast", dtype="float64"),
}


def run_dataset(name: str, cfg: dict, out: Path, methods=("kfra", "kfac"), only=None) -> dict:
    """Run (or, with ``only``, rerun just those methods of an existing result) and plot one dataset."""
    if only:
        X, Y, loss, label = dataset(name, cfg["n_train"][name])
        res = json.loads((out / "results.json").read_text())
        kw = dict(loss=loss, widths=cfg["widths"], eval_every=cfg["eval_every"], batch_size=cfg["batch_size"],
                  backend=cfg.get("backend"), dtype=cfg.get("dtype", "float32"),
                  X_eval=X[:cfg["eval_n"]], Y_eval=Y[:cfg["eval_n"]])
        for m in only:
            if m == "adam_default":
                res[m] = run("adam", X, Y, out=out / m, steps=cfg["adam_steps"], lr=1e-3, **kw)
            else:
                res[m] = run(m, X, Y, out=out / m, steps=cfg["steps"], **kw)
        (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
        plot_dataset(out, res, label)
        return res
    X, Y, loss, label = dataset(name, cfg["n_train"][name])
    kw = dict(loss=loss, widths=cfg["widths"], eval_every=cfg["eval_every"], batch_size=cfg["batch_size"],
              backend=cfg.get("backend"), dtype=cfg.get("dtype", "float32"),
              X_eval=X[:cfg["eval_n"]], Y_eval=Y[:cfg["eval_n"]])
    res = {"dataset": label, "n_train": len(X), "config": {k: v for k, v in cfg.items() if k != "n_train"}}
    for m in methods:
        res[m] = run(m, X, Y, out=out / m, steps=cfg["steps"], **kw)
    res["adam_default"] = run("adam", X, Y, out=out / "adam_default", steps=cfg["adam_steps"], lr=1e-3, **kw)
    grid = []
    for lr in cfg["lrs"]:
        for frac in cfg["decay_fractions"]:
            period = max(1, int(frac * cfg["adam_steps"]))
            tag = f"adam_lr{lr:g}_dp{period}"
            grid.append(dict(run("adam", X, Y, out=out / "grid" / tag, steps=cfg["adam_steps"], lr=lr,
                                 decay_period=period, **kw), tag=tag))
    res["adam_grid"] = grid_summary(grid)
    res["adam_grid_runs"] = grid
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    plot_dataset(out, res, label)
    return res


def plot_dataset(out: Path, res: dict, label: str) -> None:
    logs = logs_of(out, [m for m in ("kfra", "kfac", "kflr", "adam_default") if m in res])
    logs = {k.upper().replace("_DEFAULT", " (lr 1e-3)"): v for k, v in logs.items()}
    runs = {r["tag"]: r for r in res["adam_grid_runs"]}
    ranked = sorted((r for r in runs.values() if r["final_train_loss"] is not None and not r["diverged"]),
                    key=lambda r: r["final_train_loss"])
    from pt_kfgn.train import read_log

    if ranked:
        best = ranked[0]
        logs[f"ADAM best (lr {best['lr']:g}, decay {best['decay_period']})"] = read_log(
            out / "grid" / best["tag"] / "log.csv")
        for k in (10, 20):
            top = [read_log(out / "grid" / r["tag"] / "log.csv") for r in ranked[:k]]
            logs[f"ADAM top-{min(k, len(ranked))} mean"] = mean_curve(top)
    cfg = res["config"]
    note = (f"{label}; net {res['kfra']['sizes'] if 'kfra' in res else ''}; tanh hidden [ours]; "
            f"{cfg['steps']} 2nd-order / {cfg['adam_steps']} Adam steps, batch {cfg['batch_size']}")
    for x in ("step", "wall_time"):
        plot_logs(logs, out / f"loss_vs_{x}.png", title=f"{label}: training error", x=x, note=note)


def main(datasets=("curves", "faces", "mnist"), config: str = "quick", out="results/autoencoders", only=None,
         **over):
    cfg = {**CONFIGS[config], **over}
    out = Path(out)
    results = {}
    for name in datasets:
        results[name] = run_dataset(name, cfg, out / name, only=only)
        s = results[name]
        print(f"{name}: " + ", ".join(f"{m} {s[m]['final_train_loss']:.4g}" for m in ("kfra", "kfac", "adam_default"))
              + (f", adam best {s['adam_grid']['best']['final_train_loss']:.4g}" if s["adam_grid"]["best"] else ""))
    return results


if __name__ == "__main__":
    p = config_parser(__doc__, "results/autoencoders")
    p.add_argument("--datasets", default="curves,faces,mnist")
    p.add_argument("--only", default=None, help="rerun these methods (e.g. kfra,kfac), keep the rest")
    a = p.parse_args()
    main(a.datasets.split(","), a.config, a.out, only=a.only.split(",") if a.only else None)
