"""Compare optimisers on one problem in one call: every method compiled first, each trained from the same
initial parameters, one table (loss at equal updates and at equal seconds) and the plots.

>>> res = pk.compare(pk.autoencoder(784), "bce", X, X, methods={"kfra": 200, "adam": 600}, out_dir="cmp")
>>> print(res["table"])
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pt_kfgn.optim import make_optimizer
from pt_kfgn.train import train


def _at(rows, key, limit):
    """The training loss of the last evaluation with ``rows[key] <= limit``, or None."""
    ok = [r for r in rows if r["train_loss"] != "" and r[key] <= limit]
    return float(ok[-1]["train_loss"]) if ok else None


def compare(net, loss, X, Y, methods=("kfra", "kfac", "adam"), steps: int = 100, seconds: float | None = None, *,
            batch_size: int = 1000, eval_every: int | None = None, X_eval=None, Y_eval=None, seed: int = 0,
            out_dir=None, options: dict | None = None, progress: bool = False) -> dict:
    """Train each method on ``(X, Y)`` from the net's current parameters and compare them.

    Parameters
    ----------
    net : MLP or GraphNet
        The network; its parameters at the call are every method's starting point, and are restored at the end.
    loss : str or Loss
    methods : sequence of str, or dict
        Names for :func:`pt_kfgn.make_optimizer`; a dict maps each name to its number of updates.
    steps : int
        Updates per method (when ``methods`` is not a dict).
    seconds : float, optional
        Stop each method after this much training time (compilation excluded).
    options : dict, optional
        Per-method keyword arguments for :func:`pt_kfgn.make_optimizer`, e.g. ``{"adam": {"lr": 2 ** -9}}``.
    out_dir : str or Path, optional
        Writes ``<method>/log.csv``, ``table.md``, ``loss_vs_update.png`` and ``loss_vs_wall_time.png``.

    Returns
    -------
    dict
        ``table`` (markdown), ``rows`` (one dict per method: updates, seconds, final loss, loss at the common
        number of updates and at the common time, compile seconds) and ``logs`` (each method's log rows).
    """
    budget = dict(methods) if isinstance(methods, dict) else {m: steps for m in methods}
    if not budget:
        raise ValueError("methods is empty")
    options = options or {}
    unknown = set(options) - set(budget)
    if unknown:
        raise ValueError(f"options for methods not compared: {sorted(unknown)}")
    X_eval = X if X_eval is None else X_eval
    Y_eval = Y if Y_eval is None else Y_eval
    start = net.get_params()
    n = min(batch_size, len(X))
    logs, rows = {}, []
    try:
        for m, n_steps in budget.items():
            net.set_params(start)
            opt = make_optimizer(m, net, loss, seed=seed, **options.get(m, {}))
            t = time.perf_counter()
            opt.compile(example=(X[:n], Y[:n]), steps=n_steps)
            compile_s = time.perf_counter() - t
            every = eval_every or max(1, n_steps // 20)
            logs[m] = train(opt, X, Y, n_steps, batch_size=batch_size, seed=seed, eval_every=every,
                            X_eval=X_eval, Y_eval=Y_eval, time_limit=seconds, progress=progress,
                            out_dir=None if out_dir is None else Path(out_dir) / m)
            rows.append({"method": m, "updates": int(logs[m][-1]["step"]), "seconds": logs[m][-1]["wall_time"],
                         "final": float(logs[m][-1]["train_loss"]), "compile_seconds": compile_s})
    finally:
        net.set_params(start)
    common_steps = min(r["updates"] for r in rows)
    common_seconds = min(r["seconds"] for r in rows)
    for r in rows:
        r["at_common_updates"] = _at(logs[r["method"]], "step", common_steps)
        r["at_common_seconds"] = _at(logs[r["method"]], "wall_time", common_seconds)
    table = _table(rows, common_steps, common_seconds)
    if out_dir is not None:
        out = Path(out_dir)
        (out / "table.md").write_text(table + "\n")
        try:
            from pt_kfgn.plotting import plot_logs
        except ImportError:  # the optional plot extra
            pass
        else:
            evals = {m.upper(): [r for r in rs if r["train_loss"] != ""] for m, rs in logs.items()}
            plot_logs(evals, out / "loss_vs_update.png", x="step")
            plot_logs(evals, out / "loss_vs_wall_time.png", x="wall_time")
    return {"table": table, "rows": rows, "logs": logs}


def _table(rows, common_steps, common_seconds) -> str:
    def fmt(v):
        return "–" if v is None or not np.isfinite(v) else f"{v:.4g}"

    head = (f"| method | updates | training s | final loss | at update {common_steps} | at {common_seconds:.1f} s "
            f"| compile s |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['updates']} | {r['seconds']:.1f} | {fmt(r['final'])} | "
              f"{fmt(r['at_common_updates'])} | {fmt(r['at_common_seconds'])} | {r['compile_seconds']:.1f} |"
              for r in rows]
    return "\n".join(lines)
