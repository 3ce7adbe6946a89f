"""The longer CURVES run: KFRA at default settings, KFRA with amortised curvature (factors and inverses every
5 steps [ours]), and Adam at the grid-best learning rate of the quick run (2⁻⁹ of 2⁻⁶, 2⁻⁹, 2⁻¹²).

Runs the three ``pt-kfgn train`` commands below one after another (skip with ``--plot-only``), then writes
the training loss at equal updates and at equal wall-clock seconds, ``summary.json`` and two figures in ``--out``:

    pt-kfgn train --dataset curves --method kfra --steps 300 --out OUT/kfra
    pt-kfgn train --dataset curves --method kfra --curvature-every 5 --steps 300 --out OUT/kfra_amortised
    pt-kfgn train --dataset curves --method adam --lr 2^-9 --steps 1000 --out OUT/adam

    python -m experiments.curves_long --out results/curves_long
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.report import loss_at, loss_at_time
from pt_kfgn.cli import main as cli
from pt_kfgn.plotting import plot_logs
from pt_kfgn.train import read_log

RUNS = {"kfra": ["--method", "kfra"], "kfra_amortised": ["--method", "kfra", "--curvature-every", "5"],
        "adam": ["--method", "adam", "--lr", str(2.0 ** -9)]}
STEPS = {"kfra": 300, "kfra_amortised": 300, "adam": 1000}
SMOKE = ["--n-train", "40", "--batch-size", "20", "--widths", "4,2", "--no-progress"]
LABEL = "CURVES (regenerated, recipe CURVES-v0)"


def summarise(out: Path) -> dict:
    logs = {m: read_log(out / m / "log.csv") for m in RUNS}
    kfra, adam = logs["kfra"], logs["adam"]
    t_kfra, n_kfra = kfra[-1]["wall_time"], kfra[-1]["step"]
    kfra_log, adam_log = out / "kfra" / "log.csv", out / "adam" / "log.csv"
    summary = {
        "dataset": LABEL,
        "final": {m: {"steps": r[-1]["step"], "seconds": r[-1]["wall_time"], "train_loss": r[-1]["train_loss"]}
                  for m, r in logs.items()},
        "adam_at_kfra_updates": loss_at(adam_log, n_kfra)[0],
        "adam_at_kfra_seconds": loss_at_time(adam_log, t_kfra),
        "kfra_at_adam_seconds": loss_at_time(kfra_log, adam[-1]["wall_time"]),
        "amortised_at_kfra_updates": loss_at(out / "kfra_amortised" / "log.csv", n_kfra)[0],
        "amortised_at_kfra_seconds": loss_at_time(out / "kfra_amortised" / "log.csv", t_kfra),
        "adam_at_amortised_seconds": loss_at_time(adam_log, logs["kfra_amortised"][-1]["wall_time"]),
    }
    note = ("KFRA: default settings; amortised: factors and inverses every 5 steps [ours]; Adam: lr 2^-9 "
            "(grid best of the quick CURVES run); batch 1000, 2-core CPU")
    labels = {"kfra": "KFRA (defaults)", "kfra_amortised": "KFRA, curvature every 5", "adam": "Adam lr 2^-9"}
    for x in ("step", "wall_time"):
        plot_logs({labels[m]: r for m, r in logs.items()}, out / f"loss_vs_{x}.png", title=LABEL, x=x, note=note)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(out="results/curves_long", plot_only: bool = False, seed: int = 0, smoke: bool = False) -> dict:
    out = Path(out)
    if not plot_only:
        for m, args in RUNS.items():
            steps, every = (STEPS[m] // 50, 2) if smoke else (STEPS[m], 25)
            cli(["train", "--dataset", "curves", *args, "--steps", str(steps), "--seed", str(seed),
                 "--out", str(out / m), "--eval-every", str(every), "--checkpoint-every", str(every),
                 *(SMOKE if smoke else ["--no-progress"])])
    s = summarise(out)
    print(json.dumps(s, indent=2))
    return s


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/curves_long")
    p.add_argument("--plot-only", action="store_true", help="only summarise existing logs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps of a tiny net (the test suite's check)")
    a = p.parse_args()
    main(a.out, a.plot_only, a.seed, a.smoke)
