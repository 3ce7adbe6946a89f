"""Training loop: resume on the same trajectory, CSV log, CLI."""

import csv

import numpy as np
import pytest

from pt_kfgn import checkpoint
from pt_kfgn.cli import main
from pt_kfgn.graph.layers import build_net
from pt_kfgn.optim import make_optimizer
from pt_kfgn.train import read_log, train


def _data(n=300, d=30, seed=0):
    r = np.random.default_rng(seed)
    Z = r.standard_normal((n, 4))
    return 1 / (1 + np.exp(-(Z @ r.standard_normal((4, d)) * 1.5)))


def _run(method, steps, out=None, resume=False, X=None):
    X = _data() if X is None else X
    net = build_net(30, 30, [8, 3], "tanh", 0, "float64", True)
    opt = make_optimizer(method, net, "bce", seed=0, backend="fast")
    rows = train(opt, X, X, steps, batch_size=64, seed=3, out_dir=out, eval_every=4, checkpoint_every=3,
                 resume=resume, progress=False)
    return net, opt, rows


@pytest.mark.parametrize("method", [pytest.param("kfac", marks=pytest.mark.slow), "kfra", "adam"])  # suite time
def test_killed_run_resumes_on_the_same_trajectory(tmp_path, method):
    """2k steps straight vs k steps, a fresh process-like restart, then resume to 2k: identical."""
    k = 6
    full_net, _, _ = _run(method, 2 * k)
    _run(method, k, out=tmp_path)  # "killed" after k steps (checkpoint at k)
    resumed_net, _, _ = _run(method, 2 * k, out=tmp_path, resume=True)  # new objects, as after a restart
    for (W1, b1), (W2, b2) in zip(full_net.get_params(), resumed_net.get_params()):
        assert np.array_equal(W1, W2) and np.array_equal(b1, b2)
    steps = [int(r["step"]) for r in read_log(tmp_path / "log.csv")]
    assert steps == list(range(1, 2 * k + 1))


