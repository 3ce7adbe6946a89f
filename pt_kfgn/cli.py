"""Command line: ``pt-kfgn train --dataset curves --method kfra --steps N --seed S --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pt_kfgn.data import DATASETS
from pt_kfgn.optim import METHODS


def cmd_train(args) -> int:
    import time

    from pt_kfgn import checkpoint as ckpt_io
    from pt_kfgn.data import dataset_info, load_dataset_in_background
    from pt_kfgn.graph.layers import build_net
    from pt_kfgn.optim import make_optimizer
    from pt_kfgn.plotting import plot_logs
    from pt_kfgn.train import CHECKPOINT, check_schedule, read_log, train

    # every argument is checked before any data is loaded or anything is compiled
    check_schedule(steps=args.steps, batch_size=args.batch_size, eval_every=args.eval_every,
                   checkpoint_every=args.checkpoint_every)
    from pt_kfgn.backend import check_backend

    args.backend = check_backend(args.backend)  # None → the default (README "Backends")
    if args.devices is not None:
        if args.backend != "jax":
            raise ValueError("--devices needs --backend jax")
        if args.devices < 1 or args.batch_size % args.devices:
            raise ValueError(f"--batch-size {args.batch_size} must split evenly over --devices {args.devices}")
    widths = [int(w) for w in args.widths.split(",")]
    if any(w < 1 for w in widths):
        raise ValueError(f"--widths must be positive integers, got {args.widths!r}")
    info = dataset_info(args.dataset, args.n_train)
    data = load_dataset_in_background(args.dataset, args.n_train)  # generating CURVES/FACES takes seconds
    net = build_net(info.d_in, info.d_out, widths, args.hidden, args.seed, args.dtype,
                    autoencoder=args.dataset != "mnist-oddeven")
    extra = {} if args.devices is None else {"devices": args.devices}
    if args.curvature_every is not None:
        extra.update(curvature_every=args.curvature_every, inverse_every=args.curvature_every)
    opt = make_optimizer(args.method, net, info.loss, seed=args.seed, backend=args.backend, lr=args.lr,
                         decay_period=args.decay_period, **extra)
    out = Path(args.out)
    if args.resume:  # refuse before anything in the run folder is touched
        ckpt = out / CHECKPOINT
        if not ckpt.exists():
            raise ValueError(f"--resume: no checkpoint at {ckpt}; run without --resume to start afresh")
        state = ckpt_io.load(ckpt)
        try:
            opt.check_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise ckpt_io.CheckpointError(f"{ckpt}: does not belong to this run: {err}") from err
    out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    config.update(dataset_label=info.label, loss=info.loss, sizes=net.sizes, activations=net.activations)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    points = f"{args.n_train} training points" if args.n_train else "all training points"
    print(f"{args.method} on {info.label}: net {net.sizes}, {points}, batch {args.batch_size}, "
          f"backend {args.backend}", flush=True)
    t0 = time.perf_counter()  # compiled before the clock starts: the log's wall time counts training only
    # on a batch of zeros of the training batch's size, while the data loads [ours]
    opt.compile(progress=lambda msg: print(msg, flush=True), example=min(args.batch_size, args.n_train or
                                                                          args.batch_size), background=True,
                steps=args.steps)
    pending = getattr(opt, "compiling", 0)
    print(f"compiled in {time.perf_counter() - t0:.1f} s" +
          (f"; {pending} rarer step kind(s) compile in the background while the first steps run" if pending else ""),
          flush=True)
    X, Y, _, label = data()
    if X.shape[1:] != (info.d_in,) or Y.shape[1:] != (info.d_out,):  # dataset_info out of step with the loader
        raise RuntimeError(f"{args.dataset}: data of widths {X.shape[1:]}, {Y.shape[1:]}; dataset_info says "
                           f"{info.d_in}, {info.d_out}")
    rows = train(opt, X, Y, args.steps, batch_size=args.batch_size, seed=args.seed, out_dir=out,
                 eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, resume=args.resume,
                 progress=not args.no_progress)
    final = [r for r in read_log(out / "log.csv") if r["train_loss"] is not None]
    if final:
        print(f"step {int(final[-1]['step'])}: training loss {final[-1]['train_loss']:.5g}  "
              f"({final[-1]['wall_time']:.1f} s)")
    plot_logs({args.method.upper(): read_log(out / "log.csv")}, out / "loss.png",
              title=f"{label}: {args.method.upper()}", note=f"net {net.sizes}, hidden {args.hidden} [ours]")
    written = [str(out / f) for f in ("log.csv", "loss.png", CHECKPOINT) if (out / f).exists()]
    print(f"wrote {', '.join(written)}")
    return 0 if rows is not None else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pt-kfgn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a network and write log.csv, loss.png, checkpoint.npz to --out")
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
    t.add_argument("--devices", type=int, default=None,
                   help="JAX: split each batch over this many devices (data parallel; pt_kfgn.sharding)")
    t.add_argument("--lr", type=float, default=None, help="first-order learning rate")
    t.add_argument("--decay-period", type=int, default=None, help="first-order: halve lr every N steps")
    t.add_argument("--curvature-every", type=int, default=None,
                   help="KFGN: recompute factors and inverses every N steps (amortised; default 1, the paper)")
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
