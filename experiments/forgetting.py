"""Does a method keep the hard points it fits?  A run continued from its checkpoint, the worst points traced.

A spike onset late in a mixture run (``experiments.damping_criteria``) is a batch holding one point with a loss of
≈ 2 among points at 1e-4.  This continues a run from its last checkpoint for ``epochs`` more epochs of its own
batch order (the run's folder is not written), and after every step records the losses of the ``top`` points the
net fits worst at the checkpoint: how far each falls on the step taken on its own batch, and how far it climbs
back before its batch comes round again.

    python -m experiments.forgetting results/figure3/mnist-oddeven/kfra/seed1 \\
        results/figure3/mnist-oddeven/kflr/seed1 --out results/forgetting
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pytensor

from experiments.figures import _variant
from experiments.hardest_points import _checkpoint_params, per_point_losses
from pt_kfgn.checkpoint import load
from pt_kfgn.data import load_dataset
from pt_kfgn.graph.layers import build_net
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.optim import make_optimizer
from pt_kfgn.plotting import _pyplot
from pt_kfgn.train import Batches


def _optimizer(run_dir: Path, X, Y, loss, batch_size: int, backend):
    """The run's optimiser (method and seed from its folders, options from its ``summary.json``) at its checkpoint."""
    summary = json.loads((run_dir / "summary.json").read_text())
    seed = int(run_dir.name.removeprefix("seed"))
    loss, options = _variant(loss, summary.get("options", {}))
    sizes, _ = _checkpoint_params(run_dir)
    net = build_net(X.shape[1], Y.shape[1], sizes[1:-1], "tanh", seed, str(X.dtype), autoencoder=False)
    opt = make_optimizer(summary["method"], net, get_loss(loss), seed=seed, backend=backend, **options)
    state = load(run_dir / "checkpoint.npz")
    opt.load_state_dict(state["optimizer"])
    batches = Batches(len(X), batch_size, seed)
    batches.load(state["batches"])
    return opt, net, batches, get_loss(loss)


def trace(run_dir: Path, X, Y, loss, top: int = 4, epochs: int = 2, batch_size: int = 1000,
          backend: str | None = "jax") -> dict:
    """The ``top`` worst points' losses after each of ``epochs`` epochs of further steps (see the module)."""
    run_dir = Path(run_dir)
    worst = np.argsort(per_point_losses(run_dir, X, Y, loss))[::-1][:top]
    opt, net, batches, loss = _optimizer(run_dir, X, Y, loss, batch_size, backend)
    per = pytensor.function([net.X, opt.y], loss.per_sample(net.output, opt.y), mode="FAST_RUN")
    Xw, Yw = np.array(X[worst]), np.array(Y[worst])
    losses, own = [np.asarray(per(Xw, Yw), dtype=float)], []
    for _ in range(epochs * (len(X) // batches.batch_size)):
        idx = batches.next()
        opt.step(X[idx], Y[idx])
        opt.host_state()  # a JAX step leaves device arrays; the loss function here runs on the host
        losses.append(np.asarray(per(Xw, Yw), dtype=float))
        own.append(np.isin(worst, idx))
    L, own = np.array(losses), np.array(own)  # L[s]: after s steps; own[s]: step s + 1 used the point's batch
    points = []
    for j, i in enumerate(worst):
        steps = np.flatnonzero(own[:, j])  # step s + 1 took the point's batch: its loss went L[s] -> L[s + 1]
        drops = [(L[s, j], L[s + 1, j]) for s in steps]
        climbs = [L[a + 1:b + 1, j].max() / L[a + 1, j] for a, b in itertools.pairwise(steps)]
        points.append({"index": int(i), "label": float(Y[i, 0]), "loss_at_checkpoint": float(L[0, j]),
                       "own_steps": [int(s) + 1 for s in steps],
                       "loss_before_and_after_own_step": [[float(a), float(b)] for a, b in drops],
                       "climb_before_its_batch_returns": [float(c) for c in climbs],
                       "losses": [float(v) for v in L[:, j]]})
    return {"run": str(run_dir), "method": opt.name, "steps": len(own), "points": points}


def draw(results: list[dict], path: Path) -> Path | None:
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(len(results), 1, figsize=(7, 2.4 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        for k, p in enumerate(r["points"]):
            ax.plot(p["losses"], color=f"C{k}", lw=1, label=f"#{p['index']}")
            ax.plot(p["own_steps"], [p["losses"][s] for s in p["own_steps"]], color=f"C{k}", marker="v", lw=0, ms=5)
        ax.set(yscale="log", ylabel="the point's loss")
        ax.set_title(f"{r['run']} ({r['method']}), continued from its checkpoint", fontsize=8)
        ax.legend(fontsize=7, ncol=len(r["points"]))
    axes[-1, 0].set_xlabel("further updates (▼: the step on the point's own batch)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(run_dirs, out: Path, top: int = 4, epochs: int = 2, dataset: str = "mnist-oddeven",
         n_train: int = 50000, backend: str | None = "jax") -> list[dict]:
    X, Y, loss, _ = load_dataset(dataset, n_train)
    X, Y = np.array(X), np.array(Y)  # writable: the loaders may hand out read-only arrays
    res = [trace(Path(d), X, Y, loss, top, epochs, backend=backend) for d in run_dirs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2))
    draw(res, out.with_suffix(".png"))
    for r in res:
        for p in r["points"]:
            drop = np.median([a / b for a, b in p["loss_before_and_after_own_step"]]) if p["own_steps"] else np.nan
            climb = np.median(p["climb_before_its_batch_returns"]) if p["climb_before_its_batch_returns"] else np.nan
            print(f"{r['run']} #{p['index']}: own step ÷{drop:.2g}, climbs ×{climb:.2g} before its batch returns",
                  flush=True)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--top", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", default="results/forgetting", help="path of the .png and .json (suffix replaced)")
    a = p.parse_args()
    main(a.runs, Path(a.out), a.top, a.epochs)