def test_checkpoint_mid_interval_truncates_the_log(tmp_path):
    _run("adam", 7, out=tmp_path)  # checkpoints at 3, 6, 7
    # simulate a crash after step 7 was logged but with the checkpoint of step 6
    ck = checkpoint.load(tmp_path / "checkpoint.npz")
    assert ck["step"] == 7
    ck["step"] = 6
    checkpoint.save(tmp_path / "checkpoint.npz", ck)
    _run("adam", 6, out=tmp_path, resume=True)
    with open(tmp_path / "log.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5, 6]


def test_cli_trains_writes_log_and_plot_and_resumes(tmp_path, monkeypatch, data_env):
    out = tmp_path / "run"
    args = ["train", "--dataset", "curves", "--method", "kfra", "--steps", "3", "--n-train", "60",
            "--batch-size", "20", "--widths", "6,2", "--out", str(out), "--backend", "fast", "--no-progress",
            "--eval-every", "2", "--checkpoint-every", "2", "--dtype", "float64"]
    from pt_kfgn.data import curves

    monkeypatch.setattr(curves, "generate_curves", lambda n_train, n_test, seed=0: (
        curves._render(np.random.default_rng(seed).uniform(2, 25, (n_train, 3, 2))), np.zeros((0, 784))))
    assert main(args) == 0
    rows = read_log(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and rows[-1]["train_loss"] is not None
    assert any("loss" in k for k in rows[0])
    assert (out / "checkpoint.npz").exists() and (out / "config.json").exists()
    assert main([*args[:6], "5", *args[7:], "--resume"]) == 0
    assert [int(r["step"]) for r in read_log(out / "log.csv")] == [1, 2, 3, 4, 5]


def test_cli_compiles_the_step_while_the_data_loads(tmp_path, monkeypatch):
    """``pt-kfgn train`` builds the net from ``dataset_info`` and compiles its step on a batch of zeros while the
    data loads (generating CURVES takes seconds).  Caught: with the data loaded before compiling, the loader
    waits for a compilation that never starts and the run fails."""
    import threading

    import pt_kfgn.data as data_mod
    from pt_kfgn.optim.kfgn import KFGN

    compiling = threading.Event()
    X = np.random.default_rng(0).random((60, 784))

    def load(name, n_train=None, seed=0):
        if not compiling.wait(20):
            raise AssertionError("the data was loaded before the step compiled")
        return X, X, "bce", "CURVES (test)"

    real = KFGN.compile

    def compile_(self, *a, **k):
        compiling.set()
        assert k["example"] == 20  # the size of a batch, not the data
        return real(self, *a, **k)

    monkeypatch.setattr(data_mod, "load_dataset", load)
    monkeypatch.setattr(KFGN, "compile", compile_)
    assert main(["train", "--dataset", "curves", "--method", "kfra", "--steps", "2", "--n-train", "60",
                 "--batch-size", "20", "--widths", "6,2", "--out", str(tmp_path), "--backend", "fast",
                 "--no-progress", "--dtype", "float64"]) == 0
    assert [int(r["step"]) for r in read_log(tmp_path / "log.csv")] == [1, 2]


def test_cli_rejects_an_unknown_method(tmp_path):
    with pytest.raises(SystemExit):
        main(["train", "--method", "newton", "--out", str(tmp_path)])


def test_subnormal_inputs_are_reported():
    from pt_kfgn.train import warn_subnormal

    X = np.ones((4, 3), np.float32)
    assert warn_subnormal(X, "float32") == 0
    X[0, :2] = 1e-40  # float32 subnormals (a normal float64)
    with pytest.warns(RuntimeWarning, match="2 subnormal float32"):
        assert warn_subnormal(X, "float32") == 2
    assert warn_subnormal(X.astype(np.float64), "float64") == 0


def test_log_reports_the_averaged_parameters_loss(tmp_path):
    _, opt, rows = _run("kfra", 8, out=tmp_path)
    logged = [r for r in read_log(tmp_path / "log.csv") if r["train_loss"] is not None]
    assert [int(r["step"]) for r in logged] == [4, 8]
    X = _data()
    assert logged[-1]["avg_train_loss"] == pytest.approx(opt.evaluate_averaged(X, X), rel=1e-12)
    assert logged[-1]["avg_train_loss"] != logged[-1]["train_loss"]
    _, _, rows = _run("adam", 4, out=tmp_path / "adam")
    assert rows[-1]["avg_train_loss"] == ""  # Adam keeps no average


def _corrupt(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "pickled":
        import numpy as np

        np.savez(path, **{"__state__.json": np.frombuffer(b'{"format": "x"}', np.uint8)},
                 a0=np.array([object()], dtype=object))
    elif how == "foreign":
        path.write_bytes(b"not a checkpoint at all")


@pytest.mark.parametrize("how", ["truncated", "pickled", "foreign"])
def test_a_bad_checkpoint_is_a_clear_error_naming_the_file(tmp_path, how):
    _run("adam", 3, out=tmp_path)
    path = tmp_path / "checkpoint.npz"
    _corrupt(path, how)
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint.npz"):
        _run("adam", 6, out=tmp_path, resume=True)


def test_train_validates_its_arguments_before_anything_runs():
    for kwargs in ({"steps": -3}, {"batch_size": 0}, {"eval_every": 0}):
        with pytest.raises(ValueError, match="must be an integer"):
            train(None, None, None, **{"steps": 1, **kwargs})


def test_cli_rejects_bad_arguments_before_loading_or_compiling(tmp_path, monkeypatch, capsys):
    import pt_kfgn.data

    def boom(*a, **k):
        raise AssertionError("data loaded before the arguments were checked")

    monkeypatch.setattr(pt_kfgn.data, "load_dataset", boom)
    assert main(["train", "--steps", "-3", "--out", str(tmp_path)]) == 2
    assert "steps must be an integer >= 0" in capsys.readouterr().err
    assert main(["train", "--devices", "2", "--backend", "numba", "--out", str(tmp_path)]) == 2
    assert "--devices needs --backend jax" in capsys.readouterr().err
    assert main(["train", "--devices", "3", "--backend", "jax", "--batch-size", "1000", "--out", str(tmp_path)]) == 2
    assert "must split evenly over --devices 3" in capsys.readouterr().err


# -- a checkpoint is checked whole before anything changes (issue 29) ------------------------------------
def _state_of(opt, out):
    arrays = [np.copy(v.get_value()) for v in opt.state_variables()]
    files = {p.name: p.read_bytes() for p in out.iterdir()} if out.exists() else {}
    return arrays, files


@pytest.mark.parametrize("other", ["width", "depth", "loss", "method", "dtype"])
def test_a_foreign_checkpoint_is_refused_before_anything_changes(tmp_path, other):
    """Each mismatch raises CheckpointError naming the first difference; the parameters, the optimiser's state
    and the run folder stay bit-identical.  Before: the width case overwrote W1 and b1, then raised a raw
    TypeError; another loss loaded silently."""
    X = _data()
    train(make_optimizer("kfra", build_net(30, 30, [8, 3], "tanh", 0, "float64", True), "bce", backend="fast"),
          X, X, 3, batch_size=64, out_dir=tmp_path, checkpoint_every=3, progress=False)
    widths, loss, method, dtype = [8, 3], "bce", "kfra", "float64"
    if other == "width":
        widths = [8, 4]
    elif other == "depth":
        widths = [8, 5, 3]
    elif other == "loss":
        loss = "mse"
    elif other == "method":
        method = "kfac"
    else:
        dtype = "float32"
    opt = make_optimizer(method, build_net(30, 30, widths, "tanh", 1, dtype, True), loss, backend="fast")
    before = _state_of(opt, tmp_path)
    want = {"width": "layer 2 weight: checkpoint \\(8, 3\\), net \\(8, 4\\)", "depth": "network sizes",
            "loss": "loss: checkpoint 'bce'", "method": "optimiser", "dtype": "dtype"}[other]
    with pytest.raises(checkpoint.CheckpointError, match=want):
        train(opt, X, X, 6, batch_size=64, out_dir=tmp_path, checkpoint_every=3, progress=False, resume=True)
    after = _state_of(opt, tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0])) and before[1] == after[1]


def test_cli_resume_without_a_checkpoint_or_with_a_foreign_one_changes_nothing(tmp_path, capsys):
    """``--resume`` with no checkpoint says so (before: started afresh silently); with a foreign one the run
    folder, config.json included, is untouched; ``--steps 0`` does not claim a checkpoint it did not write."""
    out = tmp_path / "run"
    base = ["train", "--dataset", "mnist-oddeven", "--method", "kfra", "--n-train", "60", "--batch-size", "20",
            "--out", str(out), "--backend", "fast", "--no-progress", "--dtype", "float64"]
    from pt_kfgn.data import mnist

    r = np.random.default_rng(0)
    mnist_data = (r.random((60, 784)), (r.random((60, 1)) < 0.5).astype(float), "mixture", "MNIST odd/even (test)")
    import pt_kfgn.data as data_mod

    orig = data_mod.load_dataset
    data_mod.load_dataset = lambda name, n=None, seed=0: mnist_data  # looked up in pt_kfgn.data at call time
    try:
        assert main([*base, "--widths", "6,2", "--steps", "2", "--resume"]) == 2
        assert "no checkpoint" in capsys.readouterr().err and not out.exists()
        assert main([*base, "--widths", "6,2", "--steps", "0"]) == 0
        assert "checkpoint.npz" not in capsys.readouterr().out.split("wrote")[-1]
        assert main([*base, "--widths", "6,2", "--steps", "2"]) == 0
        files = {p.name: p.read_bytes() for p in out.iterdir()}
        assert main([*base, "--widths", "6,3", "--steps", "4", "--resume"]) == 2
        assert "layer 2 weight" in capsys.readouterr().err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == files
    finally:
        data_mod.load_dataset = orig
    assert mnist  # the module the CLI's loader lives in


@pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None, reason="needs the jax extra")
def test_a_short_cli_run_on_jax_prints_no_warning(tmp_path):
    """The quick start's path (JAX, KFRA) at a tiny size prints its own lines and no library warning (issue 26:
    PyTensor's skipped-Assert and JAX's int64-truncation warnings printed for every step kind)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PT_KFGN_DATA": str(tmp_path / "cache"), "PYTHONWARNINGS": "default"}
    cmd = [sys.executable, "-m", "pt_kfgn.cli", "train", "--dataset", "curves", "--method", "kfra", "--steps", "3",
           "--n-train", "40", "--batch-size", "20", "--widths", "6,2", "--out", str(tmp_path / "run"),
           "--backend", "jax", "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Warning" not in r.stderr + r.stdout, r.stderr[-2000:]


def test_compare_trains_each_method_from_the_same_start_and_tabulates(tmp_path):
    """Caught: with the reset before each method removed, Adam started from KFRA's trained parameters."""
    import pt_kfgn as pk

    net = pk.mlp([6, 4, 6], ["tanh", "identity"], seed=0)
    X = np.random.default_rng(0).random((40, 6))
    start = net.get_params()
    res = pk.compare(net, "bce", X, X, methods={"kfra": 3, "adam": 6}, batch_size=20, out_dir=tmp_path)
    first = {m: rows[0]["batch_loss"] for m, rows in res["logs"].items()}
    assert first["kfra"] == first["adam"]  # the same parameters on the same first batch
    assert [r["updates"] for r in res["rows"]] == [3, 6]
    assert all(r["at_common_updates"] is not None for r in res["rows"])
    assert "| kfra | 3 |" in res["table"] and (tmp_path / "table.md").read_text().startswith("| method")
    for (W0, b0), (W1, b1) in zip(start, net.get_params()):  # restored
        np.testing.assert_array_equal(W0, W1)
    with pytest.raises(ValueError, match="not compared"):
        pk.compare(net, "bce", X, X, methods=["kfra"], options={"adam": {}})


