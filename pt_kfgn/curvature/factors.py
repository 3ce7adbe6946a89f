"""Kronecker factors ``(Q_λ, G_λ)`` of each layer's curvature block (eq. 19-26).

**Convention (stated once).**  Lasagne layout: ``W`` is ``(d_in, d_out)``, the bias is appended as the
last *row*, ``θ_λ = vstack([W, b]).ravel()`` (C order).  That order is the paper's column-major
``vec`` of its ``(d_out, d_in + 1)`` matrix, so a one-datapoint block is exactly ``kron(Q, G)``:
input factor first, ``Q`` of size ``d_in + 1``.  Both factors are **means** over the batch.  A layer without
bias has ``θ_λ = W.ravel()`` and ``Q`` of size ``d_in``; a weight used transposed (``a @ W.T``) is laid out as
``W.T`` (:meth:`pt_kfgn.graph.walk.DenseLayer.matrix`).
"""

from __future__ import annotations

import pytensor.tensor as pt

from pt_kfgn.curvature.recursions import backprop_average, backprop_per_sample, backprop_sqrt, batch_size
from pt_kfgn.graph.gram import gram
from pt_kfgn.graph.losses import Loss
from pt_kfgn.graph.walk import LayerGraph

KRONECKER = ("kflr", "kfra", "kfac")  # the Kronecker-factored curvatures: the one list the optimisers use
METHODS = (*KRONECKER, "exact")  # and the exact block factors (tests, diagnostics)
MEMORY_LIMIT = 4 * 2 ** 30  # bytes; [ours] override with $PT_KFGN_MEMORY_LIMIT (bytes)


class CurvatureMemoryError(MemoryError):
    """An exact curvature method would allocate more than the memory limit."""


def memory_estimate(dims, N: int, method: str, output_rank: int, itemsize: int) -> int:
    """Bytes of the largest intermediates of ``method`` for layers of shapes ``dims`` ``[(d_in, d_out), ...]`` and
    batch ``N``.

    KFLR / "exact" propagate an ``(N, r, d_λ)`` square root per layer (r = rank of ``H_L``); the exact blocks
    ("hessian", "gn", "blockdiag-exact") hold ``(N, d_λ, d_λ)`` per layer and dense ``((d_in+1) d_out)²``
    blocks.  KFRA and KFAC need ``O(N d + d²)`` and are not limited.
    """
    if method in ("kflr", "exact"):
        return itemsize * N * output_rank * sum(b for _, b in dims)
    if method in ("hessian", "gn", "blockdiag-exact"):
        return itemsize * (N * sum(b * b for _, b in dims) + sum(((a + 1) * b) ** 2 for a, b in dims))
    return 0


def check_memory(dims, N: int, method: str, output_rank: int, itemsize: int) -> None:
    """Raise :class:`CurvatureMemoryError` naming the size when ``method`` would exceed the limit."""
    import os

    limit = int(os.environ.get("PT_KFGN_MEMORY_LIMIT", MEMORY_LIMIT))
    need = memory_estimate(dims, N, method, output_rank, itemsize)
    if need > limit:
        raise CurvatureMemoryError(
            f"{method} on layers {', '.join(f'{a}x{b}' for a, b in dims)} with a batch of {N} needs about {need / 2 ** 30:.1f} GiB "
            f"(limit {limit / 2 ** 30:.1f} GiB, $PT_KFGN_MEMORY_LIMIT): use KFRA or KFAC, a smaller batch, or "
            "raise the limit")


def factor_sizes(graph: LayerGraph) -> list[tuple[int, int]]:
    """``[(size of Q, size of G), ...]``: ``d_in + 1`` with a bias, ``d_in`` without."""
    return [(d_in + layer.has_bias, d_out) for layer, (d_in, d_out) in zip(graph.layers, graph.layer_dims())]


def augmented_input(layer):
    """``Ā = [a_in, 1]`` (N, d_in + 1), the bias absorbed (footnote 1); ``a_in`` itself for a layer without bias."""
    a = layer.a_in
    if not layer.has_bias:
        return a
    return pt.concatenate([a, pt.ones((a.shape[0], 1), dtype=a.dtype)], axis=1)


def input_factor(layer):
    """``Q_λ = E[ā ā^T] = Āᵀ Ā / N`` (eq. 21)."""
    A = augmented_input(layer)
    return gram(A) / batch_size(A)


