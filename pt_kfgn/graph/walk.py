"""Walk a PyTensor graph from the output ``h_L`` back to the input and recover its dense layers.

A **dense layer** is ``h = a @ W + b`` (eq. 1): ``W`` a 2-d root variable such as a shared variable, stored
``(d_in, d_out)`` as Lasagne stores it or used transposed (``a @ W.T``, stored ``(d_out, d_in)``); ``b`` a 1-d
root variable or absent (a layer without bias); ``@``, ``pt.dot`` and either operand order of the addition.

A layer's input ``a`` is either the network input, another layer's pre-activation, or an **elementwise**
function of earlier values (pre-activations, layer inputs, the network input) with constants: ``a = f(h)`` in a
chain (eq. 1), ``a_{l+1} = f(h_l) + a_l`` in a residual network, sums of several paths in general.  Such an
``a`` is a :class:`Merge`: its *sources* are the values it is an elementwise function of, and
:meth:`LayerGraph.partials` gives ``∂a/∂u`` for each source ``u`` (diagonal, as ``a`` is elementwise).
Anything else (a non-elementwise op between layers, weight sharing, a learnable parameter inside a transfer
function) raises :class:`UnsupportedGraphError` naming the op or variable.

The graph is first run through PyTensor's own ``canonicalize`` rewrites (which include merging equal
subgraphs), so ``h`` written twice, ``switch(h > 0, h, 0)`` or ``x * 1`` walk like their plain forms; the
rewritten graph keeps the user's input and parameter variables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.replace import graph_replace
from pytensor.graph.rewriting.utils import rewrite_graph
from pytensor.graph.traversal import ancestors, io_toposort
from pytensor.scalar.basic import ScalarOp
from pytensor.tensor.basic import Alloc
from pytensor.tensor.blockwise import Blockwise
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.math import Dot

SUPPORTED = ("supported: dense layers `a @ W + b` (W, b root variables such as shared variables; W.T and no b "
             "allowed) whose inputs are elementwise functions of earlier layers' values (chains, residual sums)")


class UnsupportedGraphError(ValueError):
    """The graph is not made of dense layers joined by elementwise functions."""


@dataclass(frozen=True)
class DenseLayer:
    """One layer: ``h = a_in @ W + b`` (``a_in @ W.T + b`` when ``transposed``; no ``+ b`` when ``b`` is None).

    Its curvature block is laid out in **factor layout**: the ``(d_in [+ 1], d_out)`` matrix ``vstack([W, b])``
    (``W`` transposed back when stored transposed, no bias row without a bias), :meth:`matrix` and :meth:`split`.
    """

    W: Variable
    b: Variable | None
    a_in: Variable
    h: Variable
    transposed: bool = False

    @property
    def params(self) -> tuple:
        """The layer's parameters: ``(W, b)`` or ``(W,)``."""
        return (self.W,) if self.b is None else (self.W, self.b)

    @property
    def has_bias(self) -> bool:
        return self.b is not None

    def matrix(self, parts):
        """``parts`` (one per parameter, e.g. gradients) as the factor-layout ``(d_in [+ 1], d_out)`` matrix."""
        M = parts[0].T if self.transposed else parts[0]
        return pt.concatenate([M, parts[1][None, :]], axis=0) if self.has_bias else M

    def split(self, M) -> list:
        """The inverse of :meth:`matrix`: a factor-layout matrix as one value per parameter."""
        W = M[:-1] if self.has_bias else M
        return [W.T if self.transposed else W] + ([M[-1]] if self.has_bias else [])


@dataclass(frozen=True)
class Merge:
    """A layer input ``value = φ(sources)``, ``φ`` elementwise (with constants)."""

    value: Variable
    sources: tuple


