"""Train the paper's CURVES autoencoder with KFRA (default settings) and with Adam, and compare.

    python examples/autoencoder_kfra_vs_adam.py --steps 200 --n-train 20000

CURVES is regenerated (no download).  Prints the training loss of both at equal updates and at equal
seconds, and writes ``kfra_vs_adam.png`` when matplotlib is installed.  Adam gets three times the updates,
as in the paper's Figure 2 (one KFRA step costs a few Adam steps).
"""

import argparse

import numpy as np

import pt_kfgn as pk


def main(steps=100, n_train=5000, widths=(1000, 500, 250, 30), batch_size=1000, out="kfra_vs_adam.png"):
    X, Y, loss, label = pk.data.load_dataset("curves", n_train=n_train)
    runs = {}
    for method, n_steps, kwargs in [("kfra", steps, {}), ("adam", 3 * steps, {"lr": 1e-3})]:
        net = pk.autoencoder(X.shape[1], widths=widths, seed=0)  # the same initialisation for both
        opt = pk.make_optimizer(method, net, loss, **kwargs)
        opt.compile(example=(X[:batch_size], Y[:batch_size]))  # compile first: the wall clock is training only
        runs[method] = pk.train(opt, X, Y, n_steps, batch_size=batch_size, eval_every=max(1, steps // 10),
                                X_eval=X[:2000], Y_eval=Y[:2000], progress=False)
    evals = {m: [r for r in rows if r["train_loss"] != ""] for m, rows in runs.items()}
    t_end = min(rows[-1]["wall_time"] for rows in evals.values())
    print(f"{label}: training loss")
    print(f"{'method':8} {'updates':>8} {'final':>10} {'at ' + format(t_end, '.0f') + ' s':>10}")
    for m, rows in evals.items():
        at_t = [r for r in rows if r["wall_time"] <= t_end][-1]["train_loss"]
        print(f"{m:8} {rows[-1]['step']:>8} {rows[-1]['train_loss']:>10.4g} {at_t:>10.4g}")
    try:
        pk.plotting.plot_logs({m.upper(): rows for m, rows in evals.items()}, out, title=label, x="wall_time")
    except ImportError:
        pass
    return {m: float(rows[-1]["train_loss"]) for m, rows in evals.items()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--n-train", type=int, default=5000)
    a = p.parse_args()
    res = main(a.steps, a.n_train)
    assert all(np.isfinite(v) for v in res.values())
