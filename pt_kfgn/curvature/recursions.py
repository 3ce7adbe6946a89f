"""One backward sweep through the layer graph, with three propagation strategies.

The sweep visits the values of :class:`pt_kfgn.graph.walk.LayerGraph` (pre-activations and merges) from the
output back to the input.  Through a dense layer ``h = a W + b`` (Lasagne layout ``W`` is ``(d_a, d_h)``, so the
paper's ``W̃ᵀ v`` is ``W v``) a Jacobian ``J_h`` becomes ``J_a = J_h Wᵀ`` exactly; through a merge
``a = φ(u_1, …, u_k)`` (elementwise) it becomes ``J_{u_i} = J_a D_i`` with ``D_i = diag(∂φ/∂u_i)``, which is
``B_λ = diag(f'(h_λ))`` (eq. 9) in a chain.  Where a value feeds several consumers (a residual connection) the
contributions are summed.

* ``backprop_sqrt``: per-datapoint square roots / sampled gradients ``S`` (N, r, d):
  ``S_u = Σ_consumers S_a ∂a/∂u`` — KFLR (eq. 24, exact ``S_L``) and KFAC (App. C, sampled ``S_L``), exact through
  every path;
* ``backprop_average``: KFRA's batch-averaged matrices (eq. 26);
* ``backprop_per_sample``: exact per-datapoint matrices (N, d, d): the Gauss-Newton (eq. 22) or, with the
  gradients, the Hessian (eq. 8, 10).

The last two propagate matrices, which do not simply add at a merge: ``(J_1 + J_2)ᵀ H (J_1 + J_2)`` has cross
terms.  They keep the joint curvature of the **frontier** (every value whose consumers have all been visited but
which has not itself been visited): blocks ``G_{pq}`` for each pair of frontier values.  Visiting ``v``, computed
from ``u_1 … u_k`` by maps ``T_i`` (``J_{u_i} += J_v T_i``), replaces it by its producers:

    G_{pq} ← G_{pq} + T_pᵀ G_{vq} + G_{pv} T_q + T_pᵀ G_{vv} T_q      (T_p = 0 unless p is a producer),

plus, for the Hessian at a merge, ``diag(∂E/∂v ⊙ ∂²φ/∂u_p∂u_q)`` on ``G_{pq}`` (eq. 10's residual term).  In a
chain the frontier is one value and this is eq. 8 / eq. 22 / eq. 26 exactly.  KFRA averages over the batch as
eq. 26 does, treating the curvature coming from above as independent of the local derivatives:
``E[D_p G D_q] ≈ Ḡ ⊙ E[d_p d_qᵀ]`` (eq. 26's own approximation) and, for the cross terms a residual connection
adds, ``E[D_p G_{vq}] ≈ diag(E[d_p]) Ḡ_{vq}`` [ours: the same independence, applied to the first moment].  Both are
exact when every ``d`` is constant over the batch (a linear network): then KFRA equals KFLR for a constant ``H_L``.

Each function returns one state per layer, input layer first.
"""

from __future__ import annotations

import pytensor.tensor as pt

from pt_kfgn.graph.gram import gram
from pt_kfgn.graph.walk import DenseLayer, LayerGraph


def batch_size(x):
    """N = x.shape[0] in x's dtype (an int64 divisor would upcast float32 graphs)."""
    return pt.cast(x.shape[0], x.dtype)


def _constant(d):
    """The scalar value of a derivative that is constant (``∂(u + f(h))/∂u = 1``), else None."""
    from pytensor.tensor.exceptions import NotScalarConstantError

    try:
        return float(pt.get_underlying_scalar_constant_value(d))
    except NotScalarConstantError:
        return None


def _dense_back(S, layer: DenseLayer):
    """``S Wᵀ`` for ``h = a W`` (``S W`` for ``h = a Wᵀ``): S (N, d_h) or (N, r, d_h) → (…, d_a)."""
    Wt = layer.W if layer.transposed else layer.W.T
    if S.ndim == 2:
        return pt.dot(S, Wt)
    # (N, r, d) → (N r, d) with the -1 left to the backend: no product of symbolic shapes, which JAX
    # cannot trace (tensordot would write N·r)
    return pt.dot(S.reshape((-1, S.shape[2])), Wt).reshape((S.shape[0], S.shape[1], -1))


