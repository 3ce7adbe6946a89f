"""Crash safety (issue 29): a training subprocess killed with SIGKILL at random moments — while it imports and
compiles, between steps, while a checkpoint is written — and resumed, ends with the log and the parameters of an
uninterrupted run, bit for bit.  20 kills across four methods."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("kill_worker.py")
STEPS = 40
KILLS = {"kfra": 6, "kfac": 5, "adam": 5, "hf": 4}


def _rows(out):
    try:
        return max(0, len((out / "log.csv").read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _run(method, out, kill=None, rng=None):
    """Run the worker to the end, or with ``kill`` kill it: "compile" a random 0.3-3 s after it starts (importing,
    compiling), "step" right after the log gains 1-3 rows (between steps, or while the checkpoint after a step is
    written), "late" the same plus a random 0-30 ms.  Returns whether it was killed."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    p = subprocess.Popen([sys.executable, str(WORKER), method, str(out), str(STEPS)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill is None:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
        return False
    start, target = time.perf_counter(), _rows(out) + int(rng.integers(1, 4))
    wait = float(rng.uniform(0.3, 3.0))
    while p.poll() is None:
        if kill == "compile" and time.perf_counter() - start > wait or kill != "compile" and _rows(out) >= target:
            if kill == "late":
                time.sleep(float(rng.uniform(0, 0.03)))
            p.send_signal(signal.SIGKILL)
            p.wait()
            return True
        time.sleep(0.002)
    return False


def _log(out):
    with open(out / "log.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(fh)]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(KILLS))
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, method):
    ref = tmp_path / "ref"
    _run(method, ref)
    out = tmp_path / "killed"
    rng = np.random.default_rng(len(method))
    kills = sum(_run(method, out, ("compile", "step", "late")[i % 3], rng) for i in range(KILLS[method]))
    _run(method, out)  # the last resume runs to the end
    assert kills == KILLS[method]
    assert _log(out) == _log(ref)
    a, b = np.load(ref / "final.npz"), np.load(out / "final.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
