"""Figures 2 and 3 at length: the second-order methods at default settings against a tuned Adam.

Per problem (CURVES, MNIST, FACES autoencoders: KFRA and KFAC; MNIST odd/even with the mixture loss: KFLR, KFRA
and KFAC), every run resumable and the suite continuable across sessions:

1. ``step_seconds.json``: each method's step time on the problem, measured on a quiet machine before training
   (the mean over a full T₂ cycle for KFGN, the median of 20 steps for Adam; ``--measure-only`` redoes it);
2. the second-order methods at their defaults for ``steps`` updates (no tuning);
3. Adam at lr 1e-3 (its default) for ``adam_factor × steps`` updates;
4. Adam over learning rates 2⁻⁶ … 2⁻¹³ × decay periods {100, 50, 25, 12.5, 6.25} % of its run (halving
   schedule), by **successive halving** [ours, the budget's]: all 40 configurations run the first ⅛ of the run,
   the best 10 (by training error there) continue to ½, the best 3 to the end. A configuration that continues
   resumes from its checkpoint, so its trajectory is the one an uninterrupted run would take.  Configurations
   whose decay period has not yet acted (same lr, period ≥ the rung's length) take identical updates: the
   first is trained, the others get a copy of its log and checkpoint (bit-identical on CURVES, checked).

Wall-clock axes and columns are ``updates × the step time of step_seconds.json`` (measured, not the run's own
clock, which shares the machine with other work); each run's own clock is kept as ``train_seconds``.
Each method runs on the backend that is fastest for it (``BACKENDS``; README "Performance").

    python -m experiments.figures --full --problems curves,mnist,faces,mnist-oddeven --out results
    python -m experiments.figures --full --problems curves --plot-only --out results

Writes ``<out>/figure2/<dataset>/`` and ``<out>/figure3/mnist-oddeven/``: ``summary.json``, ``loss_vs_update.png``,
``loss_vs_wall_time.png`` and one folder per run (``log.csv``, ``summary.json``; checkpoints are not committed, and
the logs are committed as ``log.csv.gz``: ``python -m experiments.report --compress-logs``).
"""

from __future__ import annotations

import json
import math
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np

from experiments.common import PAPER_WIDTHS, config_parser, mean_curve, run
from pt_kfgn.data import load_dataset
from pt_kfgn.graph.layers import build_net
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.optim import make_optimizer
from pt_kfgn.optim.first_order import halving_schedule
from pt_kfgn.plotting import plot_damping, plot_logs
from pt_kfgn.train import log_file, read_log

PROBLEMS = {
    "curves": dict(figure="figure2", methods=("kfra", "kfac"), autoencoder=True, n_train=20000),
    "mnist": dict(figure="figure2", methods=("kfra", "kfac"), autoencoder=True, n_train=50000),
    "faces": dict(figure="figure2", methods=("kfra", "kfac"), autoencoder=True, n_train=None),
    # a problem's "options" go to its second-order runs (`--options` runs a variant, as results/mixture_variants,
    # docs/reproduction.md).  The mixture's: the paper's moving average on the curvature matrices [ours to use it
    # here: with one output each batch's factors have rank ≤ 1,000 (App. C.4) and a hard batch's step is long
    # where only other batches constrain it; docs/algorithm.md "The step's model at confident mistakes"]
    "mnist-oddeven": dict(figure="figure3", methods=("kflr", "kfra", "kfac"), autoencoder=False, n_train=50000,
                          options={"ema": 0.95}),
}
# the faster backend per method on the 2-core CPU (results/bench.json): JAX for every step since XLA's LAPACK
# calls run with one OpenBLAS thread (commit 866cf43); CURVES, MNIST and FACES ran their KFGN steps on Numba,
# then the faster (each step_seconds.json names the backend it measured)
BACKENDS = {"adam": "jax", "kfra": "jax", "kfac": "jax", "kflr": "jax"}
CONFIGS = {
    # the protocol: ≥ 2,000 second-order updates, Adam 3× as long, the paper's grid
    "full": dict(steps=2000, adam_factor=3, seeds=(0, 1, 2), lrs=[2.0 ** -k for k in range(6, 14)],
                 decay_fractions=[1.0, 0.5, 0.25, 0.125, 0.0625], rungs=[(40, 1 / 8), (10, 1 / 2), (3, 1.0)],
                 eval_every=25, eval_n=5000, batch_size=1000, widths=PAPER_WIDTHS, dtype="float32"),
    # [ours] minutes: the same pipeline on a subset with a 6-point grid
    "quick": dict(steps=40, adam_factor=3, seeds=(0,), lrs=[2.0 ** -6, 2.0 ** -9, 2.0 ** -12], decay_fractions=[1.0, 0.25],
                  rungs=[(6, 1 / 3), (2, 1.0)], eval_every=10, eval_n=2000, batch_size=1000, widths=PAPER_WIDTHS,
                  dtype="float32", n_train=5000),
    # [ours] the test suite's smoke run: a tiny net in float64 on the fast-compiling backend
    "smoke": dict(steps=4, adam_factor=2, seeds=(0, 1), lrs=[2.0 ** -6, 2.0 ** -9], decay_fractions=[1.0, 0.5],
                  rungs=[(4, 1 / 2), (2, 1.0)], eval_every=1, eval_n=100, batch_size=50, widths=(8, 3),
                  dtype="float64", n_train=200, backend="fast", measure_reps=5),
}
PROBLEMS_OF = {p: c["methods"] for p, c in PROBLEMS.items()}  # a problem folder's name → its second-order methods
TOP_K = (10, 20)
COPIED = "copied_from.json"  # in a grid run whose first updates are a copy of a twin's (:func:`_copy_run`)


