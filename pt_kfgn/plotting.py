"""Loss curves and damping traces from CSV logs (matplotlib is an optional extra)."""

from __future__ import annotations

import textwrap
from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'pt_kfgn[plot]')")
        return None
    return plt


def _series(rows, key, x="step"):
    return [(r[x], r[key]) for r in rows if r.get(key) not in (None, "") and r[key] == r[key]]


def plot_damping(logs: dict, path, title: str = "", eta: float | None = None, eta_label: str = "η") -> Path | None:
    """The damping trace of KFGN runs (Appendix B): λ and ``ε = γ + η`` (eq. 36), α* (eq. 40; an ``x`` where
    the loss's infimum shortened it, the log's ``bounded``) and ρ (eq. 42) against updates, one colour per run;
    ``eta`` is drawn as a reference line on the damping panel, labelled ``eta_label`` (a run with η = 0 draws
    its damping floor instead).

    ``logs`` maps a label to log rows (:func:`pt_kfgn.train.read_log`).  Returns the PNG path, or None when
    matplotlib is not installed.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    for i, (label, rows) in enumerate(logs.items()):
        c = f"C{i}"
        lam, eps = _series(rows, "lambda"), _series(rows, "epsilon")
        if lam:
            axes[0].plot(*zip(*lam), color=c, lw=1, label=f"{label} λ")
        if eps:
            axes[0].plot(*zip(*eps), color=c, lw=1, ls="--", label=f"{label} ε")
        alpha = [(s, a) for s, a in _series(rows, "alpha") if a > 0]
        if alpha:
            axes[1].plot(*zip(*alpha), color=c, lw=0.6, alpha=0.8, label=label)
        bounded = [(r["step"], r["alpha"]) for r in rows if r.get("bounded") and r.get("alpha")]
        if bounded:
            axes[1].plot(*zip(*bounded), color=c, marker="x", ms=4, lw=0)
        rho = _series(rows, "rho")
        if rho:
            axes[2].plot(*zip(*rho), color=c, marker=".", ms=2, lw=0, label=label)
    if eta:
        axes[0].axhline(eta, color="0.5", lw=0.8, ls=":", label=eta_label)
    for y in (0.25, 0.75):
        axes[2].axhline(y, color="0.5", lw=0.8, ls=":")
    axes[0].set(yscale="log", ylabel="λ (solid), ε = γ + η (dashed)", title=title)
    axes[1].set(yscale="log", ylabel="α*  (x: bounded by inf Ē)")
    axes[2].set(ylabel="ρ (T₁ steps)", xlabel="updates", ylim=(-1, 2))
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_logs(logs: dict, path, title: str = "", x: str = "step", ylabel: str = "training loss",
              note: str = "", bands: dict | None = None) -> Path | None:
    """One line per run: ``logs`` maps a label to log rows (dicts with x and ``train_loss``/``batch_loss``).

    ``bands`` maps a label to a list of logs drawn as one shaded band, their pointwise min to max (e.g. the
    top-k configurations of a grid).

    Returns the PNG path, or None when matplotlib is not installed.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, group in (bands or {}).items():
        by_x = {}
        for rows in group:
            for r in rows:
                if r.get("train_loss") not in (None, ""):
                    by_x.setdefault(r[x], []).append(r["train_loss"])
        pts = sorted((k, min(v), max(v)) for k, v in by_x.items() if len(v) == len(group))
        if pts:
            xs, lo, hi = zip(*pts)
            ax.fill_between(xs, lo, hi, alpha=0.15, color="0.4", lw=0, label=label)
    for label, rows in logs.items():
        pts = [(r[x], r["train_loss"]) for r in rows if r.get("train_loss") not in (None, "")]
        batch = [(r[x], r["batch_loss"]) for r in rows if r.get("batch_loss") not in (None, "")]
        line = ax.plot(*zip(*pts), marker="o", ms=3, label=label)[0] if pts else None
        avg = [(r[x], r["avg_train_loss"]) for r in rows if r.get("avg_train_loss") not in (None, "")]
        if avg:  # θ̄ (eq. 44-45), dashed, in the same colour
            ax.plot(*zip(*avg), ls="--", lw=1.2, color=line.get_color() if line else None, label=f"{label} θ̄")
        if len(batch) > 1:  # the per-batch loss, faint, in the same colour
            ax.plot(*zip(*batch), lw=0.8, alpha=0.35, color=line.get_color() if line else None,
                    label=None if line else f"{label} (batch loss)")
    ax.set_xlabel({"step": "updates", "wall_time": "wall-clock seconds"}.get(x, x))
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:  # an empty log (``--steps 0``) has nothing to label
        ax.legend(fontsize=8)
    fig.tight_layout()
    key = "dashed: averaged θ̄; faint: batch loss"  # under the axes, where the legend cannot hide it
    lines = textwrap.wrap(f"{note}; {key}" if note else key, 120)
    fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.035 * len(lines))
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=6.5, color="0.35")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