@dataclass(frozen=True)
class LayerGraph:
    """Dense layers in topological order (input side first), the merges between them, and ``output`` = ``h_L``.

    ``order`` holds every value the recursions visit (pre-activations and merges), inputs first.
    """

    layers: tuple[DenseLayer, ...]
    merges: tuple[Merge, ...]
    input: Variable
    output: Variable
    order: tuple = field(repr=False, default=())

    @property
    def params(self) -> list:
        """``[W1, b1, W2, b2, ...]`` (a layer without bias contributes ``W`` alone)."""
        return [p for layer in self.layers for p in layer.params]

    def per_layer(self, flat) -> list[tuple]:
        """A flat list in :attr:`params` order, grouped per layer."""
        out, i = [], 0
        for layer in self.layers:
            k = len(layer.params)
            out.append(tuple(flat[i:i + k]))
            i += k
        return out

    def layer_dims(self) -> list[tuple[int, int]]:
        """``[(d_in, d_out), ...]`` per layer, from the weights' static shapes or values."""
        dims = []
        for layer in self.layers:
            shape = layer.W.type.shape
            if None in shape:  # the value's own shape, without a copy (a device array stays where it is)
                shape = layer.W.get_value(borrow=True, return_internal_type=True).shape
            dims.append(tuple(int(n) for n in (shape[::-1] if layer.transposed else shape)))
        return dims

    @property
    def is_chain(self) -> bool:
        """Every merge has one source: the paper's chain (eq. 1)."""
        return all(len(m.sources) == 1 for m in self.merges)

    def producer(self, v):
        """What computes the value ``v``: its :class:`DenseLayer`, its :class:`Merge`, or None (the input)."""
        for layer in self.layers:
            if layer.h is v:
                return layer
        for m in self.merges:
            if m.value is v:
                return m
        return None

    def partials(self, merge: Merge, second: bool = False):
        """``[∂φ/∂u for u in sources]`` (each ``(N, d)``, elementwise), and with ``second`` also
        ``{(i, j): ∂²φ/∂u_i∂u_j}`` for ``i ≤ j``, derived by ``pytensor.grad`` on a copy of ``φ`` whose sources are
        fresh variables (so no path through a source's own ancestors is followed)."""
        fresh = [u.type() for u in merge.sources]
        phi = graph_replace(merge.value, dict(zip(merge.sources, fresh)), strict=False)
        back = dict(zip(fresh, merge.sources))
        d1 = [pt.grad(phi.sum(), s, disconnected_inputs="ignore", return_disconnected="zero") for s in fresh]
        first = [graph_replace(d, back, strict=False) for d in d1]
        if not second:
            return first
        d2 = {(i, j): graph_replace(pt.grad(d1[i].sum(), fresh[j], disconnected_inputs="ignore",
                                            return_disconnected="zero"), back, strict=False)
              for i in range(len(fresh)) for j in range(i, len(fresh))}
        return first, d2


def _is_dot(var) -> bool:
    node = var.owner
    if node is None:
        return False
    op = node.op
    return isinstance(op, Dot) or (isinstance(op, Blockwise) and isinstance(op.core_op, Dot))


def _strip_broadcast(var):
    """``b`` from ``ExpandDims(b)`` / ``DimShuffle(b)`` / ``Alloc(b, ...)`` (how ``+ b`` broadcasts)."""
    while var.owner is not None and isinstance(var.owner.op, DimShuffle | Alloc):
        var = var.owner.inputs[0]
    return var


def _is_constant(var) -> bool:
    return isinstance(_strip_broadcast(var), Constant)


def _weight(W):
    """``(root, transposed)`` for a weight operand ``W`` or ``W.T``."""
    if W.owner is not None and isinstance(W.owner.op, DimShuffle) and tuple(W.owner.op.new_order) == (1, 0):
        return W.owner.inputs[0], True
    return W, False


def _match_dense(var):
    """``(a_in, W, b, transposed)`` when ``var = a_in @ W (+ b)``, else None (``b`` None without a bias)."""
    node = var.owner
    if node is None:
        return None
    if _is_dot(var):
        a_in, W = node.inputs
        W, transposed = _weight(W)
        return a_in, W, None, transposed
    if not isinstance(node.op, Elemwise) or node.op.scalar_op.__class__.__name__ != "Add" or len(node.inputs) != 2:
        return None
    for dot_side, bias_side in ((0, 1), (1, 0)):
        d, b = node.inputs[dot_side], _strip_broadcast(node.inputs[bias_side])
        if _is_dot(d) and _bias_candidate(b):
            a_in, W = d.owner.inputs
            W, transposed = _weight(W)
            return a_in, W, b, transposed
    return None


