"""Run in a subprocess by tests/test_sharding.py, with XLA_FLAGS=--xla_force_host_platform_device_count=4 set
before jax is imported: each method's 10 steps on 4 simulated CPU devices against the same steps on one, the
all-reduces in the compiled program, and a checkpoint moved between 4 devices and 1.  Prints JSON."""

import json
import sys

import numpy as np

import pt_kfgn as pk
from pt_kfgn.backend import compiled_text
from pt_kfgn.optim import make_optimizer

KWARGS = {"hf": {"max_iters": 5}, "kfra": {"T2": 4}, "kflr": {"T2": 4}, "kfac": {"T2": 4}, "adam": {}}


def batch(n, seed):
    r = np.random.default_rng(seed)
    return r.normal(size=(n, 6)), (r.random((n, 3)) < 0.5).astype(float)


def optimizer(method, devices):
    net = pk.mlp([6, 5, 4, 3], ["tanh", "tanh", "identity"], seed=1)
    return net, make_optimizer(method, net, "bce", backend="jax", devices=devices, **KWARGS[method])


def steps(opt, start, stop):
    return [opt.step(*batch(16, s))["loss"] for s in range(start, stop)]


def step_function(opt, method):
    if method == "hf":
        return opt.operator._grad_fn, ()
    if method == "adam":
        return opt._fn, ()
    noise = (np.random.default_rng(0).random((16, 3)),) if method == "kfac" else ()  # KFAC's sample noise
    return next(iter(opt._fns.values())), (*noise, np.float64(0.0), np.float64(0.0))


def compare(method):
    net1, one = optimizer(method, None)
    net4, four = optimizer(method, 4)
    l1, l4 = steps(one, 0, 10), steps(four, 0, 10)
    diff = max(float(np.max(np.abs(a - b))) for p, q in zip(net1.get_params(), net4.get_params()) for a, b in zip(p, q))
    fn, extra = step_function(four, method)
    text = compiled_text(fn, *batch(16, 0), *extra)
    # a checkpoint of the 4-device run, continued on one device, against the 4-device run continued. The
    # one-device optimiser (already compiled) is first moved away from that state by steps on other batches,
    # so that a load that missed anything (parameters, step count, damping, caches, KFAC's RNG) shows.
    steps(one, 20, 23)
    one.load_state_dict(four.state_dict())
    l_resumed, l_four = steps(one, 10, 13), steps(four, 10, 13)
    diff_resume = max(float(np.max(np.abs(a - b))) for p, q in zip(net1.get_params(), net4.get_params())
                      for a, b in zip(p, q))
    return {"param_diff": diff, "loss_diff": max(abs(a - b) for a, b in zip(l1, l4)),
            "all_reduce": text.count("all-reduce"), "all_gather": text.count("all-gather"),
            "resume_loss_diff": max(abs(a - b) for a, b in zip(l_resumed, l_four)), "resume_param_diff": diff_resume}


def errors():
    out = {}
    _, four = optimizer("kfra", 4)
    try:
        four.step(*batch(18, 0))
    except ValueError as err:
        out["indivisible"] = str(err)
    try:
        optimizer("adam", 8)
    except ValueError as err:
        out["too_many"] = str(err)
    return out


if __name__ == "__main__":
    report = {m: compare(m) for m in sys.argv[1].split(",")}
    report["errors"] = errors()
    print("RESULT " + json.dumps(report))
