"""The training loop: shuffled mini-batches, a progress bar, a CSV log, atomic checkpoints, resume.

A killed run restarted with ``resume=True`` continues from its last checkpoint on the **same
trajectory** as an uninterrupted run: the checkpoint holds the optimiser's shared state (parameters,
damping, factor averages, KFAC's RNG), its Python-side state, the batch RNG and the position in the
epoch; the CSV log is cut back to the checkpoint's step.
"""

from __future__ import annotations

import csv
import time
import warnings
from pathlib import Path

import numpy as np

from pt_kfgn import checkpoint as ckpt_io
from pt_kfgn.optim.base import StateMismatchError

LOG_FIELDS = ["step", "wall_time", "batch_loss", "train_loss", "avg_train_loss", "lambda", "gamma", "epsilon",
              "pi_min", "pi_max", "alpha", "rho", "accepted", "lr", "rolled_back", "batch_loss_before",
              "bounded"]
STAT_FIELDS = ("lambda", "gamma", "epsilon", "pi_min", "pi_max", "alpha", "rho", "lr", "bounded")  # copied from step()'s dict
CHECKPOINT = "checkpoint.npz"
LOG = "log.csv"


class Batches:
    """Shuffled mini-batches over ``n`` datapoints, reshuffled every epoch; state is picklable."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.n, self.batch_size = n, min(batch_size, n)
        self.rng = np.random.default_rng(seed)
        self.perm, self.pos = self.rng.permutation(n), 0

    def next(self) -> np.ndarray:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = self.rng.permutation(self.n), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "perm": self.perm.copy(), "pos": self.pos}

    def load(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perm, self.pos = state["perm"].copy(), state["pos"]


def check_schedule(*, steps: int, batch_size: int, eval_every: int, checkpoint_every: int) -> None:
    """Validate the loop's arguments (before anything is compiled); a clear ValueError otherwise."""
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    for name, v in (("batch_size", batch_size), ("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step``; a log compressed by :func:`compress_log` becomes ``log.csv``
    again, so that the resumed run appends to it."""
    source = log_file(path.parent)
    if source is None:
        return
    rows = [r for r in _log_rows(source) if int(r["step"]) <= step]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if source != path:
        source.unlink()


def warn_subnormal(X, dtype: str) -> int:
    """Warn when inputs hold subnormal numbers of ``dtype``: x86 BLAS runs ~10× slower on them."""
    tiny = np.finfo(dtype).tiny
    n = int(np.count_nonzero((X != 0) & (np.abs(X) < tiny)))
    if n:
        warnings.warn(f"the inputs hold {n} subnormal {dtype} values ({n / X.size:.1%}); BLAS runs ~10x slower "
                      f"on them: set them to zero (X[abs(X) < {tiny:.3g}] = 0)", RuntimeWarning, stacklevel=3)
    return n


def train(optimizer, X, Y, steps: int, *, batch_size: int = 1000, seed: int = 0, out_dir=None,
          eval_every: int = 50, checkpoint_every: int = 50, resume: bool = False, progress: bool = True,
          X_eval=None, Y_eval=None, time_limit: float | None = None) -> list[dict]:
    """Run ``steps`` optimiser steps on shuffled mini-batches of ``(X, Y)``.

    Parameters
    ----------
    optimizer : Optimizer
        Any optimiser of :mod:`pt_kfgn.optim`.
    X, Y : array_like
        Training inputs and targets.
    steps : int
        Total steps (a resumed run continues up to ``steps``).
    batch_size, seed : int
        Mini-batch size (1000 in the paper) and the batch order's seed.
    out_dir : path, optional
        Where ``log.csv`` and ``checkpoint.npz`` go.
    eval_every, checkpoint_every : int
        Intervals of the training-loss evaluation and of the checkpoints.
    resume : bool
        Continue from ``out_dir``'s checkpoint, on the same trajectory as an uninterrupted run.
    progress : bool
        A tqdm progress bar (when tqdm is installed).
    X_eval, Y_eval : array_like, optional
        The evaluation set (default: the training set).
    time_limit : float, optional
        Stop cleanly after this many seconds of training.

    Returns
    -------
    list of dict
        The log rows of this call.

    Notes
    -----
    ``train_loss`` (the mean loss on ``X_eval``, default the whole training set) is logged every
    ``eval_every`` steps and at the end, with ``avg_train_loss``, the loss at the averaged parameters θ̄
    (eq. 44-45) for optimisers that keep them.  With ``out_dir``, the log goes to ``out_dir/log.csv``
    (appended as it is written) and a checkpoint to ``out_dir/checkpoint.npz`` (:mod:`pt_kfgn.checkpoint`)
    every ``checkpoint_every`` steps and at the end.  ``time_limit`` (seconds) stops early, cleanly.
    """
    check_schedule(steps=steps, batch_size=batch_size, eval_every=eval_every, checkpoint_every=checkpoint_every)
    X, Y = optimizer.check(X, Y)
    X_eval, Y_eval = (X, Y) if X_eval is None else optimizer.check(X_eval, Y_eval)
    warn_subnormal(X, optimizer.net.dtype)
    batches = Batches(len(X), batch_size, seed)
    out = Path(out_dir) if out_dir is not None else None
    start_step, elapsed, rows = 0, 0.0, []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        ckpt = out / CHECKPOINT
        if resume and ckpt.exists():
            state = ckpt_io.load(ckpt)
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (StateMismatchError, KeyError) as err:  # checked whole before anything changed
                raise ckpt_io.CheckpointError(f"{ckpt}: does not belong to this run: {err}") from err
            batches.load(state["batches"])
            start_step, elapsed = state["step"], state["elapsed"]
            _truncate_log(out / LOG, start_step)
        elif not resume or not ckpt.exists():
            with open(out / LOG, "w", newline="") as fh:
                csv.DictWriter(fh, fieldnames=LOG_FIELDS).writeheader()
            (out / (LOG + ".gz")).unlink(missing_ok=True)  # a run started afresh replaces a compressed log too

    def checkpoint(step):
        if out is not None:
            state = {"optimizer": optimizer.state_dict(), "batches": batches.state(), "step": step,
                     "elapsed": elapsed}
            ckpt_io.save(out / CHECKPOINT, state)

    bar = _progress(steps, start_step, progress)
    t0 = time.perf_counter() - elapsed
    try:
        for step in range(start_step + 1, steps + 1):
            idx = batches.next()
            stats = optimizer.step(X[idx], Y[idx])
            elapsed = time.perf_counter() - t0
            row = {"step": step, "wall_time": elapsed, "batch_loss": stats["loss"],
                   "train_loss": "", **{k: stats.get(k, "") for k in STAT_FIELDS},
                   "accepted": int(stats.get("accepted", True)),
                   "rolled_back": int(stats.get("rolled_back", False)),
                   "batch_loss_before": stats.get("loss_before", "")}
            last = step == steps or (time_limit is not None and elapsed > time_limit)
            if step % eval_every == 0 or last:
                t_eval = time.perf_counter()
                row["train_loss"] = optimizer.evaluate(X_eval, Y_eval)
                avg = optimizer.evaluate_averaged(X_eval, Y_eval)
                row["avg_train_loss"] = "" if avg is None else avg
                t0 += time.perf_counter() - t_eval  # evaluation time is not training time
            rows.append(row)
            if out is not None:
                with open(out / LOG, "a", newline="") as fh:
                    csv.DictWriter(fh, fieldnames=LOG_FIELDS).writerow(row)
                if step % checkpoint_every == 0 or last:
                    checkpoint(step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.4g}")
            if last:
                break
    finally:
        if bar is not None:
            bar.close()
        optimizer.host_state()
    return rows


def log_file(run_dir) -> Path | None:
    """A run folder's log: ``log.csv``, else ``log.csv.gz`` (compressed by :func:`compress_log`); None without
    either."""
    for name in (LOG, LOG + ".gz"):
        if (Path(run_dir) / name).exists():
            return Path(run_dir) / name
    return None


def compress_log(run_dir) -> Path | None:
    """Replace ``run_dir/log.csv`` by ``log.csv.gz`` (byte-identical for identical logs: no timestamp); readers
    and a resumed run take either.  Returns the compressed file, or None when there is no ``log.csv``."""
    import gzip
    import os

    src = Path(run_dir) / LOG
    if not src.exists():
        return None
    dst = src.with_name(LOG + ".gz")
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as fh, open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                                          mtime=0, compresslevel=9) as gz:
        gz.write(fh.read())
    os.replace(tmp, dst)
    src.unlink()
    return dst


def _log_rows(path: Path) -> list[dict]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


def read_log(path) -> list[dict]:
    """The CSV log as a list of dicts of floats (empty strings become None).

    ``path`` is a log or a run folder; a ``log.csv`` that :func:`compress_log` replaced is read from its
    ``log.csv.gz``."""
    path = Path(path)
    found = log_file(path) if path.is_dir() else (
        path if path.exists() or path.name != LOG else log_file(path.parent) or path)
    return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in _log_rows(found)]
