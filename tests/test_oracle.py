"""Our KFLR/KFRA factors against BackPACK's (../shared/oracle, README there for the conventions)."""

import json

import numpy as np
import pytest

import pt_kfgn

SCALE = {"bce_mean": 3.0, "bce1_mean": 1.0, "ce_mean": 1.0, "mse_mean": 1.5}
LOSS = {"bce": "bce", "bce1": "bce", "ce": "softmax_ce", "mse": "mse"}


def _load(shared_dir, name):
    path = shared_dir / "oracle" / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"oracle file {path} is absent")
    return np.load(path, allow_pickle=False)


@pytest.mark.parametrize("name", list(SCALE) + ["bce_sum", "ce_sum", "mse_sum"])
def test_kflr_kfra_match_backpack(shared_dir, name):
    d = _load(shared_dir, name)
    meta = json.loads(str(d["meta"]))
    N = meta["N"]
    scale = SCALE.get(name) or {"bce_sum": 1 / N, "ce_sum": 1 / N, "mse_sum": 1 / (2 * N)}[name]
    net = pt_kfgn.mlp(meta["sizes"], ["sigmoid", "sigmoid", "identity"])
    net.set_params([(d[f"W{i}"].T, d[f"b{i}"]) for i in (1, 2, 3)])
    loss = LOSS[meta["loss"]]
    Y = d["Y"]
    for method in ("kflr", "kfra"):
        factors = pt_kfgn.kronecker_factors(net, loss, d["X"], Y, method)
        for i, (Q, G) in enumerate(factors, start=1):
            np.testing.assert_allclose(Q, d[f"own_Aaug{i}"], atol=1e-12)
            bp = f"bp_{method}_W{i}_G"
            if bp in d.files:  # BackPACK's factor; its KFRA is missing for some files (see meta)
                np.testing.assert_allclose(Q[:-1, :-1], d[f"bp_{method}_W{i}_A"], atol=1e-12)
                np.testing.assert_allclose(G, scale * d[bp], atol=1e-8, rtol=1e-8)
            np.testing.assert_allclose(G, scale * d[f"own_{method}_G{i}"], atol=1e-8, rtol=1e-8)
