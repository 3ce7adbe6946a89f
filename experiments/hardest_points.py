"""The training points a run fits worst, drawn, and the spike onsets their batches hold.

Near zero training loss one badly fitted point makes its batch's loss many times the median: a spike onset in issue
25's sense (``experiments.damping_criteria``) once per epoch.  This reads a run's last checkpoint, ranks the training
points by their loss, replays the run's shuffled batches (:class:`pt_kfgn.train.Batches`, seeded as the run) and
counts the onsets after update 700 whose batch holds each point.

    python -m experiments.hardest_points results/mixture_variants/ema0.95_eta0/kflr/seed0 --out results/hardest_points
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import pytensor
import pytensor.tensor as pt

from experiments.damping_criteria import ETA
from experiments.mixture_curvature import spike_onsets
from pt_kfgn.checkpoint import load
from pt_kfgn.data import load_dataset
from pt_kfgn.graph.layers import build_net
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.plotting import _pyplot
from pt_kfgn.train import Batches, read_log


def _checkpoint_params(run_dir: Path) -> tuple[list, list]:
    """The checkpoint's ``sizes`` and ``[W1, b1, W2, …]`` (the optimiser's state begins with them)."""
    state = load(Path(run_dir) / "checkpoint.npz")["optimizer"]
    return state["sizes"], state["shared"][:2 * (len(state["sizes"]) - 1)]


def weight_decay_term(run_dir: Path) -> tuple[float, float]:
    """``(η, ½η‖θ‖²)`` at the run's checkpoint, η from the run's ``summary.json`` options (KFGN's default
    otherwise): with the mean loss, the objective ``f`` of Appendix B the run minimised."""
    summary = Path(run_dir) / "summary.json"
    options = json.loads(summary.read_text()).get("options", {}) if summary.exists() else {}
    eta = float(options.get("eta", ETA))
    return eta, 0.5 * eta * sum(float(np.sum(np.square(p, dtype=np.float64))) for p in _checkpoint_params(run_dir)[1])


def per_point_losses(run_dir: Path, X, Y, loss) -> np.ndarray:
    """Every training point's loss at the run's checkpoint."""
    sizes, flat = _checkpoint_params(run_dir)
    net = build_net(X.shape[1], Y.shape[1], sizes[1:-1], "tanh", 0, str(X.dtype), autoencoder=False)
    net.set_params(list(zip(flat[::2], flat[1::2], strict=True)))
    x, y = pt.matrix("x", dtype=X.dtype), pt.matrix("y", dtype=Y.dtype)
    f = pytensor.function([x, y], get_loss(loss).per_sample(net.forward(x), y), mode="FAST_RUN")
    return np.concatenate([np.asarray(f(X[i:i + 5000], Y[i:i + 5000])) for i in range(0, len(X), 5000)])


def hardest(run_dir: Path, X, Y, loss, top: int = 6, batch_size: int = 1000, after: int = 700) -> dict:
    """The ``top`` worst-fitted points of a run, their losses, and the onsets after ``after`` their batches hold."""
    losses = per_point_losses(run_dir, X, Y, loss)
    worst = np.argsort(losses)[::-1][:top]
    rows = read_log(Path(run_dir) / "log.csv")
    seed = int(re.search(r"seed(\d+)", Path(run_dir).name).group(1))
    batches = Batches(len(X), batch_size, seed)
    held = [set(batches.next().tolist()) for _ in rows]
    onsets = spike_onsets([r["batch_loss"] for r in rows], after)
    eta, decay = weight_decay_term(run_dir)
    return {"run": str(run_dir), "updates": len(rows), "mean_loss": float(losses.mean()),
            "median_loss": float(np.median(losses)), "eta": eta, "weight_decay_term": decay,
            "objective": float(losses.mean()) + decay, "spike_onsets": len(onsets),
            "points": [{"index": int(i), "label": float(Y[i, 0]), "loss": float(losses[i]),
                        "share_of_the_training_loss": float(losses[i] / losses.sum()),
                        "onsets_with_it": sum(int(i) in held[t - 1] for t in onsets)} for i in worst]}


def draw(results: list[dict], X, path: Path, side: int = 28) -> Path | None:
    plt = _pyplot()
    if plt is None:
        return None
    top = max(len(r["points"]) for r in results)
    fig, axes = plt.subplots(len(results), top, figsize=(1.6 * top, 2.1 * len(results)), squeeze=False)
    runs = [Path(r["run"]) for r in results]
    common = Path(os.path.commonpath(runs)) if len(runs) > 1 else runs[0].parent.parent
    for row, r in zip(axes, results, strict=True):
        for ax, p in zip(row, r["points"], strict=False):
            ax.imshow(X[p["index"]].reshape(side, side), cmap="gray_r")
            ax.set_title(f"#{p['index']} y={p['label']:g}\nloss {p['loss']:.2g}", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        name = str(Path(r["run"]).relative_to(common)).replace("figure3/mnist-oddeven/", "")
        row[0].set_ylabel(name.replace("/", "/\n", 1) if len(name) > 24 else name, fontsize=6)
    fig.suptitle("the worst-fitted training points (y = 1: odd)", fontsize=9)
    height = fig.get_figheight()  # room for the title and for each row's two-line titles
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=1 - 0.75 / height, hspace=0.45, wspace=0.08)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(run_dirs, out: Path, top: int = 6, dataset: str = "mnist-oddeven", n_train: int = 50000) -> list[dict]:
    X, Y, loss, _ = load_dataset(dataset, n_train)
    res = [hardest(Path(d), X, Y, loss, top) for d in run_dirs]
    Path(out).with_suffix(".json").write_text(json.dumps(res, indent=2))
    draw(res, X, Path(out).with_suffix(".png"))
    for r in res:
        print(r["run"], f"objective {r['objective']:.4g}", "onsets", r["spike_onsets"], [(p["index"], f"{p['loss']:.3g}", p["onsets_with_it"])
                                                      for p in r["points"]], flush=True)
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--top", type=int, default=6)
    p.add_argument("--out", default="results/hardest_points", help="path of the .png and .json (suffix replaced)")
    a = p.parse_args()
    main(a.runs, Path(a.out), a.top)
