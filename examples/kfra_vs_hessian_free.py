"""KFRA against Hessian-free CG (Martens 2010) on one problem, per update and per second.

    python examples/kfra_vs_hessian_free.py --steps 50

Both at their defaults on the CURVES autoencoder (regenerated, no download).  HF spends up to 250 GN-vector
products per update; KFRA one factored solve and one GN-vector product.
"""

import argparse
import time

import pt_kfgn as pk


def main(steps=30, n_train=5000, widths=(1000, 500, 250, 30), batch_size=1000):
    X, Y, loss, label = pk.data.load_dataset("curves", n_train=n_train)
    res = {}
    for method in ("kfra", "hf"):
        net = pk.autoencoder(X.shape[1], widths=widths, seed=0)
        opt = pk.make_optimizer(method, net, loss)
        opt.compile(example=(X[:batch_size], Y[:batch_size]))
        t = time.perf_counter()
        pk.train(opt, X, Y, steps, batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - t
        res[method] = (opt.evaluate(X[:2000], Y[:2000]), seconds)
    print(f"{label}, {steps} updates of batch {batch_size}:")
    for m, (f, s) in res.items():
        print(f"  {m:5} training loss {f:9.4g} in {s:6.1f} s")
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--n-train", type=int, default=5000)
    a = p.parse_args()
    main(a.steps, a.n_train)
