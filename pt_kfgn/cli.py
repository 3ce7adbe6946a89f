"""Command line: ``pt-kfgn train --dataset curves --method kfra --steps N --seed S --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SECOND_ORDER = ("kflr", "kfra", "kfac")
FIRST_ORDER = ("sgd", "momentum", "nesterov", "adam")
METHODS = SECOND_ORDER + ("hf",) + FIRST_ORDER
DATASETS = ("curves", "mnist", "faces", "mnist-oddeven")


def load_dataset(name: str, n_train: int | None, seed: int = 0):
    """``(X, Y, loss, label)`` for a dataset name (autoencoder targets are the inputs)."""
    if name == "curves":
        from pt_kfgn.data.curves import load_curves

        X, _ = load_curves(n_train or 20000, 0 if n_train else 10000, seed=0)
        return X, X, "bce", "CURVES (regenerated, recipe CURVES-v0)"
    if name == "mnist":
        from pt_kfgn.data.mnist import load_mnist

        X, _ = load_mnist("train", n_train or 50000)
        return X, X, "bce", "MNIST (first 50,000)" if not n_train else f"MNIST (first {n_train})"
    if name == "mnist-oddeven":
        from pt_kfgn.data.mnist import load_mnist, odd_even

        X, labels = load_mnist("train", n_train or 50000)
        return X, odd_even(labels), "mixture", "MNIST odd/even (mixture MIX-v0)"
    if name == "faces":
        from pt_kfgn.data.faces import load_faces

        n_people = 25 if not n_train else min(25, -(-n_train // 4140))  # 4,140 rows per person
        X = load_faces(n_people=n_people, seed=0)
        if n_train:
            X = X[:n_train]
        return X, X, "mse", "FACES (regenerated, recipe FACES-v0)"
    raise ValueError(f"dataset={name!r} is not one of {list(DATASETS)}")


def make_optimizer(method: str, net, loss: str, *, seed: int = 0, backend=None, lr=None, decay_period=None,
                   **kwargs):
    """An optimiser by CLI name, with its default settings."""
    if method in SECOND_ORDER:
        from pt_kfgn.optim.kfgn import KFGN

        return KFGN(net, loss, method, seed=seed, backend=backend, **kwargs)
    if method == "hf":
        from pt_kfgn.optim.hessian_free import HessianFree

        return HessianFree(net, loss, backend=backend, **kwargs)
    if method in FIRST_ORDER:
        from pt_kfgn.optim.first_order import FirstOrder

        return FirstOrder(net, loss, method, lr=lr, decay_period=decay_period, backend=backend, **kwargs)
    raise ValueError(f"method={method!r} is not one of {list(METHODS)}")


def build_net(dim_in: int, dim_out: int, widths, hidden: str, seed: int, dtype: str, autoencoder: bool):
    from pt_kfgn.graph.layers import MLP

    widths = list(widths)
    if autoencoder:
        sizes = [dim_in] + widths + widths[-2::-1] + [dim_in]
        acts = [hidden] * (len(widths) - 1) + ["identity"] + [hidden] * (len(widths) - 1) + ["identity"]
    else:
        sizes = [dim_in] + widths + [dim_out]
        acts = [hidden] * len(widths) + ["identity"]
    return MLP(sizes, acts, seed=seed, dtype=dtype)


def cmd_train(args) -> int:
    from pt_kfgn.plotting import plot_logs
    from pt_kfgn.train import read_log, train

    X, Y, loss, label = load_dataset(args.dataset, args.n_train)
    widths = [int(w) for w in args.widths.split(",")]
    net = build_net(X.shape[1], Y.shape[1], widths, args.hidden, args.seed, args.dtype,
                    autoencoder=args.dataset != "mnist-oddeven")
    opt = make_optimizer(args.method, net, loss, seed=args.seed, backend=args.backend, lr=args.lr,
                         decay_period=args.decay_period)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(dataset_label=label, loss=loss, sizes=net.sizes, activations=net.activations)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    print(f"{args.method} on {label}: net {net.sizes}, {len(X)} training points, batch {args.batch_size}")
    if hasattr(opt, "compile") and not args.resume:
        import time

        t0 = time.perf_counter()
        opt.compile()  # the log's wall time then counts training only
        print(f"compiled the step functions in {time.perf_counter() - t0:.1f} s")
    rows = train(opt, X, Y, args.steps, batch_size=args.batch_size, seed=args.seed, out_dir=out,
                 eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, resume=args.resume,
                 progress=not args.no_progress)
    final = [r for r in read_log(out / "log.csv") if r["train_loss"] is not None]
    if final:
        print(f"step {int(final[-1]['step'])}: training loss {final[-1]['train_loss']:.5g}  "
              f"({final[-1]['wall_time']:.1f} s)")
    plot_logs({args.method.upper(): read_log(out / "log.csv")}, out / "loss.png",
              title=f"{label}: {args.method.upper()}", note=f"net {net.sizes}, hidden {args.hidden} [ours]")
    print(f"wrote {out / 'log.csv'}, {out / 'loss.png'}, {out / 'checkpoint.pkl'}")
    return 0 if rows is not None else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pt-kfgn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network and write log.csv, loss.png, checkpoint.pkl to --out")
    t.add_argument("--dataset", choices=DATASETS, default="curves")
    t.add_argument("--method", choices=METHODS, default="kfra")
    t.add_argument("--steps", type=int, default=100)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    t.add_argument("--batch-size", type=int, default=1000)
    t.add_argument("--n-train", type=int, default=None, help="use the first N training points")
    t.add_argument("--widths", default="1000,500,250,30", help="encoder widths (the paper's by default)")
    t.add_argument("--hidden", default="tanh", help="hidden transfer function [ours: tanh]")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    t.add_argument("--backend", choices=("numba", "c", "jax", "fast"), default=None)
    t.add_argument("--lr", type=float, default=None, help="first-order learning rate")
    t.add_argument("--decay-period", type=int, default=None, help="first-order: halve lr every N steps")
    t.add_argument("--eval-every", type=int, default=10)
    t.add_argument("--checkpoint-every", type=int, default=25)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as err:
        print(f"pt-kfgn: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
