"""Every experiment script runs end to end in its smoke configuration (tiny nets, few steps)."""

import importlib.util
import json

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _cache(data_env):
    return data_env


def _need_mnist(shared_dir):
    if not (shared_dir / "data" / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("../shared/data/mnist is absent (the scripts would download it)")


def test_alignment_smoke(tmp_path):
    from experiments.alignment import main

    rows = main("curves", "smoke", tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 4]
    assert all(-1 <= r["kfra_tikhonov_vs_full"] <= 1 for r in rows)
    assert (tmp_path / "curves" / "alignment.png").exists()


@pytest.mark.slow  # a script's smoke run; the default suite stays under 10 minutes
def test_benchmarks_smoke(tmp_path):
    import numpy as np

    from benchmarks.steps import flops, main
    from pt_kfgn.graph.layers import build_net
    from pt_kfgn.optim import make_optimizer

    rep = main(quick=True, json_path=tmp_path / "b.json", backends=["fast"], reps=1, batch=8, widths=(4, 2),
               methods=("adam", "kfra", "kfac"), dim=12)
    run = json.loads((tmp_path / "b.json").read_text())["runs"]["fast-float32"]
    assert set(run["ratios"]) >= {"kfra_over_adam", "kfac_over_kfra"} and rep["batch"] == 8
    # "of GEMM" divides by numpy's product timed interleaved with the steps
    gemm = run["numpy_gemm_gflops"]
    assert gemm > 0 and rep["numpy_gemm_gflops_float32"] == gemm
    assert run["methods"]["adam"]["gemm_fraction"] == pytest.approx(run["methods"]["adam"]["gflops"] / gemm)
    # FLOP count of a gradient step: forward and two backward products per layer, less the gradient w.r.t. the
    # data that no step computes: here 5 products of 2 N d_in d_out, as many as the compiled Adam step holds
    assert flops("adam", [12, 4, 12], 8) == 5 * (2 * 8 * 12 * 4)
    adam = make_optimizer("adam", build_net(12, 12, (4,), "tanh", 0, "float32", autoencoder=True), "bce")
    adam.step(np.zeros((8, 12), "float32"), np.zeros((8, 12), "float32"))
    products = ("Dot", "Dot22", "Dot22Scalar", "Gemm")  # a product, before or after PyTensor's BLAS rewrites
    assert sum(type(n.op).__name__ in products for n in adam._fn.maker.fgraph.apply_nodes) == 5


def test_sensitivity_smoke(tmp_path):
    from experiments.sensitivity import main

    res = main("smoke", tmp_path)
    assert set(res) == {"curves/lam150", "curves/lam1.5"}
    assert res["curves/lam150"] != res["curves/lam1.5"]
    assert main("smoke", tmp_path) == res  # resumed: the finished runs are read back, not retrained


def test_profile_step_smoke(tmp_path):
    from benchmarks.profile_step import STAGES, main

    main(reps=1, batch=8, dtype="float64", backend="fast", json_path=tmp_path / "p.json", widths=(4, 2), dim=12)
    saved = json.loads((tmp_path / "p.json").read_text())
    assert [r["stage"] for r in saved["rows"]][:len(STAGES)] == list(STAGES)


@pytest.mark.slow  # a script's smoke run; the default suite stays under 10 minutes
@pytest.mark.skipif(not importlib.util.find_spec("jax"), reason="needs jax")
def test_profile_trace_sorts_xlas_ops_by_kind(tmp_path):
    """``--trace``: the step's LAPACK calls and products are found in JAX's profiler trace and sorted by kind.

    Caught: every op sorted as "other" (the LAPACK and product kinds then read 0), and a Numba profile asked
    for a trace (it has no XLA ops: a clear error instead of an empty table)."""
    from benchmarks.profile_step import OP_KINDS, OTHER_OPS, main, op_kind

    assert op_kind("triangular_solve.12") == "triangular solves (LAPACK)" and op_kind("ynn_fusion.3") == OP_KINDS[0][0]
    assert op_kind("select_select_fusion.4") == OTHER_OPS and op_kind("ThunkExecutor::Execute") is None
    main(reps=2, batch=8, dtype="float32", backend="jax", json_path=tmp_path / "p.json", widths=(4, 2), dim=12,
         trace=True)
    traced = json.loads((tmp_path / "p.json").read_text())["trace"]
    assert set(traced["kinds"]) == {k for k, _ in OP_KINDS} | {OTHER_OPS}
    assert all(traced["kinds"][k] > 0 for k, _ in OP_KINDS[1:])  # the damped solves and factorisations
    assert 0 <= traced["no_op_running_ms"] <= traced["step_ms"]
    with pytest.raises(ValueError, match="needs --backend jax"):
        main(reps=1, batch=8, backend="numba", trace=True, widths=(4, 2), dim=12)


def test_an_op_is_in_flight_until_its_completion_marker():
    """XLA's Eigen products return from their trace event before their work is done; their ``end:`` markers say
    when it is. Caught: the markers ignored (the product would end at 2 instead of 50), and markers paired out of
    order across two steps."""
    from benchmarks.profile_step import in_flight

    starts = {"dot.1": [(100, 102, "p"), (0, 2, "p")], "add.2": [(60, 70, "e")]}
    ends = {"dot.1": [150, 50], "add.2": [69]}
    assert sorted(in_flight(starts, ends)) == [(0, 50, "p"), (60, 70, "e"), (100, 150, "p")]
    assert sorted(in_flight(starts, {"dot.1": [50]})) == [(0, 2, "p"), (60, 70, "e"), (100, 102, "p")]


def test_profiled_stages_are_the_steps_own_graph():
    """The direction the profile's stage 4 computes is the one the optimiser steps along: Δθ = α* δ."""
    import numpy as np

    from benchmarks.profile_step import stage_outputs
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


@pytest.mark.slow  # a script's smoke run; the default suite stays under 10 minutes
def test_figures_smoke_successive_halving_and_resume(tmp_path):
    """The long-run pipeline on CURVES: 4 Adam configurations to ½, the best 2 to the end, the second order at
    defaults; a second call resumes (trains nothing); the summary has the issue's fields."""
    from experiments.figures import COPIED, main, problem_dir

    main(["curves"], "smoke", tmp_path)
    d = problem_dir(tmp_path, "curves")
    s = json.loads((d / "summary.json").read_text())
    from experiments.report import main as report

    text = report(tmp_path)  # the reproduction table is generated from the summaries
    assert "| KFRA | 2 |" in text and "Adam, best of the grid" in text and (tmp_path / "RESULTS.md").exists()
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
    # every run evaluated by then has a value there (under load a tiny KFGN step can outlast Adam's whole smoke run,
    # and a run with no evaluation before that moment has none)
    first = {m: s["methods"][m]["curve"][0][0] * s["methods"][m]["step_seconds"] for m in compared}
    assert all(eq[m] is not None for m in compared if first[m] <= eq["seconds"] + 1e-9)
    assert eq[eq["of"]] is not None
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
    assert s["methods"]["kfra"]["seeds"] == ["seed0", "seed1"]  # the mean of two seeds, and their spread
    finals = s["methods"]["kfra"]["seed_final_train_loss"]
    assert s["methods"]["kfra"]["final_train_loss"] == pytest.approx(np.mean(list(finals.values())))
    assert finals["seed0"] != finals["seed1"]
    stamp = (d / "kfra" / "seed0" / "log.csv").stat().st_mtime_ns
    main(["curves"], "smoke", tmp_path)  # everything is there: nothing is trained again
    assert (d / "kfra" / "seed0" / "log.csv").stat().st_mtime_ns == stamp
    assert (d / "loss_vs_update.png").exists() and (d / "loss_vs_wall_time.png").exists()
    assert (d / "damping.png").exists()
    assert "| kfra | " in (d / "table.md").read_text()


def test_figures_keep_the_backends_a_problem_was_measured_and_run_on(tmp_path):
    """A problem started under an older ``BACKENDS`` keeps its backends (runs resumed, summary's protocol)."""
    import json

    from experiments.figures import BACKENDS, CONFIGS, _measured_backends

    assert _measured_backends(tmp_path, CONFIGS["full"]) == BACKENDS  # nothing measured yet
    (tmp_path / "step_seconds.json").write_text(json.dumps({"methods": {"kfra": {"backend": "numba"}}}))
    assert _measured_backends(tmp_path, CONFIGS["full"]) == {**BACKENDS, "kfra": "numba"}


def test_scaling_model():
    from benchmarks.scaling import DEVICES, NETS, allreduce_bytes, model
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


def test_a_problems_options_reach_its_second_order_runs_only(tmp_path, monkeypatch):
    """``PROBLEMS[p]["options"]`` go to p's second-order runs (the figures run at defaults: none set)."""
    import experiments.figures as fig

    calls = []
    monkeypatch.setitem(fig.PROBLEMS, "mnist-oddeven", {**fig.PROBLEMS["mnist-oddeven"], "options": {"ema": 0.95}})
    monkeypatch.setattr(fig, "_data", lambda problem, cfg: None)
    monkeypatch.setattr(fig, "measure_steps", lambda *a: None)
    monkeypatch.setattr(fig, "_measured_backends", lambda d, cfg: dict(fig.BACKENDS))
    monkeypatch.setattr(fig, "summarise", lambda *a: {})
    monkeypatch.setattr(fig, "_train", lambda problem, cfg, data, m, run_dir, steps, backend, **kw:
                        calls.append((problem, m, kw)) or False)
    for problem in ("mnist-oddeven", "curves"):
        fig.run_problem(problem, fig.CONFIGS["smoke"], tmp_path, second_order_only=True)
    mixture = [kw for p, m, kw in calls if p == "mnist-oddeven"]
    assert len(mixture) == 6 and all(kw == {"seed": kw["seed"], "ema": 0.95} for kw in mixture)
    assert all("ema" not in kw for p, m, kw in calls if p == "curves")
    assert not any("options" in fig.PROBLEMS[p] for p in fig.PROBLEMS if p != "mnist-oddeven")
    calls.clear()  # `--options` runs a variant: every selected problem's runs get them, and PROBLEMS is restored
    fig.main(["curves"], "smoke", tmp_path, second_order_only=True, options={"ema": 0.9})
    assert len(calls) == 4 and all(kw == {"seed": kw["seed"], "ema": 0.9} for p, m, kw in calls)
    assert "options" not in fig.PROBLEMS["curves"]


def test_a_variants_curvature_option_picks_the_losss_output_curvature(tmp_path, monkeypatch):
    """``{"curvature": "fisher"}`` trains with ``Mixture("fisher")``; KFGN gets the other options only."""
    import experiments.figures as fig
    from pt_kfgn.graph.losses import Mixture

    seen = []
    monkeypatch.setattr(fig, "run", lambda method, X, Y, loss, **kw: seen.append((loss, kw)))
    data = (np.zeros((4, 3)), np.zeros((4, 1)), "mixture", "")
    fig._train("mnist-oddeven", fig.CONFIGS["smoke"], data, "kflr", tmp_path / "r", 4, "fast", seed=0,
               curvature="fisher", ema=0.95)
    (loss, kw), = seen
    assert isinstance(loss, Mixture) and loss.curvature == "fisher"
    assert kw["ema"] == 0.95 and kw["seed"] == 0 and "curvature" not in kw
    fig._train("mnist-oddeven", fig.CONFIGS["smoke"], data, "kflr", tmp_path / "s", 4, "fast", ema=0.95)
    assert seen[-1][0] == "mixture"  # no curvature option: the problem's own loss
    assert fig.options_text({"ema": 0.95, "model_curvature": "fisher"}) == "ema 0.95, model_curvature fisher"
    fig._train("mnist-oddeven", fig.CONFIGS["smoke"], data, "kfra", tmp_path / "u", 4, "fast",
               model_curvature="fisher")
    loss, kw = seen[-1]
    assert (loss.curvature, loss.model_curvature) == ("positive-part", "fisher") and "model_curvature" not in kw
    with pytest.raises(ValueError, match="no output curvature"):
        fig._train("curves", fig.CONFIGS["smoke"], (*data[:2], "bce", ""), "kfra", tmp_path / "t", 4, "fast",
                   curvature="fisher")


def test_damping_criteria_read_a_log_as_issue_25_states_them():
    """ε's moves after update 500, the raise of λ + η by each ρ < ¼ verdict, the spike onsets after update 700."""
    from experiments.damping_criteria import criteria

    eta, nan = 1e-5, float("nan")
    rows = [{"step": t, "epsilon": 1e-3, "lambda": 1e-5, "rho": nan, "batch_loss": 1.0} for t in range(1, 1001)]
    for t, e in ((300, 1e-4), (600, 2e-3), (700, 1e-3), (800, 5e-4)):  # 300: not counted; after 500: up, down, down
        for r in rows[t - 1:]:
            r["epsilon"] = e
    rows[399]["rho"], rows[399]["lambda"] = 0.1, 2e-5    # a verdict that raised λ + η by 1.5 ×
    rows[899]["rho"], rows[899]["lambda"] = -3.0, 2e-5   # one that left it (rows 899 and 900 both 2e-5 after it)
    for r in rows[899:]:
        r["lambda"] = 2e-5
    rows[899]["rho"] = nan
    rows[900]["rho"] = -3.0                               # ... so this verdict raised nothing
    rows[749]["batch_loss"] = rows[750]["batch_loss"] = 9.0  # one onset (two spiking batches in a row)
    rows[649]["batch_loss"] = 9.0                         # before update 700: not counted
    for r in rows:
        r["batch_loss_before"] = ""                       # not logged: not counted as caused
    rows[749]["batch_loss_before"] = 4.0                  # the last step more than doubled this batch's loss
    c = criteria(rows, eta)
    assert (c["epsilon_up"], c["epsilon_down"]) == (1, 2) and c["epsilon_adapts"]
    assert c["epsilon_min_late"] == 1e-4 and c["lambda_min"] == 1e-5
    assert c["verdicts_below_quarter"] == 2 and c["smallest_raise"] == pytest.approx(1.0)
    assert c["spike_onsets_after_700"] == 1 and c["onsets_the_last_step_caused"] == 1
    rows[749]["batch_loss_before"] = 5.0                  # less than doubled: a batch that was already hard
    assert criteria(rows, eta)["onsets_the_last_step_caused"] == 0 and c["onsets_on_a_rollback"] == 0
    rows[749]["rolled_back"] = 1.0
    assert criteria(rows, eta)["onsets_on_a_rollback"] == 1
    assert criteria(rows, eta)["onsets_undone_by_the_next_step"] == 0
    rows[750]["rolled_back"] = 1.0                        # the onset's step undone by the next one
    assert criteria(rows, eta)["onsets_undone_by_the_next_step"] == 1
    rows[900]["rho"] = nan
    assert criteria(rows, eta)["smallest_raise"] == pytest.approx(1.5)
    assert c["bounded_steps"] is None                     # a log from before the loss bound
    for r in rows:
        r["bounded"] = 0.0
    rows[10]["bounded"] = rows[20]["bounded"] = 1.0
    assert criteria(rows, eta)["bounded_steps"] == 2


def test_curvature_ema_study_smoke(tmp_path):
    """The autoencoder EMA study trains with ``ema`` and sets the run beside Figure 2's (none here: None)."""
    from experiments.curvature_ema import main

    res = main(["curves"], 3, tmp_path / "ema", results=tmp_path, config="smoke")
    assert res["curves"]["with_ema"][3] is not None and res["curves"]["figure2_batch_factors"] is None
    assert json.loads((tmp_path / "ema" / "curves" / "kfra_ema0.95_seed0" / "summary.json").read_text())[
        "options"] == {"ema": 0.95}


@pytest.fixture(scope="module")
def tiny_mixture_run(tmp_path_factory):
    """A 12-update KFRA run on a tiny mixture problem, with its checkpoint, and the net it trained."""
    from experiments import common
    from pt_kfgn.graph.losses import Mixture

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6)).astype("float32")
    Y = (X[:, :1] + 0.3 * rng.normal(size=(120, 1)) > 0).astype("float32")
    d = tmp_path_factory.mktemp("run") / "kfra" / "seed0"
    nets, build = [], common.build_net
    with pytest.MonkeyPatch.context() as m:
        m.setattr(common, "build_net", lambda *a, **k: nets.append(build(*a, **k)) or nets[-1])
        common.run("kfra", X, Y, Mixture(), out=d, steps=12, widths=(4,), autoencoder=False, batch_size=20,
                   backend="fast", eval_every=12, X_eval=X, Y_eval=Y, checkpoint_every=12, eta=1e-3)
    return d, X, Y, nets[0]


