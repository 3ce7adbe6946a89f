"""Why did γ keep falling while γ ≫ η? (issue 25, item 2) — the γ search's objective against the loss it serves.

Round 3's long runs let λ decay on a fixed schedule to 1e-20.  This script trains KFRA at defaults for a while,
then, at that state, takes the step for each damping ``ε = γ + η`` on a grid and reports, per ε and per λ
(the λ the model ``M̂`` carries, eq. 39-41): the model change ``M̂(α*δ) − M̂(0)`` the greedy search minimises
(eq. 43), the actual change of the objective on the **same** batch, and the change of the mean loss on a **fresh**
batch.  Every step starts from the same state (restored after each).

    python -m experiments.gamma_search --dataset curves --warmup 300 --out results/gamma_search.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.common import PAPER_WIDTHS
from pt_kfgn.data import load_dataset
from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim import make_optimizer
from pt_kfgn.train import train

EPS_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
LAMBDAS = (1e-20, 1e-5, 1e-2, 1.0)


def main(dataset: str, warmup: int, out: Path, n_train: int = 20000, seed: int = 0) -> dict:
    X, Y, loss, label = load_dataset(dataset, n_train)
    net = build_net(X.shape[1], Y.shape[1], PAPER_WIDTHS, "tanh", seed, "float32", autoencoder=True)
    # min_damping 1e-20 lets λ decay as round 3's did; the probe below sets λ itself
    opt = make_optimizer("kfra", net, loss, seed=seed, reject_increase=False, min_damping=1e-20)
    rows = train(opt, X, Y, warmup, batch_size=1000, seed=seed, progress=False, eval_every=warmup)
    r = np.random.default_rng(seed + 1)
    idx = r.permutation(len(X))
    B, F = idx[:1000], idx[1000:2000]
    Xb, Yb, Xf, Yf = X[B], Y[B], X[F], Y[F]
    state = opt.state_dict()
    f_fresh0 = opt.evaluate(Xf, Yf)
    f_batch0 = opt.evaluate(Xb, Yb)
    table = []
    opt.T1 = 1  # every probe evaluates the trial loss
    for lam in LAMBDAS:
        for eps in EPS_GRID:
            opt.load_state_dict(state)
            opt.lam.set_value(np.asarray(lam, net.dtype))
            opt.gamma.set_value(np.asarray(max(eps - opt.eta, 1e-20), net.dtype))
            opt.t = opt.T1 * 1000 - 1  # the next step is a T₁ step with no γ search
            opt.gamma_search = False
            s = opt.step(Xb, Yb)
            row = {"lambda": lam, "epsilon": eps, "alpha": s["alpha"], "model_change": s["model_change"],
                   "batch_change": s["new_objective"] - s["objective"], "rho": s["rho"],
                   "fresh_change": opt.evaluate(Xf, Yf) - f_fresh0}
            table.append(row)
            print(json.dumps(row), flush=True)
    opt.load_state_dict(state)
    res = {"dataset": label, "warmup_updates": warmup, "lambda_after_warmup": rows[-1]["lambda"],
           "gamma_after_warmup": rows[-1]["gamma"], "batch_loss": f_batch0, "fresh_loss": f_fresh0, "probes": table}
    best = {}
    for lam in LAMBDAS:
        sub = [t for t in table if t["lambda"] == lam]
        best[str(lam)] = {k: min(sub, key=lambda t: t[k])["epsilon"]
                          for k in ("model_change", "batch_change", "fresh_change")}
    res["argmin_epsilon"] = best
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(best, indent=2))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="curves")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--out", default="results/gamma_search.json")
    a = p.parse_args()
    main(a.dataset, a.warmup, Path(a.out), a.n_train)
