"""The optimiser contract, checked for every optimiser alike (as optax's shared tests do).

Each optimiser, on a tiny autoencoder: the loss decreases, its state stays finite, a NaN batch is refused
without touching anything, a resumed run is bit-identical, and nothing is compiled after ``compile()``.
"""

import importlib.util

import numpy as np
import pytensor
import pytest

import pt_kfgn as pk

ALL = ["kflr", "kfra", "kfac", "hf", "sgd", "momentum", "nesterov", "adam"]
LR = {"sgd": 0.5, "momentum": 0.1, "nesterov": 0.1, "adam": 0.01}


def _problem(method):
    r = np.random.default_rng(0)
    Z = r.standard_normal((64, 3))
    X = 1 / (1 + np.exp(-(Z @ r.standard_normal((3, 8)) * 2)))
    net = pk.mlp([8, 4, 8], ["tanh", "identity"], seed=1)
    opt = pk.make_optimizer(method, net, "bce", lr=LR.get(method), **({"max_iters": 20} if method == "hf" else {}))
    return net, opt, X


def _state_arrays(opt):
    out = []
    for v in opt.state_variables():
        value = v.get_value()
        if isinstance(value, np.ndarray):
            out.append(value)
    return out


@pytest.mark.parametrize("method", ALL)
def test_loss_decreases_and_state_stays_finite(method):
    _net, opt, X = _problem(method)
    start = opt.evaluate(X, X)
    for _ in range(12):
        opt.step(X, X)
    assert opt.evaluate(X, X) < start
    assert all(np.all(np.isfinite(a)) for a in _state_arrays(opt))


@pytest.mark.parametrize("method", ALL)
def test_a_nan_batch_is_refused_without_touching_the_state(method):
    _net, opt, X = _problem(method)
    opt.step(X, X)
    before = [a.copy() for a in _state_arrays(opt)]
    t = opt.t
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        opt.step(bad, X)
    assert opt.t == t
    assert all(np.array_equal(a, b) for a, b in zip(_state_arrays(opt), before))


@pytest.mark.parametrize("method", ALL)
def test_resume_from_a_state_dict_is_bit_identical(method):
    def run(steps, state=None):
        net, opt, X = _problem(method)
        if state is not None:
            opt.load_state_dict(state)
        for _ in range(steps):
            opt.step(X[(opt.t * 16) % 64:][:16], X[(opt.t * 16) % 64:][:16])
        return net, opt

    full, _ = run(6)
    _, half = run(3)
    resumed, _ = run(3, half.state_dict())
    for p, q in zip(full.flat_params, resumed.flat_params):
        assert np.array_equal(p.get_value(), q.get_value())


