"""Appendix F.2 alignment: for one datapoint KFRA with the exact Kronecker inverse *is* the block GN update."""


from conftest import make_batch

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
    assert 0 < res["block_vs_full"] <= 1
