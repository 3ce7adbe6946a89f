"""Appendix F.2 (Figures 5-7): alignment of KFRA / KFAC updates with the block-diagonal and full GN updates.

During a KFRA training run (defaults), every ``every`` steps: cosine similarity, per layer and whole, of the
KFRA and KFAC directions (factored Tikhonov and exact Kronecker inverse) with the block-diagonal GN direction
(CG per layer) and the full GN direction (CG), on the step's batch of 1000.

    python -m experiments.alignment --quick --dataset curves --out results/alignment
    python -m experiments.alignment --quick --steps 1000 --every 100 --n-train 0 --out results/alignment_long
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from experiments.common import config_parser, dataset
from pt_kfgn.diagnostics import Alignment
from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim.kfgn import KFGN
from pt_kfgn.train import Batches

CONFIGS = {
    "full": dict(n_train=None, widths=(1000, 500, 250, 30), steps=1000, every=100, cg_iters=250,
                 batch_size=1000),
    # [ours] a smaller autoencoder so that the CG solves fit in minutes on 2 cores
    "quick": dict(n_train=5000, widths=(250, 100, 30), steps=60, every=15, cg_iters=100, batch_size=1000),
    "smoke": dict(n_train=100, widths=(6, 2), steps=4, every=2, cg_iters=20, batch_size=50, backend="fast",
                  dtype="float64"),
}


def main(name: str = "curves", config: str = "quick", out="results/alignment", **over) -> list[dict]:
    cfg = {**CONFIGS[config], **over}
    out = Path(out) / name
    out.mkdir(parents=True, exist_ok=True)
    X, Y, loss, label = dataset(name, cfg["n_train"])
    dtype, backend = cfg.get("dtype", "float64"), cfg.get("backend")
    net = build_net(X.shape[1], Y.shape[1], cfg["widths"], "tanh", 0, dtype, True)
    opt = KFGN(net, loss, "kfra", backend=backend)
    align = Alignment(net, loss, methods=("kfra", "kfac"), eta=opt.eta, cg_iters=cfg["cg_iters"], backend=backend)
    batches = Batches(len(X), cfg["batch_size"], seed=0)
    rows = []
    for step in range(1, cfg["steps"] + 1):
        idx = batches.next()
        if step == 1 or step % cfg["every"] == 0:
            res = align.compare(X[idx], Y[idx], float(opt.gamma.get_value()), float(opt.lam.get_value()))
            rows.append({"step": step, **res})
            print(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items() if "layer" not in k))
        opt.step(X[idx], Y[idx])
    with open(out / "alignment.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "config.json").write_text(json.dumps({"dataset": label, "config": config, **cfg,
                                                 "sizes": net.sizes}, indent=2, default=str))
    plot(rows, out, label, net.sizes)
    return rows


def plot(rows, out: Path, label: str, sizes) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["step"] for r in rows]
    n_layers = len(sizes) - 1
    for m, style in (("kfra", "-"), ("kfac", "--")):
        for i in range(1, n_layers + 1):
            a.plot(steps, [r[f"{m}_tikhonov_layer{i}"] for r in rows], style, label=f"{m.upper()} layer {i}")
        for inv in ("tikhonov", "exact"):
            b.plot(steps, [r[f"{m}_{inv}_vs_full"] for r in rows], style, label=f"{m.upper()} ({inv}) vs full GN")
    b.plot(steps, [r["block_vs_full"] for r in rows], ":k", label="block GN vs full GN")
    a.set_title("per layer vs block-diagonal GN (Tikhonov)")
    b.set_title("whole update vs full GN")
    for ax in (a, b):
        ax.set_xlabel("updates")
        ax.set_ylabel("cosine similarity")
    a.legend(fontsize=6, ncol=2)
    b.legend(fontsize=7)
    fig.suptitle(f"{label}, net {sizes}; CG damping ε / λ+η [ours]", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "alignment.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    p = config_parser(__doc__, "results/alignment")
    p.add_argument("--dataset", default="curves")
    p.add_argument("--steps", type=int, help="KFRA steps (overrides the configuration's)")
    p.add_argument("--every", type=int, help="compare every this many steps (overrides the configuration's)")
    p.add_argument("--n-train", type=int, help="training points (overrides the configuration's; 0: all)")
    a = p.parse_args()
    over = {k: v for k, v in (("steps", a.steps), ("every", a.every)) if v is not None}
    if a.n_train is not None:
        over["n_train"] = a.n_train or None
    main(a.dataset, a.config, a.out, **over)
