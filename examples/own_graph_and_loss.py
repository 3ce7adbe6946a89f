"""Your own PyTensor network and your own loss, trained by KFRA: no layer registration, no tags.

    python examples/own_graph_and_loss.py

The network is written in plain PyTensor (shared variables, ``@``, ``tanh``); ``pk.GraphNet`` recovers its
dense layers from the graph.  The loss is a Huber regression loss written as a per-datapoint expression;
``pk.CustomLoss`` derives its output curvature ``H_L`` by PyTensor (KFLR, KFRA and the exact blocks need
nothing more; KFAC would ask for a sampler).
"""

import numpy as np
import pytensor
import pytensor.tensor as pt

import pt_kfgn as pk

DELTA = np.float32(1.0)  # constants in the graph's dtype: a Python float could make a float32 graph float64


def huber(h, y, delta=DELTA):
    """Per datapoint: Σ_k huber(h_k − y_k), quadratic within ``delta``, linear outside."""
    r = pt.abs(h - y)
    return pt.switch(r < delta, 0.5 * r ** 2, delta * (r - 0.5 * delta)).sum(axis=1)


def main(steps=200, n=2000, seed=0):
    r = np.random.default_rng(seed)
    f = "float32"

    def shared(*shape):
        return pytensor.shared((r.standard_normal(shape) / np.sqrt(shape[0])).astype(f))

    W1, b1, W2, b2 = shared(8, 32), pytensor.shared(np.zeros(32, f)), shared(32, 2), pytensor.shared(np.zeros(2, f))
    x = pt.matrix("x", dtype=f)
    h = pt.tanh(x @ W1 + b1) @ W2 + b2  # the last pre-activation h_L: the loss applies to it
    net = pk.GraphNet(h, x)

    X = r.standard_normal((n, 8)).astype(f)
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1] ** 2, X[:, 2] * X[:, 3]], axis=1).astype(f)
    Y[r.random(n) < 0.05] += 10.0  # outliers: where a Huber loss earns its keep

    opt = pk.KFGN(net, pk.CustomLoss(huber, name="huber"), "kfra")
    start = opt.evaluate(X, Y)
    pk.train(opt, X, Y, steps, batch_size=500, progress=False)
    end = opt.evaluate(X, Y)
    print(f"Huber loss of your own net: {start:.4f} -> {end:.4f} after {steps} KFRA steps")
    return start, end


if __name__ == "__main__":
    main()