def test_hardest_points_read_the_runs_checkpoint(tiny_mixture_run):
    """Per-point losses at a run's checkpoint average to the training loss the run logged at its last update."""
    from experiments.hardest_points import hardest
    from pt_kfgn.graph.losses import Mixture
    from pt_kfgn.train import read_log

    d, X, Y, net = tiny_mixture_run
    h = hardest(d, X, Y, Mixture(), top=3)
    logged = read_log(d / "log.csv")[-1]["train_loss"]
    assert h["mean_loss"] == pytest.approx(logged, rel=1e-5)
    trained = sum(float(np.sum(np.square(p.get_value(), dtype=np.float64))) for p in net.flat_params)
    assert h["eta"] == 1e-3  # the run's own η (KFGN's default is 1e-5) ...
    assert h["weight_decay_term"] == pytest.approx(0.5e-3 * trained, rel=1e-9)  # ... at the trained net's θ
    assert h["objective"] == pytest.approx(h["mean_loss"] + h["weight_decay_term"], rel=1e-12)
    assert h["points"][0]["loss"] >= h["points"][1]["loss"] >= h["points"][2]["loss"] > 0
    assert sum(p["share_of_the_training_loss"] for p in h["points"]) < 1 and h["updates"] == 12


def test_forgetting_traces_the_worst_points_from_the_checkpoint(tiny_mixture_run):
    """The continued run starts where the run stopped (the first traced losses are the checkpoint's) and takes
    the run's own next batches: each traced point's batch comes round exactly once per epoch, and the drop logged
    on that step is the trace's own before/after pair."""
    from experiments.forgetting import trace
    from experiments.hardest_points import per_point_losses
    from pt_kfgn.graph.losses import Mixture

    d, X, Y, _ = tiny_mixture_run
    r = trace(d, X, Y, Mixture(), top=3, epochs=2, batch_size=20, backend="fast")
    losses = per_point_losses(d, X, Y, Mixture())
    assert r["steps"] == 12 and [p["index"] for p in r["points"]] == list(np.argsort(losses)[::-1][:3])
    from pt_kfgn.train import Batches

    replay = Batches(len(X), 20, 0)  # the run's batch order, replayed past its 12 updates
    later = [set(replay.next().tolist()) for _ in range(12 + 12)][12:]
    for p in r["points"]:
        assert p["own_steps"] == [s + 1 for s, b in enumerate(later) if p["index"] in b]
        assert p["loss_at_checkpoint"] == pytest.approx(losses[p["index"]], rel=1e-5)
        assert len(p["own_steps"]) == 2 and p["own_steps"][1] - p["own_steps"][0] <= 11
        for s, (a, b) in zip(p["own_steps"], p["loss_before_and_after_own_step"], strict=True):
            assert (a, b) == (p["losses"][s - 1], p["losses"][s])
