"""Fuzz the public entries (issue 29) with hypothesis: shapes, dtypes, NaN/inf, empty and one-row batches, wrong
widths, wrong types for the hyperparameters.  Each call either works or raises a ValueError/TypeError that names
what is wrong, and a call that raises never changes a parameter."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pt_kfgn as pk

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
NET = pk.mlp([4, 3, 2], ["tanh", "identity"], seed=0)
OPTS = {"kfra": pk.KFGN(NET, "bce", "kfra"), "adam": pk.make_optimizer("adam", NET, "bce")}


def _params():
    return [np.copy(v.get_value()) for v in NET.flat_params]


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64), st.integers(-3, 3),
                   st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 0.5, 1.0, 255.0, -1.0]))


@st.composite
def batches(draw):
    n = draw(st.sampled_from([0, 1, 2, 5]))
    d_in = draw(st.sampled_from([4, 4, 4, 3, 5]))
    d_out = draw(st.sampled_from([2, 2, 2, 1, 3]))
    dtype = draw(st.sampled_from(["float64", "float32", "int64", "uint8", "bool"]))
    fill = draw(values)
    X = np.full((n, d_in), 0.25)
    Y = np.full((n, d_out), 0.5)
    if draw(st.booleans()) and n:
        (X if draw(st.booleans()) else Y)[draw(st.integers(0, n - 1)), 0] = fill
    shape = draw(st.sampled_from(["2d", "1d", "3d"]))
    if shape == "1d":
        X = X.ravel()
    elif shape == "3d":
        X = X[None]
    with np.errstate(invalid="ignore", over="ignore"):
        return X.astype(dtype) if dtype != "float64" else X, Y


@pytest.mark.parametrize("method", list(OPTS))
@SETTINGS
@given(batch=batches())
def test_a_step_on_any_batch_works_or_names_the_problem_and_changes_nothing(method, batch):
    X, Y = batch
    before = _params()
    try:
        s = OPTS[method].step(X, Y)
    except (ValueError, TypeError) as err:
        assert str(err)
        assert all(np.array_equal(a, b) for a, b in zip(before, _params()))
        return
    assert np.isfinite(s["loss"])  # only finite, well-shaped batches get here
    assert all(np.all(np.isfinite(p)) for p in _params())


HYPER = ["eta", "lam", "gamma", "T1", "T2", "omega1", "omega2", "zeta", "ema", "alpha_max", "curvature_every",
         "inverse_every", "retries", "max_rejections", "min_damping", "rollback_factor"]


@SETTINGS
@given(name=st.sampled_from(HYPER), value=st.one_of(values, st.text(max_size=3), st.none(), st.booleans(),
                                                     st.lists(st.integers(), max_size=2)))
def test_a_bad_hyperparameter_is_refused_by_name_and_changes_nothing(name, value):
    before = _params()
    try:
        pk.KFGN(NET, "bce", "kfra", **{name: value})
    except (ValueError, TypeError) as err:
        assert name in str(err) or name.replace("_", " ") in str(err), (name, value, str(err))
    assert all(np.array_equal(a, b) for a, b in zip(before, _params()))


BAD = [None, True, "1", [1], -1.0, 0.0, np.nan, np.inf, 2.5]
OPTIONAL = {"gamma": None, "alpha_max": None, "omega1": None, "omega2": None, "min_damping": None,
            "rollback_factor": None}


@pytest.mark.parametrize("name", HYPER)
def test_every_bad_value_of_every_hyperparameter(name):
    """The same contract, exhaustively over a fixed list of values that are wrong for most hyperparameters.
    Caught: ``lam=None`` raised "'>' not supported between 'float' and 'NoneType'"; ``lam=True`` and
    ``eta=True`` were accepted as numbers."""
    for value in BAD:
        if name in OPTIONAL and value is None:
            continue
        before = _params()
        try:
            pk.KFGN(NET, "bce", "kfra", **{name: value})
        except (ValueError, TypeError) as err:
            assert name in str(err), (name, value, str(err))
        else:
            assert not isinstance(value, bool | str | list | type(None)), (name, value)
        assert all(np.array_equal(a, b) for a, b in zip(before, _params()))


def test_targets_outside_the_loss_domain_are_refused_with_the_range():
    """8-bit pixels as Bernoulli targets, labels out of range, non-binary mixture targets: refused, range named."""
    X = (np.random.default_rng(0).random((6, 4)) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match=r"\[0, 1\], got values in \[0, \d+\]; 8-bit pixels\? divide by 255"):
        OPTS["adam"].step(X, X[:, :2])
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        pk.make_optimizer("adam", pk.mlp([4, 2], ["identity"]), "softmax_ce").step(np.zeros((2, 4)), np.array([0, 2]))
    with pytest.raises(ValueError, match="0 or 1"):
        pk.make_optimizer("adam", pk.mlp([4, 1], ["identity"]), "mixture").step(np.zeros((2, 4)), np.array([[0.5], [1]]))
