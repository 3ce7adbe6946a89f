"""A residual MLP written in plain PyTensor, trained on MNIST by KFLR, KFRA and KFAC at defaults against Adam.

    python examples/residual_mlp.py --steps 300 --n-train 20000

The network is ``784-W-(residual blocks of width W)-10``: each block computes ``a ← tanh(a @ W_k + b_k) + a``,
the ResNet pattern, with no layer registration: ``pk.GraphNet`` finds the dense layers and the merges in the
graph, and every curvature follows both paths of each block (KFLR and KFAC exactly, KFRA with the expectations
of docs/algorithm.md, "Graphs beyond the chain").  The output layer has no bias, to show that form too.
``pk.compare`` trains each method from the same initial parameters; ``residual_mlp/`` gets the logs, the table
and the plots.  MNIST is read from ``$PT_KFGN_DATA`` or the cache (downloaded once).
"""

import argparse

import numpy as np
import pytensor
import pytensor.tensor as pt

import pt_kfgn as pk


def residual_mlp(d_in, width, blocks, d_out, seed=0, dtype="float32"):
    """``(net, params)``: the residual MLP as a :class:`pk.GraphNet`, weights Glorot-uniform, biases zero."""
    r = np.random.default_rng(seed)

    def weight(n_in, n_out, name):
        bound = np.sqrt(6.0 / (n_in + n_out))
        return pytensor.shared(r.uniform(-bound, bound, (n_in, n_out)).astype(dtype), name=name)

    def bias(n, name):
        return pytensor.shared(np.zeros(n, dtype), name=name)

    x = pt.matrix("x", dtype=dtype)
    a = pt.tanh(x @ weight(d_in, width, "W_in") + bias(width, "b_in"))
    for k in range(blocks):
        a = pt.tanh(a @ weight(width, width, f"W{k + 1}") + bias(width, f"b{k + 1}")) + a  # the skip connection
    logits = a @ weight(width, d_out, "W_out")  # no bias: a dense layer all the same
    return pk.GraphNet(logits, x)


def main(steps=300, n_train=20000, width=128, blocks=3, batch_size=1000, methods=("kflr", "kfra", "kfac"),
         out="residual_mlp", seed=0):
    X, labels = pk.data.load_mnist("train", n_train)
    Y = np.eye(10, dtype=X.dtype)[labels]
    net = residual_mlp(X.shape[1], width, blocks, 10, seed=seed)
    budget = {m: steps for m in methods} | {"adam": 3 * steps}  # Adam: three times the updates, as in Figure 2
    res = pk.compare(net, "softmax_ce", X, Y, methods=budget, batch_size=batch_size,
                     options={"adam": {"lr": 1e-3}}, X_eval=X[:5000], Y_eval=Y[:5000], out_dir=out, seed=seed)
    print(f"MNIST classification, residual MLP 784-{width}-{blocks}x[{width}]-10, {len(X)} training points")
    print(res["table"])
    return {r["method"]: r["final"] for r in res["rows"]}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--out", default="residual_mlp")
    a = p.parse_args()
    res = main(a.steps, a.n_train, out=a.out)
    assert all(np.isfinite(v) for v in res.values())