def problem_dir(out: Path, problem: str) -> Path:
    return Path(out) / PROBLEMS[problem]["figure"] / problem


def adam_grid(cfg: dict) -> list[dict]:
    """The 40 (lr, decay) configurations; decay periods are fractions of Adam's whole run."""
    total = cfg["steps"] * cfg["adam_factor"]
    return [dict(tag=f"lr2^-{round(-math.log2(lr))}_decay{frac:g}", lr=lr, decay_fraction=frac,
                 decay_period=max(1, round(frac * total))) for lr in cfg["lrs"] for frac in cfg["decay_fractions"]]


def _data(problem: str, cfg: dict):
    n = cfg.get("n_train", PROBLEMS[problem]["n_train"])
    X, Y, loss, label = load_dataset(problem, n)
    return X, Y, loss, label


def _backend(cfg: dict, method: str) -> str:
    return cfg.get("backend") or BACKENDS[method]


def _measured_backends(d: Path, cfg: dict) -> dict:
    """Each method's backend: the one ``step_seconds.json`` measured it on, so a problem keeps the backends it
    started with (and its wall-clock columns match its runs) when ``BACKENDS`` changes; else :data:`BACKENDS`."""
    path = d / "step_seconds.json"
    measured = json.loads(path.read_text())["methods"] if path.exists() else {}
    return {m: measured.get(m, {}).get("backend") or _backend(cfg, m) for m in BACKENDS}


def measure_steps(problem: str, cfg: dict, out: Path) -> dict:
    """Clean step times on the problem's first batch (call on a quiet machine)."""
    reps = cfg.get("measure_reps", 20)
    X, Y, loss, _ = _data(problem, cfg)
    n = min(cfg["batch_size"], len(X))
    Xb, Yb = X[:n], Y[:n]
    res = {"date": str(date.today()), "machine": f"{platform.machine()}, 2-core CPU", "batch": n, "methods": {}}
    for method in ("adam", *PROBLEMS[problem]["methods"]):
        net = build_net(X.shape[1], Y.shape[1], cfg["widths"], "tanh", 0, cfg["dtype"],
                        PROBLEMS[problem]["autoencoder"])
        options = {} if method == "adam" else PROBLEMS[problem].get("options", {})
        method_loss, options = _variant(loss, options)
        opt = make_optimizer(method, net, method_loss, backend=_backend(cfg, method), **options)
        t = time.perf_counter()
        opt.compile(example=(Xb, Yb), steps=reps + 1)
        compile_s = time.perf_counter() - t
        opt.step(Xb, Yb)
        ts = []
        for _ in range(reps):  # KFGN: 20 steps = one T₂ cycle (γ search, T₁ trial losses)
            t = time.perf_counter()
            opt.step(Xb, Yb)
            ts.append(time.perf_counter() - t)
        step = float(np.median(ts)) if method == "adam" else float(np.mean(ts))
        res["methods"][method] = {"step_seconds": step, "backend": _backend(cfg, method), "compile_seconds": compile_s}
        print(f"{problem} {method}: {step * 1e3:.1f} ms per step ({_backend(cfg, method)})", flush=True)
    d = problem_dir(out, problem)
    d.mkdir(parents=True, exist_ok=True)
    (d / "step_seconds.json").write_text(json.dumps(res, indent=2))
    return res


