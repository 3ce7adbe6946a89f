"""Matrix-free Gauss-Newton products through forward and reverse mode (eq. 12-13, 39-41).

``J v`` is one forward-mode product (``pytensor.gradient.pushforward``, once ``Rop``) of the network
output; ``G v = Jᵀ (H_L J v) / N`` adds one reverse-mode product (``pullback``, once ``Lop``).
"""

from __future__ import annotations

from pytensor.gradient import pullback, pushforward

from pt_kfgn.curvature.recursions import batch_size
from pt_kfgn.graph.losses import Loss
from pt_kfgn.graph.walk import LayerGraph


def jacobian_vector(chain: LayerGraph, params, vs):
    """``J v`` (N, d_L): the change of ``h_L`` along the parameter direction ``vs`` (one per param)."""
    try:  # true forward mode where every op implements it (builder graphs) ...
        return pushforward(chain.output, list(params), list(vs), use_op_pushforward=True)
    except NotImplementedError:  # ... else PyTensor's pushforward by two pullbacks (e.g. `@` → Matmul)
        return pushforward(chain.output, list(params), list(vs))


def gn_quadratic_form(chain: LayerGraph, loss: Loss, y, params, vs):
    """``vᵀ Ḡ v = (1/N) Σ_n (J_n v)ᵀ H_L^n (J_n v)`` (eq. 41), forward mode only."""
    u = jacobian_vector(chain, params, vs)
    return (u * loss.hessian_vector(chain.output, y, u)).sum() / batch_size(u)


def gn_vector_product(chain: LayerGraph, loss: Loss, y, params, vs):
    """``Ḡ v`` as a list shaped like ``params`` (eq. 12-13)."""
    u = jacobian_vector(chain, params, vs)
    Hu = loss.hessian_vector(chain.output, y, u) / batch_size(u)
    return pullback(chain.output, list(params), Hu)
