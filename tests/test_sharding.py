"""Data-parallel steps on 4 simulated CPU devices (pt_kfgn.sharding), in a subprocess: XLA's device count
is fixed when jax is first imported."""

import importlib.util
import json

import pytest
from conftest import SHARDED_METHODS as METHODS
from conftest import sharding_worker

import pt_kfgn as pk

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs the jax extra")


@pytest.fixture(scope="module")
def report():
    worker = sharding_worker()  # started at collection (conftest), so that it ran beside the other tests
    rc = worker["proc"].wait(timeout=900)
    worker["out"].seek(0)
    worker["err"].seek(0)
    out, err = worker["out"].read(), worker["err"].read()
    line = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert rc == 0 and line, err[-3000:]
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