def _last_step(run_dir: Path) -> int:
    """The last logged update (a run's last update is logged, then checkpointed)."""
    log = log_file(run_dir)
    if log is None:
        return 0
    rows = read_log(log)
    return int(rows[-1]["step"]) if rows else 0


def options_text(options: dict) -> str:
    """A variant's options as the plots' note prints them: ``ema 0.95, model_curvature fisher``."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, int | float) else f"{k} {v}" for k, v in options.items())


def _variant(loss, options: dict) -> tuple:
    """A variant's options split into the loss and KFGN's keyword arguments: ``"curvature"`` and
    ``"model_curvature"`` pick the output curvatures of a loss that offers several
    (:class:`~pt_kfgn.graph.losses.Mixture`'s; [ours], variants of Figure 3); the rest go to the optimiser."""
    options = dict(options)
    chosen = {k: options.pop(k) for k in ("curvature", "model_curvature") if k in options}
    if not chosen:
        return loss, options
    loss = get_loss(loss)
    if not set(chosen.values()) <= set(getattr(loss, "CURVATURES", ())):
        raise ValueError(f"the {loss.name} loss has no output curvature {chosen}")
    return type(loss)(**chosen), options


def _train(problem, cfg, data, method, run_dir: Path, steps: int, backend: str, **kw) -> bool:
    """Train one run up to ``steps`` (resuming it); False when it was already there."""
    if _last_step(run_dir) >= steps:
        return False
    X, Y, loss, _ = data
    loss, kw = _variant(loss, kw)
    t = time.perf_counter()
    run(method, X, Y, loss, out=run_dir, steps=steps, widths=cfg["widths"], autoencoder=PROBLEMS[problem]["autoencoder"],
        batch_size=cfg["batch_size"], dtype=cfg["dtype"], backend=backend, eval_every=cfg["eval_every"],
        X_eval=X[:cfg["eval_n"]], Y_eval=Y[:cfg["eval_n"]], resume=True, checkpoint_every=100, **kw)
    print(f"{problem} {run_dir.relative_to(run_dir.parents[1])}: {steps} updates ({time.perf_counter() - t:.0f} s)",
          flush=True)
    return True


def _trajectory_key(c: dict, steps: int) -> tuple:
    """Configurations with one key take identical updates 1 … ``steps``: same learning rate, and a decay period
    that has not halved it yet (the rate of update t is ``lr · 0.5^⌊(t − 1) / period⌋``)."""
    halved = halving_schedule(1.0, steps, c["decay_period"]) < 1.0  # the schedule's own rule, at the last update
    return c["lr"], (c["decay_period"] if halved else None)


def _copy_run(src: Path, dst: Path, c: dict) -> None:
    """[ours, the budget's] A configuration whose first ``steps`` updates are those of an already trained one
    (:func:`_trajectory_key`) gets a copy of that run's log and checkpoint instead of a recomputation; when it
    continues, its own decay period acts from its checkpoint on.  ``copied_from.json`` says so (its
    ``wall_time`` column up to there is the source's own clock)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (log_file(src).name, "checkpoint.npz"):
        shutil.copyfile(src / name, dst / name)
    note = {"source": src.name, "updates": _last_step(dst), "lr": c["lr"], "decay_period": c["decay_period"]}
    (dst / COPIED).write_text(json.dumps(note, indent=2))
    print(f"{dst.name}: updates 1-{note['updates']} are those of {src.name} (copied)", flush=True)


def _final(run_dir: Path, upto: int | None = None):
    rows = [r for r in read_log(run_dir / "log.csv") if r["train_loss"] is not None
            and (upto is None or r["step"] <= upto)]
    return rows[-1]["train_loss"] if rows else float("inf")


def seed_dirs(d: Path, method: str, cfg: dict) -> list[Path]:
    """A second-order method's runs: one folder per seed (network initialisation, batch order, KFAC's samples)."""
    return [d / method / f"seed{k}" for k in cfg["seeds"]]


def run_problem(problem: str, cfg: dict, out: Path, seeds=None, second_order_only: bool = False) -> dict:
    """Train everything of one problem (resuming what exists), then summarise and plot.

    ``seeds`` restricts the second-order runs to some of ``cfg["seeds"]`` (the order a long suite runs in);
    ``second_order_only`` skips the Adam runs."""
    d = problem_dir(out, problem)
    d.mkdir(parents=True, exist_ok=True)
    data = _data(problem, cfg)
    if not (d / "step_seconds.json").exists():
        measure_steps(problem, cfg, out)
    backends = _measured_backends(d, cfg)
    for k in cfg["seeds"] if seeds is None else seeds:
        for m in PROBLEMS[problem]["methods"]:
            if _train(problem, cfg, data, m, d / m / f"seed{k}", cfg["steps"], backends[m], seed=k,
                      **PROBLEMS[problem].get("options", {})):
                summarise(problem, cfg, out)  # partial results are readable while the suite goes on
    if second_order_only:
        return summarise(problem, cfg, out)
    total = cfg["steps"] * cfg["adam_factor"]
    _train(problem, cfg, data, "adam", d / "adam_default", total, backends["adam"], lr=1e-3)
    alive = adam_grid(cfg)
    for i, (keep, frac) in enumerate(cfg["rungs"]):
        alive = alive[:keep]
        steps = max(1, round(frac * total))
        trained = {}  # (lr, decay period or None when it does not halve before `steps`) -> the run trained so far
        changed = False
        for c in alive:
            run_dir = d / "adam" / c["tag"]
            twin = trained.get(_trajectory_key(c, steps))
            if twin is not None and _last_step(twin) == steps and _last_step(run_dir) < steps:
                _copy_run(twin, run_dir, c)
                changed = True
            else:
                changed |= _train(problem, cfg, data, "adam", run_dir, steps, backends["adam"], lr=c["lr"],
                                  decay_period=c["decay_period"])
            trained.setdefault(_trajectory_key(c, steps), run_dir)
        alive.sort(key=lambda c: _final(d / "adam" / c["tag"], steps))
        for c in alive[cfg["rungs"][i + 1][0] if i + 1 < len(cfg["rungs"]) else keep:]:
            (d / "adam" / c["tag"] / "checkpoint.npz").unlink(missing_ok=True)  # out of the race: no resume needed
        if changed and i + 1 < len(cfg["rungs"]):  # partial results (the last rung's: below)
            summarise(problem, cfg, out)
    return summarise(problem, cfg, out)


def _seeds_curves(d: Path, m: str, cfg: dict, step_s: float) -> dict:
    """The curves of a second-order method's seed runs that have a log: ``{seed folder: curve}``."""
    return {r.name: _curve(r, step_s) for r in seed_dirs(d, m, cfg) if log_file(r) is not None and read_log(r / "log.csv")}


