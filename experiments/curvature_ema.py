"""The paper's moving average on the curvature matrices, on the autoencoders: should it be the default?

Figure 3 (the mixture) runs with a factor EMA of 0.95 (``experiments.figures.PROBLEMS``); Figure 2 with the library's
default, factors from the current batch only.  This trains KFRA on each autoencoder with the EMA, Figure 2's protocol
otherwise (seed 0, batch 1,000, float32, JAX), and sets it beside the committed Figure 2 run of the same seed.

    python -m experiments.curvature_ema --problems curves,mnist,faces --steps 2000 --out results/curvature_ema
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.common import run
from experiments.figures import CONFIGS, PROBLEMS, _at, _data, _measured_backends, problem_dir
from pt_kfgn.train import log_file, read_log


def _evaluated(rows: list[dict]) -> list[dict]:
    """The log rows that carry a training-loss evaluation (the curve :func:`experiments.figures._at` reads)."""
    return [r for r in rows if r["train_loss"] not in ("", None)]


def main(problems, steps: int, out: Path, method: str = "kfra", seed: int = 0, ema: float = 0.95,
         results: Path = Path("results"), config: str = "full") -> dict:
    cfg = CONFIGS[config]
    res = {}
    for problem in problems:
        d = Path(out) / problem / f"{method}_ema{ema:g}_seed{seed}"
        X, Y, loss, _ = _data(problem, cfg)
        ref_dir = problem_dir(results, problem) / method / f"seed{seed}"
        backend = cfg.get("backend") or _measured_backends(ref_dir.parents[1], cfg)[method]  # as Figure 2's run
        run(method, X, Y, loss, out=d, steps=steps, widths=cfg["widths"], autoencoder=PROBLEMS[problem]["autoencoder"],
            batch_size=cfg["batch_size"], dtype=cfg["dtype"], backend=backend, eval_every=cfg["eval_every"],
            X_eval=X[:cfg["eval_n"]], Y_eval=Y[:cfg["eval_n"]], resume=True, checkpoint_every=100, seed=seed, ema=ema)
        ours = _evaluated(read_log(d / "log.csv"))
        ref = _evaluated(read_log(ref_dir / "log.csv")) if log_file(ref_dir) is not None else []
        marks = sorted({m for m in (250, 500, 1000, steps) if m <= steps})
        res[problem] = {"method": method, "seed": seed, "ema": ema, "updates": steps, "backend": backend,
                        "with_ema": {m: _at(ours, m) for m in marks},
                        "figure2_batch_factors": {m: _at(ref, m) for m in marks} if ref else None}
        print(problem, json.dumps(res[problem]), flush=True)
    (Path(out) / "summary.json").write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", default="curves,mnist,faces")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--method", default="kfra")
    p.add_argument("--out", default="results/curvature_ema")
    a = p.parse_args()
    main(a.problems.split(","), a.steps, Path(a.out), a.method)