def _gram(S):
    """``(1/N) Σ_{n,r} S[n, r] S[n, r]ᵀ`` for S (N, r, d) or (N, d) (eq. 25)."""
    if S.ndim == 2:
        return gram(S) / batch_size(S)
    return gram(S.reshape((-1, S.shape[2]))) / batch_size(S)  # (N r, d), the -1 as in backprop_sqrt (JAX)


def output_factors(graph: LayerGraph, loss: Loss, y, method: str, noise=None):
    """``E[𝒢_λ]`` (or its approximation) per layer.

    * ``kflr`` / ``exact``: exact ``E[𝒢_λ]`` from the per-datapoint square roots (eq. 23-25);
    * ``kfra``: the recursive approximation (eq. 26);
    * ``kfac``: one Monte-Carlo sample ŷ ~ p(y|h_L) per datapoint (App. C), a function of the symbolic
      ``noise`` matrix (:meth:`Loss.draw_noise`).
    """
    h = graph.output
    if method in ("kflr", "exact"):
        S_L = loss.sqrt_hessian(h, y)
        if S_L.type.shape[1] == 1 or loss.output_rank(None) == 1:  # rank one per datapoint: matrix products
            # (also keeps the batch size out of any reshape, which JAX cannot trace)
            S_L = S_L[:, 0, :]
        return [_gram(S) for S in backprop_sqrt(graph, S_L)]
    if method == "kfra":
        diagonal = loss.mean_hessian_diagonal(h, y)  # a diagonal E[H_L] is propagated as a vector
        return backprop_average(graph, loss.mean_hessian(h, y) if diagonal is None else diagonal)
    if method == "kfac":
        if noise is None:
            raise ValueError("kfac needs the symbolic noise matrix of its samples (Loss.draw_noise)")
        return [_gram(S) for S in backprop_sqrt(graph, loss.sample_grad(h, noise))]
    raise ValueError(f"method={method!r} is not one of {list(METHODS)}")


def kronecker_factors(graph: LayerGraph, loss: Loss, y, method: str, noise=None):
    """``[(Q_λ, G_λ), ...]`` symbolic; ``noise``: KFAC's noise matrix (symbolic, see :meth:`Loss.draw_noise`)."""
    Gs = output_factors(graph, loss, y, method, noise)
    return [(input_factor(layer), G) for layer, G in zip(graph.layers, Gs)]


def per_sample_grads(graph: LayerGraph, loss: Loss, y):
    """``g_λ[n] = ∂E_n/∂h_λ`` (N, d_λ) for every layer (eq. 3)."""
    total = loss.per_sample(graph.output, y).sum()
    return pt.grad(total, [layer.h for layer in graph.layers])


def _average_kron(A, H):
    """``(1/N) Σ_n kron(ā_n ā_nᵀ, H_n)`` as a dense ((d_in+1)·d, (d_in+1)·d) matrix (diagnostics only)."""
    Z = A[:, :, None, None] * H[:, None, :, :]  # (N, i, a, c)
    T = pt.tensordot(Z, A, axes=[[0], [0]]) / batch_size(A)  # (i, a, c, j)
    T = T.transpose(0, 1, 3, 2)  # (i, a, j, c)
    n = A.shape[1] * H.shape[1]
    return T.reshape((n, n))


def exact_blocks(graph: LayerGraph, loss: Loss, y, kind: str):
    """Exact per-layer blocks of the batch-mean objective w.r.t. ``θ_λ`` (tiny nets: O(N D⁴)).

    ``kind="hessian"``: the block Hessian (eq. 7-8); ``kind="gn"``: the block Gauss-Newton (eq. 12-19).
    """
    h = graph.output
    if kind == "hessian":
        values = [m.value for m in graph.merges]
        grads = pt.grad(loss.per_sample(h, y).sum(), values) if values else []
        per = backprop_per_sample(graph, loss.hessian(h, y), {id(v): g for v, g in zip(values, grads)})
    elif kind == "gn":
        per = backprop_per_sample(graph, loss.gn_hessian(h, y))
    else:
        raise ValueError(f"kind={kind!r} is not one of ['hessian', 'gn']")
    return [_average_kron(augmented_input(layer), H) for layer, H in zip(graph.layers, per)]