def _scale(S, d):
    """``S D`` with ``D = diag(d)`` per datapoint: S (N, d) or (N, r, d)."""
    c = _constant(d)
    if c is not None:
        return S if c == 1.0 else S * c
    return S * d if S.ndim == 2 else S * d[:, None, :]


def _is_input(graph: LayerGraph, u) -> bool:
    return graph.producer(u) is None  # the network input: nothing to propagate into


def backprop_sqrt(graph: LayerGraph, S_L):
    """Per-datapoint factors ``S_λ`` (N, r, d_λ) with ``𝒢_λ[n] = S_λ[n]ᵀ S_λ[n]`` (eq. 23-24).

    A matrix ``S_L`` (N, d_L) is one vector per datapoint (KFAC's sampled gradients, r = 1): it is
    propagated with plain matrix products.
    """
    S, per_layer = {id(graph.output): S_L}, {}
    for v in reversed(graph.order):
        Sv = S.pop(id(v), None)
        if Sv is None:
            continue
        node = graph.producer(v)
        if isinstance(node, DenseLayer):
            per_layer[id(node)] = Sv
            pushes = [] if _is_input(graph, node.a_in) else [(node.a_in, _dense_back(Sv, node))]
        else:
            pushes = [(u, _scale(Sv, d)) for u, d in zip(node.sources, graph.partials(node))
                      if not _is_input(graph, u)]
        for u, contribution in pushes:
            S[id(u)] = contribution if id(u) not in S else S[id(u)] + contribution
    return [per_layer[id(layer)] for layer in graph.layers]


class _Blocks:
    """The frontier's joint blocks ``G_{pq}``, stored once per unordered pair."""

    def __init__(self, transpose):
        self.blocks, self.transpose = {}, transpose

    def get(self, p, q):
        if (id(p), id(q)) in self.blocks:
            return self.blocks[(id(p), id(q))]
        if (id(q), id(p)) in self.blocks:
            return self.transpose(self.blocks[(id(q), id(p))])
        return None

    def add(self, p, q, X):
        key = (id(p), id(q)) if (id(q), id(p)) not in self.blocks else (id(q), id(p))
        if key != (id(p), id(q)):
            X = self.transpose(X)
        self.blocks[key] = X if key not in self.blocks else self.blocks[key] + X

    def pop(self, v, frontier):
        """``G_vv`` and ``{w: G_vw}`` for the other frontier values; removes ``v``'s blocks."""
        Gvv = self.get(v, v)
        cross = {id(w): self.get(v, w) for w in frontier if w is not v}
        self.blocks = {k: X for k, X in self.blocks.items() if id(v) not in k}
        return Gvv, cross


def _sweep(graph: LayerGraph, init, ops):
    """The frontier sweep shared by :func:`backprop_average` and :func:`backprop_per_sample`.

    ``ops`` maps a producer edge to matrices: ``left(X, edge)`` is ``Tᵀ X``, ``pair(G, e_p, e_q)`` is
    ``Tᵀ_p G T_q``, ``extra(v, node)`` yields ``(p, q, X)`` second-order terms; an edge is ``("dense", layer)``
    or ``("elementwise", d)``.
    """
    store = _Blocks(ops.transpose)
    store.add(graph.output, graph.output, init)
    frontier, per_layer = [graph.output], {}
    for v in reversed(graph.order):
        if not any(w is v for w in frontier):
            continue
        Gvv, cross = store.pop(v, frontier)
        frontier = [w for w in frontier if w is not v]
        node = graph.producer(v)
        if isinstance(node, DenseLayer):
            per_layer[id(node)] = ops.finish(Gvv)
            edges = [] if _is_input(graph, node.a_in) else [(node.a_in, ("dense", node))]
        else:
            edges = [(u, ("elementwise", d)) for u, d in zip(node.sources, ops.partials(graph, node))
                     if not _is_input(graph, u)]
        for p, e in edges:  # T_pᵀ G_{vw} for every other frontier value (producers already there included)
            for w in frontier:
                if cross.get(id(w)) is not None:
                    X = ops.left(cross[id(w)], e)
                    store.add(p, w, X if w is not p else X + ops.transpose(X))
        for i, (p, e_p) in enumerate(edges):  # T_pᵀ G_vv T_q
            for q, e_q in edges[i:]:
                store.add(p, q, ops.pair(Gvv, e_p, e_q))
        for p, q, X in ops.extra(v, node, edges):
            store.add(p, q, X)
        frontier += [p for p, _ in edges if not any(w is p for w in frontier)]
    return [per_layer[id(layer)] for layer in graph.layers]


