"""Appendix F.2 alignment: for one datapoint KFRA with the exact Kronecker inverse *is* the block GN update."""


import numpy as np
import pytest
from conftest import make_batch
from reference import brute_gn

import pt_kfgn
from pt_kfgn.diagnostics import Alignment


def test_alignment_is_one_where_the_approximation_is_exact():
    net = pt_kfgn.mlp([4, 5, 3], ["tanh", "identity"], seed=2)
    al = Alignment(net, "bce", methods=("kfra", "kflr"), cg_iters=200, backend="fast")
    X, Y = make_batch("bce", 1, 4, 3)
    res = al.compare(X, Y, gamma=0.1, lam=0.1)
    for m in ("kfra", "kflr"):
        assert res[f"{m}_exact_vs_block"] > 1 - 1e-8, res
        assert all(res[f"{m}_exact_layer{i}"] > 1 - 1e-8 for i in (1, 2))
    # factored Tikhonov is an approximation of the same damped block: close, not equal
    assert 0.5 < res["kfra_tikhonov_vs_block"] < 1 - 1e-8
    X, Y = make_batch("bce", 20, 4, 3)
    res = al.compare(X, Y, gamma=0.1, lam=0.1)
    assert res["kfra_exact_vs_block"] < 1 - 1e-6  # a batch: KFRA is an approximation
    # against dense solves of the brute-force GN (full, and block by block)
    _, _, G, _, _ = brute_gn(net, "bce", X, Y)
    g = _flat_grad(net, X, Y, al.eta)
    d_full = -np.linalg.solve(G + (0.1 + al.eta) * np.eye(len(g)), g)
    d_block, start = np.empty_like(g), 0
    for n_in, n_out in zip(net.sizes[:-1], net.sizes[1:]):
        s = slice(start, start + (n_in + 1) * n_out)
        d_block[s] = -np.linalg.solve(G[s, s] + (0.1 + al.eta) * np.eye(s.stop - s.start), g[s])
        start = s.stop
    cos = d_block @ d_full / np.linalg.norm(d_block) / np.linalg.norm(d_full)
    assert res["block_vs_full"] == pytest.approx(cos, abs=1e-6)


def _flat_grad(net, X, Y, eta):
    from reference import numpy_gradient

    return np.concatenate([g.ravel() for g in numpy_gradient(net, "bce", X, Y, eta)])
