"""One backward recursion through the layer chain, with three propagation strategies.

From layer λ+1 to λ (Lasagne layout ``W`` is ``(d_λ, d_{λ+1})``, so the paper's ``W̃ᵀ v`` is ``W v``)
every strategy multiplies by ``W`` and by ``B_λ = diag(f'(h_λ))`` (eq. 9):

* ``backprop_sqrt``: per-datapoint square roots / sampled gradients ``S`` (N, r, d):
  ``S_λ = (S_{λ+1} Wᵀ) ⊙ f'(h_λ)`` — KFLR (eq. 24, exact ``S_L``) and KFAC (App. C, sampled ``S_L``);
* ``backprop_average``: a batch-averaged matrix (d, d):
  ``Ḡ_λ = (W Ḡ_{λ+1} Wᵀ) ⊙ E[f'(h_λ) f'(h_λ)ᵀ]`` — KFRA (eq. 26);
* ``backprop_per_sample``: exact per-datapoint matrices (N, d, d):
  ``H_λ = B W H_{λ+1} Wᵀ B + D_λ`` with ``D_λ = diag(f''(h_λ) ⊙ ∂E/∂a_λ)`` (eq. 8, 10) for the Hessian,
  or without ``D_λ`` for the Gauss-Newton (eq. 22).

Each function returns one state per layer, input layer first.
"""

from __future__ import annotations

import pytensor.tensor as pt

from pt_kfgn.graph.chain import LayerChain, transfer_derivatives
from pt_kfgn.graph.gram import gram


def batch_size(x):
    """N = x.shape[0] in x's dtype (an int64 divisor would upcast float32 graphs)."""
    return pt.cast(x.shape[0], x.dtype)


def _backward(chain: LayerChain, init, push):
    """``state_L = init``; ``state_λ = push(state_{λ+1}, W_{λ+1}, layer_λ)``; returned input-first."""
    states = [init]
    for above, layer in zip(reversed(chain.layers[1:]), reversed(chain.layers[:-1])):
        states.append(push(states[-1], above.W, layer))
    return states[::-1]


def backprop_sqrt(chain: LayerChain, S_L):
    """Per-datapoint factors ``S_λ`` (N, r, d_λ) with ``𝒢_λ[n] = S_λ[n]ᵀ S_λ[n]`` (eq. 23-24).

    A matrix ``S_L`` (N, d_L) is one vector per datapoint (KFAC's sampled gradients, r = 1): it is
    propagated with plain matrix products.
    """

    def push(S, W, layer):
        d1, _ = transfer_derivatives(layer)
        if S.ndim == 2:
            return pt.dot(S, W.T) * d1
        # (N, r, d) → (N r, d) with the -1 left to the backend: no product of symbolic shapes, which JAX
        # cannot trace (tensordot would write N·r)
        SW = pt.dot(S.reshape((-1, S.shape[2])), W.T).reshape((S.shape[0], S.shape[1], -1))
        return SW * d1[:, None, :]

    return _backward(chain, S_L, push)


def backprop_average(chain: LayerChain, G_L):
    """KFRA's batch-averaged ``Ḡ_λ`` (eq. 26), started from the batch mean ``E[H_L]``.

    ``G_L`` may be a vector: the diagonal of a diagonal ``E[H_L]`` (BCE, squared error), so that the first
    product is ``(W ⊙ g) Wᵀ`` rather than two dense products; the last state is then ``diag(g)``.
    """

    def push(G, W, layer):
        d1, _ = transfer_derivatives(layer)
        WG = W * G[None, :] if G.ndim == 1 else pt.dot(W, G)
        return pt.dot(WG, W.T) * (gram(d1) / batch_size(d1))

    states = _backward(chain, G_L, push)
    if G_L.ndim == 1:
        states[-1] = pt.diag(G_L)
    return states


def backprop_per_sample(chain: LayerChain, H_L, grads=None):
    """Exact per-datapoint pre-activation curvature (N, d_λ, d_λ).

    With ``grads`` (the per-datapoint ``∂E/∂h_λ`` of every layer, (N, d_λ)) the residual ``D_λ`` is added:
    the exact pre-activation Hessian (eq. 8).  Without it, the Gauss-Newton recursion (eq. 22).
    """
    index = {id(layer): i for i, layer in enumerate(chain.layers)}

    def push(H, W, layer):
        d1, d2 = transfer_derivatives(layer)
        out = pt.matmul(pt.matmul(W[None], H), W.T[None]) * (d1[:, :, None] * d1[:, None, :])
        if grads is not None:
            dE_da = pt.dot(grads[index[id(layer)] + 1], W.T)  # ∂E/∂a_λ = W̃ᵀ g_{λ+1}
            out = out + (d2 * dE_da)[:, :, None] * pt.eye(d1.shape[1], dtype=d1.dtype)[None]
        return out

    return _backward(chain, H_L, push)
