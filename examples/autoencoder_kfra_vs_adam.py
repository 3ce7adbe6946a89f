"""Train the paper's CURVES autoencoder with KFRA (default settings) and with Adam, and compare.

    python examples/autoencoder_kfra_vs_adam.py --steps 200 --n-train 20000

CURVES is regenerated (no download).  ``pk.compare`` compiles both, trains each from the same initial
parameters and prints the training loss at equal updates and at equal seconds; ``kfra_vs_adam/`` gets the
logs, the table and the plots.  Adam gets three times the updates,
as in the paper's Figure 2 (one KFRA step costs a few Adam steps).
"""

import argparse

import numpy as np

import pt_kfgn as pk


def main(steps=100, n_train=5000, widths=(1000, 500, 250, 30), batch_size=1000, out="kfra_vs_adam"):
    X, Y, loss, label = pk.data.load_dataset("curves", n_train=n_train)
    net = pk.autoencoder(X.shape[1], widths=widths, seed=0)  # both methods start from these parameters
    res = pk.compare(net, loss, X, Y, methods={"kfra": steps, "adam": 3 * steps}, batch_size=batch_size,
                     options={"adam": {"lr": 1e-3}}, X_eval=X[:2000], Y_eval=Y[:2000], out_dir=out)
    print(label)
    print(res["table"])  # and out/table.md, out/loss_vs_update.png, out/loss_vs_wall_time.png
    return {r["method"]: r["final"] for r in res["rows"]}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--n-train", type=int, default=5000)
    a = p.parse_args()
    res = main(a.steps, a.n_train)
    assert all(np.isfinite(v) for v in res.values())