@pytest.mark.parametrize("method", ALL)
def test_nothing_is_compiled_after_compile(method, monkeypatch):
    _net, opt, X = _problem(method)
    opt.compile()
    calls = []
    real = pytensor.function
    monkeypatch.setattr(pytensor, "function", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(21):  # past T₁ = 5 and T₂ = 20: every KFGN step kind has run
        opt.step(X, X)
    assert calls == []


@pytest.mark.parametrize(("steps", "kinds"), [(4, 1), (5, 2), (19, 2), (20, 3), (None, 3)])
def test_a_short_run_compiles_only_the_kinds_its_steps_use(steps, kinds, monkeypatch):
    """``compile(steps=n)``: steps 1 … n run without compiling anything more, and nothing they cannot use is
    compiled (no trial-loss kind before T₁ = 5, no γ search before T₂ = 20).  Caught: the trial kind left out at
    ``steps = T₁`` (an off-by-one in the filter: step 5 compiled it)."""
    _net, opt, X = _problem("kfra")
    opt.compile(steps=steps)
    assert len(opt._fns) == kinds
    calls = []
    real = pytensor.function
    monkeypatch.setattr(pytensor, "function", lambda *a, **k: calls.append(1) or real(*a, **k))
    for _ in range(steps or 21):
        opt.step(X, X)
    assert calls == []


def test_the_readme_usage_section_runs_as_written(data_env):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Using it"):]
    blocks = re.findall(r"```python\n(.*?)```", section[:section.index("\n## ", 5)], re.DOTALL)
    namespace = {}
    with pytensor.config.change_flags(mode="FAST_COMPILE"):  # the user's own function: compile quickly here
        for code in blocks:
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
        assert namespace["stats"]["accepted"] and len(namespace["factors"]) == 3
        loss, alpha, status = namespace["step"](namespace["X"], namespace["Y"])  # the symbolic step
    assert int(status) == 0 and np.isfinite(loss) and alpha > 0
    assert len(blocks) == 2


@pytest.mark.parametrize("method", ["kfra", "adam"])
def test_state_arrays_stay_c_contiguous(method):
    """Numba specialises on memory layout: a state array that turns strided would recompile the step."""
    _net, opt, X = _problem(method)
    for _ in range(6):
        opt.step(X, X)
        assert all(a.flags.c_contiguous for a in _state_arrays(opt))


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="needs the jax extra")
def test_numpy_in_and_out_on_jax_and_a_second_optimiser_on_the_same_net(tmp_path):
    """Issue 29: after a JAX step, get_params() is numpy and writable; after train() every shared variable holds
    numpy again, so a second optimiser (KFGN after Adam) steps on the same net and the user's own default-mode
    pytensor.function runs.  Before: jaxlib arrays (read-only through np.asarray), and KFGN after Adam failed
    with "unsupported operand type(s) for *: 'TensorVariable' and 'SharedVariable'"."""
    import pytensor

    import pt_kfgn as pk

    net = pk.mlp([5, 4, 3], ["tanh", "identity"], seed=0, dtype="float32")
    r = np.random.default_rng(0)
    X, Y = r.random((16, 5)).astype("float32"), r.random((16, 3)).astype("float32")
    adam = pk.make_optimizer("adam", net, "mse", backend="jax")
    adam.step(X, Y)
    W, _ = net.get_params()[0]
    assert type(W) is np.ndarray and W.flags.writeable and W.flags.c_contiguous
    W[0, 0] = 1.0  # a copy: the net is unchanged
    assert net.get_params()[0][0][0, 0] != 1.0
    pk.train(adam, X, Y, 2, batch_size=8, progress=False)
    assert all(type(v.get_value(borrow=True)) is np.ndarray for v in adam.state_variables())
    kfra = pk.KFGN(net, "mse", "kfra", backend="jax")
    assert kfra.step(X, Y)["accepted"]
    pk.train(kfra, X, Y, 2, batch_size=8, progress=False)
    f = pytensor.function([net.X], net.output)  # the user's own function, default mode
    assert f(X).shape == (16, 3)


def _module_imports(root):
    """``{module: modules of the package it imports at module level}`` (imports inside functions run later)."""
    import ast
    from pathlib import Path

    root = Path(root)
    mods = {}
    for f in root.rglob("*.py"):
        parts = f.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    edges = {}
    for name, f in mods.items():
        out = set()
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                        for a in node.names}
        edges[name] = {m for m in out if m in mods and m != name}
    return edges


def test_no_import_cycle_inside_the_package():
    """One dependency direction (issue 26: ``backend`` and ``sharding`` imported each other).  Caught: a
    module-level ``import pt_kfgn.sharding`` appended to ``pt_kfgn/backend/__init__.py``."""
    from pathlib import Path

    edges = _module_imports(Path(__file__).resolve().parents[1] / "pt_kfgn")
    assert "pt_kfgn.backend" in edges and "pt_kfgn.backend" in edges["pt_kfgn.sharding"]
    state, cycles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(edges[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_a_kfgn_step_on_another_backend_imports_no_jax():
    """JAX is imported only by what compiles with it (its import costs about a second on a fresh machine).
    Caught: KFGN building its kinds on ``kfgn_updates`` itself, whose registration for PyTensor's stock JAX mode
    imported JAX on a Numba or C run."""
    import subprocess
    import sys

    code = ("import sys, pt_kfgn as pk; from pt_kfgn.optim import schedule; "
            "opt = pk.KFGN(pk.mlp([3, 2, 3], ['tanh', 'identity']), 'mse', 'kfra', backend='fast'); "
            "opt._fn(schedule.all_kinds(opt)[0]); print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