def _describe(var) -> str:
    if var.owner is None:
        return f"variable {var.name or var}"
    return f"op {var.owner.op} producing {var.name or var}"


def _dense_layers(output) -> dict:
    """Every dense layer among ``output``'s ancestors, keyed by ``id(h)`` (a dot inside ``dot + b`` is not one)."""
    found, inner = {}, set()
    for v in ancestors([output]):
        m = _match_dense(v) if v.owner is not None and not _is_dot(v) else None
        if m is not None:
            found[id(v)] = (v, m)
            inner.add(id(v.owner.inputs[0] if _is_dot(v.owner.inputs[0]) else v.owner.inputs[1]))
    for v in ancestors([output]):
        if _is_dot(v) and id(v) not in inner:
            found[id(v)] = (v, _match_dense(v))
    return found


def _elementwise_sources(a, stops: set) -> list:
    """The values (in ``stops``, or root inputs) that ``a`` is an elementwise function of."""
    frontier, sources, seen = list(a.owner.inputs), [], set()
    while frontier:
        v = frontier.pop()
        if id(v) in seen or _is_constant(v):
            continue
        seen.add(id(v))
        if isinstance(_strip_broadcast(v), SharedVariable):
            raise UnsupportedGraphError(f"a parameter ({_describe(_strip_broadcast(v))}) inside a transfer function is not "
                                        f"supported (e.g. a learnable PReLU slope); {SUPPORTED}")
        if id(v) in stops or v.owner is None:
            sources.append(v)
            continue
        op = v.owner.op
        if isinstance(op, Elemwise) and isinstance(op.scalar_op, ScalarOp):
            frontier.extend(v.owner.inputs)
            continue
        raise UnsupportedGraphError(f"unsupported {_describe(v)} between layers; {SUPPORTED}")
    return sources


def _bias_candidate(v) -> bool:
    b = _strip_broadcast(v)
    return b.owner is None and not isinstance(b, Constant) and b.ndim == 1


def _split_flat_adds(output):
    """Undo ``canonicalize``'s flattening of ``(a @ W + b) + r`` into one ``Add(a @ W, b, r)``: the pre-activation
    ``a @ W + b`` becomes a variable of its own again."""
    from pytensor.graph.fg import FunctionGraph

    fg = FunctionGraph(outputs=[output], clone=False)
    existing = {}  # (dot, bias) -> its `dot + b`, so that a flattened copy reuses the layer's own variable
    for node in fg.toposort():
        if isinstance(node.op, Elemwise) and node.op.scalar_op.__class__.__name__ == "Add" and len(node.inputs) == 2:
            m = _match_dense(node.outputs[0])
            if m is not None and m[2] is not None:
                existing[(id(m[1]), id(m[2]), id(m[0]))] = node.outputs[0]
    for node in list(fg.toposort()):
        if not (isinstance(node.op, Elemwise) and node.op.scalar_op.__class__.__name__ == "Add"
                and len(node.inputs) > 2):
            continue
        dots = [i for i in node.inputs if _is_dot(i)]
        biases = [i for i in node.inputs if _bias_candidate(i)]
        if not dots or not biases:
            continue
        rest = [i for i in node.inputs if i is not dots[0] and i is not biases[0]]
        a_in, W = dots[0].owner.inputs
        key = (id(_weight(W)[0]), id(_strip_broadcast(biases[0])), id(a_in))
        h = existing.setdefault(key, pt.add(dots[0], biases[0]))
        fg.replace(node.outputs[0], pt.add(h, *rest), import_missing=True)
    return fg.outputs[0]