def _curve(run_dir: Path, step_s: float) -> list[dict]:
    return [{"step": r["step"], "wall_time": r["step"] * step_s, "train_loss": r["train_loss"],
             "avg_train_loss": r["avg_train_loss"], "batch_loss": None}
            for r in read_log(run_dir / "log.csv") if r["train_loss"] is not None]


def _at(curve: list[dict], x: float, key="step"):
    """The training error at update (or second) ``x``; None when the run has not got that far."""
    if not curve or curve[-1][key] < x - 1e-9:
        return None
    pts = [r["train_loss"] for r in curve if r[key] <= x + 1e-9]
    return pts[-1] if pts else None


def _time_to(curve: list[dict], target: float):
    hit = [r["wall_time"] for r in curve if r["train_loss"] <= target]
    return hit[0] if hit else None


def summarise(problem: str, cfg: dict, out: Path) -> dict:
    """``summary.json`` and the two figures from whatever logs exist."""
    d = problem_dir(out, problem)
    X_label = load_label(problem)
    steps_json = json.loads((d / "step_seconds.json").read_text())
    step_s = {m: v["step_seconds"] for m, v in steps_json["methods"].items()}
    total = cfg["steps"] * cfg["adam_factor"]
    entry = lambda curve, m, s: {
        "updates": int(curve[-1]["step"]), "step_seconds": s, "wall_seconds": curve[-1]["wall_time"],
        "train_seconds": read_log(d / m / "log.csv")[-1]["wall_time"] if log_file(d / m) is not None else None,
        "final_train_loss": curve[-1]["train_loss"], "final_avg_train_loss": curve[-1].get("avg_train_loss"),
        "curve": [[r["step"], r["train_loss"], r.get("avg_train_loss")] for r in curve]}
    methods, curves, bands = {}, {}, {}
    for m in PROBLEMS[problem]["methods"]:  # the mean over the seeds that reached the most updates, and the spread
        runs = _seeds_curves(d, m, cfg, step_s[m])
        if not runs:
            continue
        most = max(int(c[-1]["step"]) for c in runs.values())
        done = {k: c for k, c in runs.items() if int(c[-1]["step"]) == most}
        curves[m] = mean_curve(list(done.values()))
        methods[m] = {**entry(curves[m], f"{m}/{next(iter(done))}", step_s[m]), "seeds": sorted(done),
                      "seed_final_train_loss": {k: c[-1]["train_loss"] for k, c in done.items()},
                      "seed_train_seconds": {k: read_log(d / m / k / "log.csv")[-1]["wall_time"] for k in done}}
        finals = list(methods[m]["seed_final_train_loss"].values())
        methods[m]["final_min"], methods[m]["final_max"] = min(finals), max(finals)
        if len(done) > 1:
            bands[f"{m.upper()} seeds (min–max)"] = list(done.values())
    if log_file(d / "adam_default") is not None and read_log(d / "adam_default" / "log.csv"):
        curves["adam_default"] = _curve(d / "adam_default", step_s["adam"])
        methods["adam_default"] = entry(curves["adam_default"], "adam_default", step_s["adam"])
    grid = []
    for c in adam_grid(cfg):
        r = d / "adam" / c["tag"]
        if log_file(r) is not None and read_log(r / "log.csv"):
            cur = _curve(r, step_s["adam"])
            grid.append({**c, "updates": int(cur[-1]["step"]), "final_train_loss": cur[-1]["train_loss"],
                         "curve": cur})
    finished = sorted((g for g in grid if g["updates"] >= total), key=lambda g: g["final_train_loss"])
    longest = max((g["updates"] for g in grid), default=0)
    ranked = sorted((g for g in grid if g["updates"] == longest), key=lambda g: g["final_train_loss"])
    # Adam-best and the top-k only once every configuration has run the first rung: before, they are not
    first_rung = max(1, round(cfg["rungs"][0][1] * total))
    grid_ready = len(grid) == len(adam_grid(cfg)) and all(g["updates"] >= first_rung for g in grid)
    best = (finished or ranked or [None])[0] if grid_ready else None
    if best is not None:
        curves["adam_best"] = best["curve"]
        methods["adam_best"] = {**entry(best["curve"], f"adam/{best['tag']}", step_s["adam"]),
                                "lr": best["lr"], "decay_period": best["decay_period"], "tag": best["tag"]}
    for k in TOP_K if grid_ready else ():  # the top-k mean over the updates that at least k configurations reached
        reach = sorted({g["updates"] for g in grid}, reverse=True)
        upto = next((u for u in reach if sum(g["updates"] >= u for g in grid) >= k), None)
        if upto is None:
            continue
        top = sorted((g for g in grid if g["updates"] >= upto), key=lambda g: _at(g["curve"], upto))[:k]
        cut = [[r for r in g["curve"] if r["step"] <= upto] for g in top]
        mean = mean_curve(cut)
        curves[f"adam_top{k}_mean"] = mean
        methods[f"adam_top{k}_mean"] = {"updates": upto, "final_train_loss": mean[-1]["train_loss"] if mean else None,
                                        "configurations": [g["tag"] for g in top]}
        bands[f"Adam top-{k} (min–max)"] = cut
    second = PROBLEMS[problem]["methods"]
    n2 = cfg["steps"]
    # equal wall-clock time: the earliest end among the compared runs, so every one of them has a value there
    ends = {m: methods[m]["wall_seconds"] for m in [*second, "adam_best", "adam_default"] if m in methods}
    t_first = min(ends, key=ends.get) if ends else None
    t_ref = ends[t_first] if ends else None
    target = methods["adam_best"]["final_train_loss"] if "adam_best" in methods else None
    t_best = curves["adam_best"][-1]["wall_time"] if "adam_best" in curves else None
    comparison = {
        "equal_updates": {"updates": n2, **{m: _at(c, n2) for m, c in curves.items()}},
        "equal_time": {"seconds": t_ref, "of": t_first,
                       **({m: _at(c, t_ref, "wall_time") for m, c in curves.items()} if t_ref else {})},
        "time_to_target": {"target": target, "adam_best_seconds": t_best, **{
            m: (None if target is None or _time_to(curves[m], target) is None else
                {"seconds": _time_to(curves[m], target), "fraction_of_adam_best": _time_to(curves[m], target) / t_best})
            for m in second if m in curves}},
    }
    rungs = [f"{keep} configurations to {frac:g} of {total} updates" for keep, frac in cfg["rungs"]]
    backends = {m: b for m, b in _measured_backends(d, cfg).items() if m in ("adam", *PROBLEMS[problem]["methods"])}
    summary = {
        "problem": problem, "dataset": X_label, "date": str(date.today()),
        "protocol": {**{k: v for k, v in cfg.items() if k not in ("lrs",)}, "lrs": [f"2^{round(math.log2(v))}" for v in cfg["lrs"]],
                     "adam_updates": total, "successive_halving": rungs, "backends": backends,
                     "second_order_options": PROBLEMS[problem].get("options", {}),
                     "wall_clock": "updates x step_seconds (step_seconds.json, measured on a quiet machine)",
                     "second_order": "default settings plus second_order_options, no tuning", "hidden": "tanh [ours]"},
        "step_seconds": steps_json, "methods": methods, "comparison": comparison,
        "adam_grid": [{k: v for k, v in g.items() if k != "curve"} for g in grid],
        "adam_grid_progress": f"{len(grid)} of {len(adam_grid(cfg))} configurations started",
    }
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(d, curves, bands, methods, X_label, cfg)
    (d / "table.md").write_text(markdown_table(summary))
    return summary


