"""Shared pieces of the experiment scripts: run one method, write CSV/JSON, summarise a grid."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from pt_kfgn.data import load_dataset
from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim import make_optimizer
from pt_kfgn.train import log_file, read_log, train

PAPER_WIDTHS = (1000, 500, 250, 30)


def run(method: str, X, Y, loss: str, *, out: Path, steps: int, widths=PAPER_WIDTHS, hidden="tanh",
        autoencoder=True, seed=0, batch_size=1000, dtype="float32", backend=None, eval_every=25, lr=None,
        decay_period=None, time_limit=None, X_eval=None, Y_eval=None, resume=False, checkpoint_every=None,
        **opt_kwargs) -> dict:
    """Train one configuration; the log goes to ``out/log.csv``; returns a summary dict.

    With ``resume``, a run continues from ``out``'s checkpoint up to ``steps`` (or is only summarised when
    it is already there); the summary is then read from the whole log."""
    done = Path(out) / "summary.json"
    if resume and done.exists() and log_file(out) is not None:
        rows = read_log(Path(out) / "log.csv")
        if rows and int(rows[-1]["step"]) >= steps:  # finished: nothing to compile or train
            return json.loads(done.read_text())
    net = build_net(X.shape[1], Y.shape[1], widths, hidden, seed, dtype, autoencoder)
    opt = make_optimizer(method, net, loss, seed=seed, backend=backend, lr=lr, decay_period=decay_period,
                         **opt_kwargs)
    t0 = time.perf_counter()
    n = min(batch_size, len(X))  # compile the step kinds now, at the batch size: wall time is training time only
    opt.compile(example=(X[:n], Y[:n]), steps=steps)  # the kinds steps 1 … steps use
    compile_seconds = time.perf_counter() - t0
    rows = train(opt, X, Y, steps, batch_size=batch_size, seed=seed, out_dir=out, eval_every=eval_every,
                 checkpoint_every=checkpoint_every or max(eval_every, 50), progress=False, time_limit=time_limit,
                 X_eval=X_eval, Y_eval=Y_eval, resume=resume)
    if resume:
        rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in read_log(out / "log.csv")]
    final = [r for r in rows if r["train_loss"] != ""]
    summary = {"method": method, "lr": lr, "decay_period": decay_period, "steps": int(rows[-1]["step"]) if rows else 0,
               "final_train_loss": final[-1]["train_loss"] if final else None,
               "final_avg_train_loss": (final[-1]["avg_train_loss"] or None) if final else None,
               "diverged": bool(final and not np.isfinite(final[-1]["train_loss"])),
               "train_seconds": rows[-1]["wall_time"] if rows else 0.0,
               "total_seconds": time.perf_counter() - t0, "compile_seconds": compile_seconds, "rejected": getattr(opt, "rejected", 0),
               "sizes": net.sizes, "options": opt_kwargs}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def grid_summary(summaries: list[dict], k_values=(10, 20)) -> dict:
    """Best grid point and the mean final loss of the top-k (diverged runs rank last)."""
    ok = sorted((s for s in summaries if s["final_train_loss"] is not None and not s["diverged"]),
                key=lambda s: s["final_train_loss"])
    out = {"best": ok[0] if ok else None, "n_runs": len(summaries), "n_diverged": len(summaries) - len(ok)}
    for k in k_values:
        top = ok[:k]
        out[f"top{k}"] = [(s["lr"], s["decay_period"]) for s in top]
    return out


def mean_curve(logs: list[list[dict]]) -> list[dict]:
    """Pointwise mean of several logs' training loss (same eval steps): the 'top-k mean' curve."""
    by_step = {}
    for rows in logs:
        for r in rows:
            if r["train_loss"] is not None:
                by_step.setdefault(int(r["step"]), []).append((r["train_loss"], r["wall_time"], r.get("avg_train_loss")))
    n = max(len(v) for v in by_step.values()) if by_step else 0
    avg = lambda vals: None if any(v[2] is None for v in vals) else float(np.mean([v[2] for v in vals]))
    return [{"step": s, "train_loss": float(np.mean([v[0] for v in vals])),
             "wall_time": float(np.mean([v[1] for v in vals])), "avg_train_loss": avg(vals), "batch_loss": None}
            for s, vals in sorted(by_step.items()) if len(vals) == n]


def logs_of(out: Path, names) -> dict:
    return {name: read_log(out / name / "log.csv") for name in names if log_file(out / name) is not None}


def dataset(name: str, n_train=None):
    return load_dataset(name, n_train)


def config_parser(doc: str, out: str):
    """An argument parser with the shared ``--quick`` / ``--full`` / ``--smoke`` switch and ``--out``."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    for name in ("quick", "full", "smoke"):
        g.add_argument(f"--{name}", action="store_const", dest="config", const=name)
    p.set_defaults(config="quick")
    p.add_argument("--out", default=out)
    return p