def layer_graph(output) -> LayerGraph:
    """Recover the :class:`LayerGraph` that computes ``output`` (= ``h_L``, the last pre-activation)."""
    if not isinstance(output, Variable) or output.ndim != 2:
        raise UnsupportedGraphError("the network output h_L must be a symbolic matrix (N, d_L)")
    output = _split_flat_adds(rewrite_graph(output, include=("canonicalize",), clone=True))
    if _match_dense(output) is None:
        if output.owner is not None and isinstance(output.owner.op, Elemwise) \
                and output.owner.op.scalar_op.__class__.__name__ == "Add" \
                and sum(_match_dense(i) is not None for i in output.owner.inputs) >= 2:
            raise UnsupportedGraphError(
                "the output is a sum of several dense layers: h_L must be one layer's pre-activation. Sum them "
                "before a last layer (a sum inside the network is supported), or make one layer of the "
                f"concatenated inputs; {SUPPORTED}")
        if output.owner is not None and any(_match_dense(i) is not None for i in output.owner.inputs):
            raise UnsupportedGraphError(
                f"the output is not a dense layer but {_describe(output)} of one: h_L must be the last "
                f"pre-activation. Pass the logits (the layer `dot(a, W) + b` itself); the loss applies the output "
                f"nonlinearity ('bce': sigmoid, 'softmax_ce': softmax), or write yours into a pk.CustomLoss")
        raise UnsupportedGraphError(f"the output is not a dense layer `dot(a, W) + b`: {_describe(output)}; "
                                    f"{SUPPORTED}")
    found = _dense_layers(output)
    hs = {k: v for k, (v, _) in found.items()}
    stops = set(hs) | {id(m[0]) for _, m in found.values()}
    layers, merges, roots = {}, {}, {}
    for key, (h, (a_in, W, b, transposed)) in found.items():
        if W.owner is not None or isinstance(W, Constant) or W.ndim != 2:
            raise UnsupportedGraphError(f"weight {W} of {_describe(h)} must be a matrix root variable (e.g. a shared "
                                        "variable, or its .T)")
        layers[key] = DenseLayer(W=W, b=b, a_in=a_in, h=h, transposed=transposed)
        if a_in.owner is None:
            roots[id(a_in)] = a_in
        elif id(a_in) not in hs and id(a_in) not in merges:
            if not (isinstance(a_in.owner.op, Elemwise) and isinstance(a_in.owner.op.scalar_op, ScalarOp)):
                raise UnsupportedGraphError(f"unsupported {_describe(a_in)} between layers; {SUPPORTED}")
            sources = _elementwise_sources(a_in, stops)
            if not sources:
                raise UnsupportedGraphError(f"the layer input {_describe(a_in)} is a constant")
            merges[id(a_in)] = Merge(value=a_in, sources=tuple(sources))
            roots.update({id(s): s for s in sources if s.owner is None})
    if len(roots) != 1:
        names = ", ".join(str(r.name or r) for r in roots.values()) or "none"
        raise UnsupportedGraphError(f"the network must have exactly one input variable, found {names}")
    (x,) = roots.values()
    for layer in layers.values():
        if layer.W is x or layer.b is x:
            raise UnsupportedGraphError(f"the network input {x.name or x} is used as the weight or bias of "
                                        f"{_describe(layer.h)}; {SUPPORTED}")
    position = {id(node.outputs[0]): i for i, node in enumerate(io_toposort([x], [output]))}
    by_position = lambda v: position.get(id(v), -1)
    ordered = sorted(layers.values(), key=lambda layer: by_position(layer.h))
    seen = set()
    for layer in ordered:
        for p in layer.params:
            if id(p) in seen:
                raise UnsupportedGraphError(f"parameter {p.name or p} is used by two layers: weight sharing (tied "
                                            "weights included) is not supported")
            seen.add(id(p))
    order = sorted([layer.h for layer in ordered] + [m.value for m in merges.values()], key=by_position)
    return LayerGraph(layers=tuple(ordered), merges=tuple(sorted(merges.values(), key=lambda m: by_position(m.value))),
                      input=x, output=output, order=tuple(order))


def graph_from_loss(loss, last_weight) -> LayerGraph:
    """The graph whose output layer uses ``last_weight``, found inside a scalar ``loss`` graph."""
    for v in ancestors([loss]):
        m = _match_dense(v) if v.owner is not None else None
        if m is not None and m[1] is last_weight:
            return layer_graph(v)
    raise UnsupportedGraphError(f"no dense layer using {last_weight} found in the loss graph")
