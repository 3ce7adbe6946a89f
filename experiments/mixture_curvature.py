"""Which PSD output curvature for the mixture likelihood (MIX-v0)? Issue 25, item 4: measured, not guessed.

MIX-v0's exact ``H_L`` is indefinite (negative at confident mistakes) and, at confident correct points, up to
10⁴ × larger than the convex "GN split" ``μ′²(y/μ² + (1−y)/(1−μ)²)`` that round 3 used (h = 5: 3.4e-3 against
1.1e-5), so ``α*`` could explode on easy batches.  Three candidates (:class:`pt_kfgn.graph.losses.Mixture`):
``positive-part`` (``max(H_L, 0)``, the paper's "clip negative eigenvalues"), ``fisher`` (``μ′²/(μ(1−μ))``, what
KFAC samples) and ``gn-split``, each in the factors and in the step's model alike (``model_curvature=None``).
Each trains the mixture classifier with KFRA at defaults; the table counts the spike onsets (a batch loss > 8 ×
the median of the previous 25 while the one before was not).

    python -m experiments.mixture_curvature --steps 1000 --out results/mixture_curvature
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.common import PAPER_WIDTHS, run
from pt_kfgn.data import load_dataset
from pt_kfgn.graph.losses import Mixture
from pt_kfgn.train import read_log


def spike_onsets(batch_losses, after: int = 0, window: int = 25, factor: float = 8.0) -> list[int]:
    """Updates (1-based) whose batch loss exceeds ``factor`` × the median of the previous ``window`` while the one
    before did not: the issue's definition of a spike onset."""
    b = np.asarray(batch_losses, float)
    spike = [t > window and b[t - 1] > factor * np.median(b[t - 1 - window:t - 1]) for t in range(1, len(b) + 1)]
    return [t for t in range(2, len(b) + 1) if spike[t - 1] and not spike[t - 2] and t > after]


def main(steps: int, out: Path, methods=("kfra",), curvatures=Mixture.CURVATURES, n_train=50000, seed=0) -> dict:
    X, Y, _, _ = load_dataset("mnist-oddeven", n_train)
    res = {}
    for method in methods:
        for c in curvatures:
            d = out / f"{method}_{c}"
            s = run(method, X, Y, Mixture(c, model_curvature=None), out=d, steps=steps, widths=PAPER_WIDTHS, autoencoder=False, seed=seed,
                    eval_every=50, X_eval=X[:5000], Y_eval=Y[:5000], resume=True, checkpoint_every=100)
            rows = read_log(d / "log.csv")
            b = [r["batch_loss"] for r in rows]
            res[f"{method}/{c}"] = {
                "final_train_loss": s["final_train_loss"], "rejected": sum(1 - int(r["accepted"]) for r in rows),
                "spike_onsets": spike_onsets(b), "spike_onsets_after_half": spike_onsets(b, steps // 2),
                "median_alpha_last_half": float(np.median([r["alpha"] for r in rows[steps // 2:]])),
                "final_lambda": rows[-1]["lambda"], "final_epsilon": rows[-1]["epsilon"]}
            print(method, c, json.dumps(res[f"{method}/{c}"]), flush=True)
    (out / "summary.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--methods", default="kfra")
    p.add_argument("--out", default="results/mixture_curvature")
    a = p.parse_args()
    main(a.steps, Path(a.out), a.methods.split(","))