class _Average:
    """KFRA's batch-averaged blocks (d, d); the first may be a vector (a diagonal ``E[H_L]``)."""

    transpose = staticmethod(lambda X: X.T)

    @staticmethod
    def partials(graph, merge):
        return graph.partials(merge)

    @staticmethod
    def finish(G):
        return pt.diag(G) if G.ndim == 1 else G

    @staticmethod
    def left(X, e):
        kind, arg = e
        if kind == "dense":
            return pt.dot(arg.W.T if arg.transposed else arg.W, X)
        c = _constant(arg)
        if c is not None:
            return X if c == 1.0 else c * X
        return arg.mean(axis=0)[:, None] * X  # E[D_p G_vq] ≈ diag(E[d_p]) Ḡ_vq [ours]

    @staticmethod
    def pair(G, e_p, e_q):
        (kp, ap), (kq, aq) = e_p, e_q
        if kp == kq == "dense":  # the same layer: W Ḡ Wᵀ, a diagonal Ḡ as (W ⊙ g) Wᵀ
            W = ap.W.T if ap.transposed else ap.W
            WG = W * G[None, :] if G.ndim == 1 else pt.dot(W, G)
            return pt.dot(WG, W.T)
        G = pt.diag(G) if G.ndim == 1 else G
        cp, cq = _constant(ap), _constant(aq)
        if cp is not None and cq is not None:
            return G if cp * cq == 1.0 else (cp * cq) * G
        if ap is aq:
            return G * (gram(ap) / batch_size(ap))  # eq. 26: Ḡ ⊙ E[b bᵀ]
        dp = ap if cp is None else pt.full_like(aq, cp)
        dq = aq if cq is None else pt.full_like(ap, cq)
        return G * (pt.dot(dp.T, dq) / batch_size(dp))  # Ḡ ⊙ E[d_p d_qᵀ]

    @staticmethod
    def extra(v, node, edges):
        return ()


class _PerSample:
    """Exact per-datapoint blocks (N, d, d); with ``grads`` the Hessian's residual terms (eq. 8, 10)."""

    transpose = staticmethod(lambda X: X.transpose(0, 2, 1))

    def __init__(self, grads=None):
        self.grads, self.second = grads, {}

    def partials(self, graph, merge):
        if self.grads is None:
            return graph.partials(merge)
        first, second = graph.partials(merge, second=True)
        self.second[id(merge)] = second
        return first

    @staticmethod
    def finish(G):
        return G

    @staticmethod
    def left(X, e):
        kind, arg = e
        if kind == "dense":
            return pt.matmul((arg.W.T if arg.transposed else arg.W)[None], X)
        return arg[:, :, None] * X

    def pair(self, G, e_p, e_q):
        return self.transpose(self.left(self.transpose(self.left(G, e_p)), e_q))

    def extra(self, v, node, edges):
        if self.grads is None or isinstance(node, DenseLayer):
            return
        g = self.grads[id(v)]  # ∂E_n/∂v
        index = {id(u): i for i, u in enumerate(node.sources)}
        for a, (p, _) in enumerate(edges):
            for q, _ in edges[a:]:
                i, j = sorted((index[id(p)], index[id(q)]))
                t = g * self.second[id(node)][(i, j)]
                yield p, q, t[:, :, None] * pt.eye(t.shape[1], dtype=t.dtype)[None]


def backprop_average(graph: LayerGraph, G_L):
    """KFRA's batch-averaged ``Ḡ_λ`` (eq. 26), started from the batch mean ``E[H_L]``.

    ``G_L`` may be a vector: the diagonal of a diagonal ``E[H_L]`` (BCE, squared error), so that the first
    product is ``(W ⊙ g) Wᵀ`` rather than two dense products; the last state is then ``diag(g)``.
    """
    return _sweep(graph, G_L, _Average)


def backprop_per_sample(graph: LayerGraph, H_L, grads=None):
    """Exact per-datapoint pre-activation curvature (N, d_λ, d_λ).

    With ``grads`` (``{id(merge value): ∂E_n/∂v}`` for every merge, (N, d)) the residual terms are added: the
    exact pre-activation Hessian (eq. 8).  Without it, the Gauss-Newton recursion (eq. 22).
    """
    return _sweep(graph, H_L, _PerSample(grads))
