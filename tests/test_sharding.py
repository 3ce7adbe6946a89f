"""Data-parallel steps on 4 simulated CPU devices (pt_kfgn.sharding), in a subprocess: XLA's device count
is fixed when jax is first imported."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pt_kfgn as pk

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs the jax extra")
METHODS = ("kfra", "kflr", "kfac", "adam", "hf")


@pytest.fixture(scope="module")
def report():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    worker = Path(__file__).with_name("sharded_worker.py")
    res = subprocess.run([sys.executable, str(worker), ",".join(METHODS)], env=env, capture_output=True, text=True, check=False,
                         timeout=900)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")]
    assert res.returncode == 0 and line, res.stderr[-3000:]
    return json.loads(line[0][len("RESULT "):])


@pytest.mark.parametrize("method", METHODS)
def test_ten_steps_on_four_devices_equal_ten_steps_on_one(report, method):
    r = report[method]
    assert r["param_diff"] < 1e-12 and r["loss_diff"] < 1e-12, r


@pytest.mark.parametrize("method", METHODS)
def test_the_batch_sums_are_all_reduces_and_the_batch_is_never_gathered(report, method):
    r = report[method]
    assert r["all_reduce"] > 0 and r["all_gather"] == 0, r


@pytest.mark.parametrize("method", METHODS)
def test_a_four_device_checkpoint_continues_on_one_device(report, method):
    r = report[method]
    assert r["resume_loss_diff"] < 1e-12 and r["resume_param_diff"] < 1e-12, r


def test_a_batch_that_does_not_split_evenly_and_too_many_devices_are_refused(report):
    assert "cannot be split evenly over 4 devices" in report["errors"]["indivisible"]
    assert "xla_force_host_platform_device_count" in report["errors"]["too_many"]


def test_devices_need_the_jax_backend():
    net = pk.mlp([3, 2], ["identity"])
    with pytest.raises(ValueError, match="needs backend='jax'"):
        pk.make_optimizer("adam", net, "mse", backend="numba", devices=2)
