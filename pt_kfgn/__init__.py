"""pt_kfgn: practical Gauss-Newton optimisation for deep learning (Botev, Ritter & Barber, ICML 2017)."""

from pt_kfgn.graph.chain import LayerChain, UnsupportedGraphError, layer_chain
from pt_kfgn.graph.layers import MLP, autoencoder, mlp
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.interop import block_gauss_newton, block_hessian, kronecker_factors

__version__ = "0.1.0"
__all__ = ["MLP", "LayerChain", "UnsupportedGraphError", "autoencoder", "block_gauss_newton",
           "block_hessian", "get_loss", "kronecker_factors", "layer_chain", "mlp"]
