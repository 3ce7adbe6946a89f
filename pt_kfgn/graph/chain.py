"""Walk a PyTensor graph from the output ``h_L`` back to the input and recover the layer chain.

Each layer must have the form ``h = dot(a, W) + b`` (``W`` a 2-d root variable such as a shared
variable, ``b`` a 1-d root variable, either operand order of the addition, ``@`` or ``pt.dot``),
and between two layers only **elementwise** ops whose other inputs are constants:
``a = f(h)`` (eq. 1).  Anything else (a non-elementwise op between layers, a layer without bias,
weight sharing, a skip connection, a learnable parameter inside a transfer function) raises
:class:`UnsupportedGraphError` naming the op or variable.

The graph is first run through PyTensor's own ``canonicalize`` rewrites (which include merging equal
subgraphs), so ``h`` written twice, ``switch(h > 0, h, 0)`` or ``x * 1`` walk like their plain forms; the
rewritten graph keeps the user's input and parameter variables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytensor.tensor as pt
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Constant, Variable
from pytensor.graph.rewriting.utils import rewrite_graph
from pytensor.scalar.basic import ScalarOp
from pytensor.tensor.basic import Alloc
from pytensor.tensor.blockwise import Blockwise
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.math import Dot

SUPPORTED = ("supported: a chain of dense layers `dot(a, W) + b` (W, b root variables such as shared variables) "
             "joined by elementwise transfer functions of the pre-activation alone")


class UnsupportedGraphError(ValueError):
    """The graph is not a chain of dense layers joined by elementwise transfer functions."""


@dataclass(frozen=True)
class DenseLayer:
    """One layer: ``h = a_in @ W + b`` and, unless it is the last, ``a_out = f(h)``."""

    W: Variable
    b: Variable
    a_in: Variable
    h: Variable
    a_out: Variable | None  # the next layer's input; None for the output layer


@dataclass(frozen=True)
class LayerChain:
    """Layers from input to output; ``output`` is ``h_L``."""

    layers: tuple[DenseLayer, ...]
    input: Variable
    output: Variable

    @property
    def params(self) -> list:
        """``[W1, b1, W2, b2, ...]``."""
        return [p for layer in self.layers for p in (layer.W, layer.b)]


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


def _match_dense(var):
    """``(a_in, W, b)`` when ``var = dot(a_in, W) + b``, else None."""
    node = var.owner
    if node is None or not isinstance(node.op, Elemwise) or node.op.scalar_op.__class__.__name__ != "Add":
        return None
    if len(node.inputs) != 2:
        return None
    for dot_side, bias_side in ((0, 1), (1, 0)):
        d, b = node.inputs[dot_side], _strip_broadcast(node.inputs[bias_side])
        if _is_dot(d) and b.owner is None and not isinstance(b, Constant) and b.ndim == 1:
            a_in, W = d.owner.inputs
            return a_in, W, b
    return None


def _describe(var) -> str:
    if var.owner is None:
        return f"variable {var.name or var}"
    return f"op {var.owner.op} producing {var.name or var}"


def _elementwise_source(a):
    """Follow elementwise ops from ``a`` up to the single non-constant source ``h`` it is a function of.

    Returns ``h`` (a pre-activation matching the dense pattern) or ``a``'s root input variable, or
    raises :class:`UnsupportedGraphError`.
    """
    frontier, sources, seen = [a], [], set()
    while frontier:
        v = frontier.pop()
        if id(v) in seen or _is_constant(v):
            continue
        seen.add(id(v))
        if isinstance(_strip_broadcast(v), SharedVariable):
            raise UnsupportedGraphError(f"a parameter ({_describe(_strip_broadcast(v))}) inside a transfer function is not "
                                        f"supported (e.g. a learnable PReLU slope); {SUPPORTED}")
        if _match_dense(v) is not None or v.owner is None:
            if all(s is not v for s in sources):
                sources.append(v)
            continue
        op = v.owner.op
        if isinstance(op, Elemwise) and isinstance(op.scalar_op, ScalarOp):
            frontier.extend(v.owner.inputs)
            continue
        if _is_dot(v):
            raise UnsupportedGraphError(f"a dot product without a bias ({_describe(v)}) is not supported: "
                                        "give every dense layer a bias vector")
        raise UnsupportedGraphError(f"unsupported {_describe(v)} between layers; {SUPPORTED}")
    if len(sources) != 1:
        names = ", ".join(_describe(s) for s in sources)
        raise UnsupportedGraphError(f"the activation {a.name or a} depends on several layers or inputs "
                                    f"({names}): skip connections are not supported; {SUPPORTED}")
    return sources[0]


def layer_chain(output) -> LayerChain:
    """Recover the :class:`LayerChain` that computes ``output`` (= ``h_L``, the last pre-activation)."""
    if not isinstance(output, Variable) or output.ndim != 2:
        raise UnsupportedGraphError("the network output h_L must be a symbolic matrix (N, d_L)")
    output = rewrite_graph(output, include=("canonicalize",), clone=True)
    layers, h, a_out = [], output, None
    while True:
        match = _match_dense(h)
        if match is None and not layers and h.owner is not None and h.owner.inputs \
                and _match_dense(h.owner.inputs[0]) is not None:
            raise UnsupportedGraphError(
                f"the output is not a dense layer but {_describe(h)} of one: h_L must be the last pre-activation. "
                f"Pass the logits (the layer `dot(a, W) + b` itself); the loss applies the output nonlinearity "
                f"('bce': sigmoid, 'softmax_ce': softmax), or write yours into a pk.CustomLoss")
        if match is None:
            raise UnsupportedGraphError(f"the output is not a dense layer `dot(a, W) + b`: {_describe(h)}; "
                                        f"{SUPPORTED}")
        a_in, W, b = match
        if W.owner is not None or W.ndim != 2:
            raise UnsupportedGraphError(f"weight {W} must be a matrix root variable (e.g. a shared variable)")
        layers.append(DenseLayer(W=W, b=b, a_in=a_in, h=h, a_out=a_out))
        src = _elementwise_source(a_in)
        if src.owner is None:  # reached the network input (possibly through elementwise preprocessing)
            break
        h, a_out = src, a_in
    layers.reverse()
    seen = set()
    for layer in layers:
        for p in (layer.W, layer.b):
            if id(p) in seen:
                raise UnsupportedGraphError(f"parameter {p.name or p} is used by two layers: weight sharing "
                                            "is not supported")
            seen.add(id(p))
    return LayerChain(layers=tuple(layers), input=src, output=output)


def chain_from_loss(loss, last_weight) -> LayerChain:
    """The chain whose last layer uses ``last_weight``, found inside a scalar ``loss`` graph."""
    from pytensor.graph.traversal import ancestors

    for v in ancestors([loss]):
        m = _match_dense(v) if v.owner is not None else None
        if m is not None and m[1] is last_weight:
            return layer_chain(v)
    raise UnsupportedGraphError(f"no dense layer using {last_weight} found in the loss graph")


def transfer_derivatives(layer: DenseLayer):
    """``(f'(h), f''(h))`` for the layer's transfer function (eq. 9-10), derived by ``pytensor.grad``.

    Valid because ``a_out`` is an elementwise function of ``h`` (checked by the walker), so
    ``∂(Σ a_out)/∂h = f'(h)``.  Piecewise-linear functions give ``f'' = 0`` where it exists.
    """
    if layer.a_out is None:
        one = pt.ones_like(layer.h)
        return one, pt.zeros_like(layer.h)
    d1 = pt.grad(layer.a_out.sum(), layer.h, disconnected_inputs="ignore")
    d2 = pt.grad(d1.sum(), layer.h, disconnected_inputs="ignore", return_disconnected="zero")
    return d1, d2