def test_a_compressed_log_is_read_and_a_resumed_run_continues_it(tmp_path):
    """``results/`` commits the per-step logs as ``log.csv.gz`` (issue 26).  Caught: with the resume not
    reading the compressed log, the continued run's ``log.csv`` held steps 5-6 only, without a header."""
    from pt_kfgn.train import compress_log, log_file

    X = _data()

    def opt():
        return make_optimizer("kfra", build_net(30, 30, [8, 3], "tanh", 0, "float64", True), "bce", backend="fast")

    train(opt(), X, X, 4, batch_size=64, out_dir=tmp_path, checkpoint_every=4, progress=False)
    rows = read_log(tmp_path / "log.csv")
    raw = (tmp_path / "log.csv").read_bytes()
    gz = compress_log(tmp_path)
    assert gz.name == "log.csv.gz" and not (tmp_path / "log.csv").exists() and log_file(tmp_path) == gz
    np.testing.assert_equal(read_log(tmp_path / "log.csv"), rows)  # (ρ is NaN on steps without a trial loss)
    np.testing.assert_equal(read_log(tmp_path), rows)
    first = gz.read_bytes()
    (tmp_path / "log.csv").write_bytes(raw)
    assert compress_log(tmp_path).read_bytes() == first  # no timestamp: the same log compresses the same
    train(opt(), X, X, 6, batch_size=64, out_dir=tmp_path, checkpoint_every=2, progress=False, resume=True)
    assert log_file(tmp_path) == tmp_path / "log.csv" and not gz.exists()
    resumed = read_log(tmp_path)
    assert [int(r["step"]) for r in resumed] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_equal(resumed[:4], rows)
    compress_log(tmp_path)  # a run started afresh leaves no compressed log of the old one beside its own
    train(opt(), X, X, 2, batch_size=64, out_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("log.csv*")) == ["log.csv"] and len(read_log(tmp_path)) == 2
