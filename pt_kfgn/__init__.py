"""pt_kfgn: practical Gauss-Newton optimisation for deep learning (Botev, Ritter & Barber, ICML 2017).

One front door::

    import pt_kfgn as pk

    net = pk.autoencoder(784)                             # or pk.mlp(sizes, activations), pk.GraphNet(out, X)
    opt = pk.KFGN(net, "bce", "kfra")                     # paper defaults; pk.HessianFree, pk.FirstOrder
    pk.train(opt, X, X, steps=100, out_dir="runs/kfra")   # log.csv, checkpoint.npz, resume
    factors = pk.kronecker_factors(net, "bce", X, X, "kfra")

Layers of the package, each depending only on those before it: ``graph`` (networks, losses, the graph walker)
→ ``curvature`` (recursions, factors, GN products) → ``optim`` (stages of the step, optimisers) → ``train``
(loop, checkpoints, CLI) → ``experiments/`` (scripts, outside the package).
"""

from pt_kfgn import data
from pt_kfgn.compare import compare
from pt_kfgn.curvature.on_arrays import block_gauss_newton, block_hessian, kronecker_factors
from pt_kfgn.graph.custom_loss import CustomLoss
from pt_kfgn.graph.layers import MLP, GraphNet, autoencoder, classifier, mlp
from pt_kfgn.graph.losses import LOSSES, Loss, get_loss
from pt_kfgn.graph.walk import LayerGraph, UnsupportedGraphError, layer_graph
from pt_kfgn.optim import (
    KFGN,
    METHODS,
    FirstOrder,
    HessianFree,
    StalledError,
    adam,
    kfgn_updates,
    make_optimizer,
    momentum,
    nesterov,
    sgd,
)
from pt_kfgn.train import train

__version__ = "0.1.0"
__all__ = [
    "KFGN",
    "LOSSES",
    "METHODS",
    "MLP",
    "CustomLoss",
    "FirstOrder",
    "GraphNet",
    "HessianFree",
    "LayerGraph",
    "Loss",
    "StalledError",
    "UnsupportedGraphError",
    "adam",
    "autoencoder",
    "block_gauss_newton",
    "block_hessian",
    "classifier",
    "compare",
    "data",
    "get_loss",
    "kfgn_updates",
    "kronecker_factors",
    "layer_graph",
    "make_optimizer",
    "mlp",
    "momentum",
    "nesterov",
    "plotting",
    "sgd",
    "train",
]


def __getattr__(name):
    """``pk.plotting`` on first use (it imports matplotlib, the optional ``plot`` extra)."""
    if name == "plotting":
        import importlib

        return importlib.import_module("pt_kfgn.plotting")
    raise AttributeError(f"module 'pt_kfgn' has no attribute {name!r}")
