"""Every experiment script runs end to end in its smoke configuration (tiny nets, few steps)."""

import json
import math

import pytest


@pytest.fixture(autouse=True)
def _cache(data_env):
    return data_env


def _need_mnist(shared_dir):
    if not (shared_dir / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is absent (the scripts would download it)")


def test_autoencoders_smoke(tmp_path, shared_dir):
    from experiments.autoencoders import main

    names = ["curves", "faces"]
    if (shared_dir / "data" / "mnist").exists():
        names.append("mnist")
    if not (shared_dir / "data" / "olivetti").exists():
        names.remove("faces")
    res = main(names, "smoke", tmp_path)
    for name in names:
        r = json.loads((tmp_path / name / "results.json").read_text())
        assert math.isfinite(r["kfra"]["final_train_loss"]) and r["kfra"]["final_train_loss"] > 0
        assert r["adam_grid"]["n_runs"] == 2 and r["adam_grid"]["best"] is not None
        assert (tmp_path / name / "loss_vs_step.png").exists() and (tmp_path / name / "loss_vs_wall_time.png").exists()
        assert res[name]["kfac"]["steps"] == 3
    from experiments.report import main as report

    (tmp_path / "autoencoders").mkdir()
    for name in names:
        (tmp_path / name).rename(tmp_path / "autoencoders" / name)
    text = report(tmp_path)
    assert "| kfra |" in text and "loss at update 3" in text and (tmp_path / "RESULTS.md").exists()


def test_mixture_smoke(tmp_path, shared_dir):
    _need_mnist(shared_dir)
    from experiments.mixture import main

    res = main("smoke", tmp_path)
    assert all(res[m]["steps"] == 3 for m in ("kflr", "kfra", "kfac"))
    assert (tmp_path / "loss_vs_step.png").exists()


def test_alignment_smoke(tmp_path):
    from experiments.alignment import main

    rows = main("curves", "smoke", tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 4]
    assert all(-1 <= r["kfra_tikhonov_vs_full"] <= 1 for r in rows)
    assert (tmp_path / "curves" / "alignment.png").exists()


def test_benchmarks_smoke(tmp_path):
    from experiments.benchmarks import flops, main

    rep = main(quick=True, json_path=tmp_path / "b.json", backends=["fast"], reps=1, batch=8, widths=(4, 2),
               methods=("adam", "kfra", "kfac"), dim=12)
    ratios = json.loads((tmp_path / "b.json").read_text())["runs"]["fast-float32"]["ratios"]
    assert set(ratios) >= {"kfra_over_adam", "kfac_over_kfra"} and rep["batch"] == 8
    # FLOP count of a gradient step: forward and two backward products per layer, less the gradient w.r.t. the
    # data that no step computes: here 5 products of 2 N d_in d_out, as many as the compiled Adam step holds
    assert flops("adam", [12, 4, 12], 8) == 5 * (2 * 8 * 12 * 4)
    import numpy as np

    from pt_kfgn.graph.layers import build_net
    from pt_kfgn.optim import make_optimizer

    adam = make_optimizer("adam", build_net(12, 12, (4,), "tanh", 0, "float32", autoencoder=True), "bce")
    adam.step(np.zeros((8, 12), "float32"), np.zeros((8, 12), "float32"))
    products = ("Dot", "Dot22", "Dot22Scalar", "Gemm")  # a product, before or after PyTensor's BLAS rewrites
    assert sum(type(n.op).__name__ in products for n in adam._fn.maker.fgraph.apply_nodes) == 5


def test_sensitivity_smoke(tmp_path):
    from experiments.sensitivity import main

    res = main("smoke", tmp_path)
    assert set(res) == {"curves/lam150", "curves/lam1.5", "curves/gamma1"}
    assert res["curves/lam150"] != res["curves/lam1.5"] != res["curves/gamma1"]


def test_profile_step_smoke(tmp_path):
    from experiments.profile_step import STAGES, main

    main(reps=1, batch=8, dtype="float64", backend="fast", json_path=tmp_path / "p.json", widths=(4, 2), dim=12)
    saved = json.loads((tmp_path / "p.json").read_text())
    assert [r["stage"] for r in saved["rows"]][:len(STAGES)] == list(STAGES)


def test_profiled_stages_are_the_steps_own_graph():
    """The direction the profile's stage 4 computes is the one the optimiser steps along: Δθ = α* δ."""
    import numpy as np

    from experiments.profile_step import stage_outputs
    from pt_kfgn.backend import compile_function
    from pt_kfgn.graph.layers import build_net
    from pt_kfgn.optim import make_optimizer

    net = build_net(12, 12, (4, 2), "tanh", 0, "float64", autoencoder=True)
    opt = make_optimizer("kfra", net, "bce", backend="fast", gamma_search=False)
    X = (np.random.default_rng(0).random((8, 12)) < 0.3).astype(float)
    n = len(opt.params)
    deltas = compile_function([net.X, opt.y], stage_outputs(opt, 4), backend="fast")(X, X)[1 + n:]
    before = [p.get_value() for p in opt.params]
    stats = opt.step(X, X)
    assert stats["accepted"]
    for p, b, d in zip(opt.params, before, deltas):
        np.testing.assert_allclose(p.get_value() - b, stats["alpha"] * d, rtol=1e-8, atol=1e-12)


def test_curves_long_smoke(tmp_path):
    from experiments.curves_long import main

    s = main(out=tmp_path, smoke=True)
    assert s["final"]["kfra"]["steps"] == 6 and s["final"]["adam"]["steps"] == 20
    assert s["final"]["kfra_amortised"]["steps"] == 6 and s["amortised_at_kfra_updates"] is not None
    assert (tmp_path / "loss_vs_wall_time.png").exists() and (tmp_path / "summary.json").exists()


def test_figures_smoke_successive_halving_and_resume(tmp_path):
    """The long-run pipeline on CURVES: 4 Adam configurations to ½, the best 2 to the end, the second order at
    defaults; a second call resumes (trains nothing); the summary has the issue's fields."""
    from experiments.figures import COPIED, main, problem_dir

    main(["curves"], "smoke", tmp_path)
    d = problem_dir(tmp_path, "curves")
    s = json.loads((d / "summary.json").read_text())
    assert {g["updates"] for g in s["adam_grid"]} == {4, 8}  # successive halving: 4 configurations to ½, 2 on
    assert sum(g["updates"] == 8 for g in s["adam_grid"]) == 2
    for m in ("kfra", "kfac", "adam_default", "adam_best"):
        e = s["methods"][m]
        assert {"updates", "train_seconds", "final_train_loss", "final_avg_train_loss", "step_seconds", "curve"} <= set(e)
    assert s["methods"]["kfra"]["updates"] == 4 and s["methods"]["adam_best"]["updates"] == 8
    assert set(s["comparison"]) == {"equal_updates", "equal_time", "time_to_target"}
    compared = ("kfra", "kfac", "adam_default", "adam_best")  # equal time: the earliest end, where all have a value
    eq = s["comparison"]["equal_time"]
    assert eq["seconds"] == min(s["methods"][m]["wall_seconds"] for m in compared)
    assert all(eq[m] is not None for m in compared)
    # decay periods 8 and 4 act only after update 4: the second of each learning rate is a copy to ½ ...
    copies = [g for g in s["adam_grid"] if (d / "adam" / g["tag"] / COPIED).exists()]
    assert [g["decay_fraction"] for g in copies] == [0.5, 0.5]
    # ... and a copy that continues is the run its configuration takes from scratch
    from experiments.common import run
    from experiments.figures import CONFIGS, _data
    from pt_kfgn.train import read_log

    cfg = CONFIGS["smoke"]
    assert any(g["updates"] == 8 for g in copies)
    for g in (g for g in s["adam_grid"] if g["updates"] == 8):
        X, Y, loss, _ = _data("curves", cfg)
        ref = tmp_path / "scratch" / g["tag"]
        run("adam", X, Y, loss, out=ref, steps=8, widths=cfg["widths"], batch_size=cfg["batch_size"],
            dtype=cfg["dtype"], backend="fast", eval_every=cfg["eval_every"], X_eval=X[:cfg["eval_n"]],
            Y_eval=Y[:cfg["eval_n"]], lr=g["lr"], decay_period=g["decay_period"], checkpoint_every=100)
        ours = [(r["step"], r["train_loss"], r["lr"]) for r in read_log(d / "adam" / g["tag"] / "log.csv")]
        assert ours == [(r["step"], r["train_loss"], r["lr"]) for r in read_log(ref / "log.csv")]
    stamp = (d / "kfra" / "log.csv").stat().st_mtime_ns
    main(["curves"], "smoke", tmp_path)  # everything is there: nothing is trained again
    assert (d / "kfra" / "log.csv").stat().st_mtime_ns == stamp
    assert (d / "loss_vs_update.png").exists() and (d / "loss_vs_wall_time.png").exists()
    assert "| kfra | " in (d / "table.md").read_text()


def test_figures_keep_the_backends_a_problem_was_measured_and_run_on(tmp_path):
    """A problem started under an older ``BACKENDS`` keeps its backends (runs resumed, summary's protocol)."""
    import json

    from experiments.figures import BACKENDS, CONFIGS, _measured_backends

    assert _measured_backends(tmp_path, CONFIGS["full"]) == BACKENDS  # nothing measured yet
    (tmp_path / "step_seconds.json").write_text(json.dumps({"methods": {"kfra": {"backend": "numba"}}}))
    assert _measured_backends(tmp_path, CONFIGS["full"]) == {**BACKENDS, "kfra": "numba"}


def test_scaling_model():
    from experiments.scaling import DEVICES, NETS, allreduce_bytes, model
    from pt_kfgn.graph.layers import build_net

    sizes = NETS["paper autoencoder 784-1000-500-250-30-…-784"]
    net = build_net(784, 784, sizes[1:5], "tanh", 0, "float32", True)  # Adam all-reduces exactly the gradient
    assert allreduce_bytes("adam", sizes, 1) == 4 * sum(p.get_value().size for p in net.flat_params)
    r = model()
    for rows in r["nets"].values():
        kfra, amortised = rows["kfra"], rows["kfra, curvature every 5"]
        assert kfra[0]["allreduce_s"] == 0 and all(p["allreduce_s"] > 0 for p in kfra[1:])
        assert amortised[0]["allreduce_bytes"] < kfra[0]["allreduce_bytes"]  # factor statistics every 5 steps
        assert [p["devices"] for p in kfra] == list(DEVICES)