def markdown_table(summary: dict) -> str:
    """The README's table for one problem: final error, θ̄, updates, wall clock, the error at the second-order
    runs' update count and at the earliest end among the compared runs (equal wall-clock time), and the time to
    reach Adam-best's final error as a fraction of Adam-best's."""
    comp, methods = summary["comparison"], summary["methods"]
    n, t = comp["equal_updates"]["updates"], comp["equal_time"]["seconds"]
    fmt = lambda v, f="{:.4g}": "–" if v is None else f.format(v)
    head = (f"| {summary['dataset']} | final error | θ̄ | updates | wall clock | at update {n} | at {fmt(t, '{:.0f}')} s "
            f"| time to Adam-best's final error |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    target = comp["time_to_target"]
    for m, e in methods.items():
        if "curve" not in e:
            continue
        hit = target.get(m)
        tt = "–" if m not in target or target["target"] is None else ("not reached" if hit is None else
                                           f"{hit['seconds']:.0f} s ({hit['fraction_of_adam_best']:.0%})")
        lines.append(f"| {m.replace('_', ' ')} | {fmt(e['final_train_loss'])} | {fmt(e.get('final_avg_train_loss'))} | "
                     f"{e['updates']} | {e['wall_seconds']:.0f} s | {fmt(comp['equal_updates'].get(m))} | "
                     f"{fmt(comp['equal_time'].get(m))} | {tt} |")
    return "\n".join(lines) + "\n"


def load_label(problem: str) -> str:
    return {"curves": "CURVES (regenerated, recipe CURVES-v0)", "mnist": "MNIST autoencoder",
            "faces": "FACES (regenerated, recipe FACES-v0)",
            "mnist-oddeven": "MNIST odd/even, mixture likelihood MIX-v0 [ours]"}[problem]


def plot(d: Path, curves: dict, bands: dict, methods: dict, label: str, cfg: dict) -> None:
    names = {"kfra": "KFRA", "kfac": "KFAC", "kflr": "KFLR", "adam_default": "Adam lr 1e-3"}
    logs = {names.get(m, m): c for m, c in curves.items() if not m.endswith("_mean") and m != "adam_best"}
    if "adam_best" in methods:
        b = methods["adam_best"]
        logs[f"Adam best (lr 2^{round(math.log2(b['lr']))}, decay every {b['decay_period']})"] = curves["adam_best"]
    for k in TOP_K:
        if f"adam_top{k}_mean" in curves:
            logs[f"Adam top-{k} mean"] = curves[f"adam_top{k}_mean"]
    options = options_text(PROBLEMS[d.name].get("options", {}))
    note = (f"{label}; batch {cfg['batch_size']}, {cfg['dtype']}; second order at defaults"
            f"{' + ' + options if options else ''}; Adam tuned by successive "
            f"halving; wall clock = updates x measured step time; tanh hidden [ours]")
    for x, name in (("step", "loss_vs_update.png"), ("wall_time", "loss_vs_wall_time.png")):
        plot_logs(logs, d / name, title=f"{label}: training error", x=x, note=note, bands=bands)
    runs = {f"{names.get(m, m)} {r.name}": read_log(r / "log.csv") for m in PROBLEMS_OF[d.name]
            for r in seed_dirs(d, m, cfg) if log_file(r) is not None}
    if runs:  # the damping of every second-order run: what a researcher reads first
        opts = PROBLEMS[d.name].get("options", {})
        floor = ("η", 1e-5) if opts.get("eta", 1e-5) else ("damping floor", opts.get("min_damping", 1e-8))
        plot_damping(runs, d / "damping.png", title=f"{label}: damping (Appendix B)", eta=floor[1],
                     eta_label=floor[0])


def main(problems=("curves", "mnist", "faces", "mnist-oddeven"), config="full", out="results", plot_only=False,
         measure_only=False, seeds=None, second_order_only=False, options=None) -> dict:
    """``options``: keyword arguments for every selected problem's second-order runs in place of its own (a
    variant of the figures, e.g. ``results/mixture_variants``)."""
    cfg = CONFIGS[config]
    res = {}
    for p in problems:
        if p not in PROBLEMS:
            raise ValueError(f"problem {p!r} is not one of {list(PROBLEMS)}")
    saved = {p: PROBLEMS[p] for p in problems}
    try:
        for p in problems:
            if options is not None:
                PROBLEMS[p] = {**PROBLEMS[p], "options": dict(options)}
            if measure_only:
                res[p] = measure_steps(p, cfg, Path(out))
            elif plot_only:
                res[p] = summarise(p, cfg, Path(out))
            else:
                res[p] = run_problem(p, cfg, Path(out), seeds, second_order_only)
    finally:
        PROBLEMS.update(saved)
    return res


if __name__ == "__main__":
    parser = config_parser(__doc__, "results")
    parser.set_defaults(config="full")
    parser.add_argument("--problems", default="curves,mnist,faces,mnist-oddeven")
    parser.add_argument("--plot-only", action="store_true", help="summarise and plot the existing logs")
    parser.add_argument("--measure-only", action="store_true", help="only (re)measure the step times")
    parser.add_argument("--seeds", default=None, help="comma list: only these seeds' second-order runs")
    parser.add_argument("--second-order-only", action="store_true", help="skip the Adam runs")
    parser.add_argument("--options", type=json.loads, default=None,
                        help='JSON keyword arguments for the second-order runs, e.g. \'{"ema": 0.95}\'')
    a = parser.parse_args()
    main(a.problems.split(","), a.config, a.out, a.plot_only, a.measure_only,
         [int(k) for k in a.seeds.split(",")] if a.seeds else None, a.second_order_only, a.options)
