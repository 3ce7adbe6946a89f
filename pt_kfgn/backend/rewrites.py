"""Graph rewrites of our own that the compiling modes switch on by tag [ours]: binary elementwise sums and
products for the ``"fast"`` mode, reductions in their output dtype for the JAX modes."""

from __future__ import annotations

import pytensor


def _register_rewrite(name: str, tag: str, position: float, tracks, transform) -> None:
    """Register ``transform(fgraph, node)`` (None: leave the node) once, as the PyTensor graph rewrite ``name`` on
    nodes of the Op types ``tracks``, applied by the modes that include ``tag``."""
    from pytensor.compile import optdb
    from pytensor.graph.rewriting.basic import in2out, node_rewriter

    if name not in optdb:
        optdb.register(name, in2out(node_rewriter(tracks)(transform)), tag, position=position)


# [ours] FAST_COMPILE evaluates an Elemwise by NumPy's ufunc only when its arity is the ufunc's; a product or sum
# of three or more tensors (common in gradients) falls back to a Python call per element (``np.prod`` of each
# scalar tuple). The "fast" mode splits them into binary ufunc calls (same arithmetic up to the order of the
# terms): the test suite's long-run smoke test fell from 63 to 33 s.
FAST_BINARY_TAG = "pt_kfgn_binary_elemwise"
_FAST_BINARY_REWRITE = "pt_kfgn_split_elemwise"


def _split_elemwise(fgraph, node):
    """A sum or product of three or more tensors as binary ones (:data:`FAST_BINARY_TAG`)."""
    from pytensor.scalar.basic import Add, Mul

    if not isinstance(node.op.scalar_op, Add | Mul) or len(node.inputs) <= 2 or node.op.inplace_pattern:
        return None
    out = node.inputs[0]
    for x in node.inputs[1:]:
        out = node.op.make_node(out, x).outputs[0]
    return [pytensor.tensor.cast(out, node.outputs[0].dtype)] if out.dtype != node.outputs[0].dtype else [out]


def register_binary_elemwise() -> None:
    """Register the rewrite of :data:`FAST_BINARY_TAG` (once)."""
    from pytensor.tensor.elemwise import Elemwise

    _register_rewrite(_FAST_BINARY_REWRITE, FAST_BINARY_TAG, 49.5, [Elemwise], _split_elemwise)


# [ours] PyTensor accumulates float32 sums in float64 (``Sum.acc_dtype``), and its JAX dispatch (3.0.7) returns the
# reduction in that accumulator dtype instead of the node's output dtype. With JAX's x64 mode off, as in a
# float32-only process, the cast is a no-op; once it is on (PyTensor sets it from floatX = float64 at its first
# import, and :func:`jax_precision` sets it for a float64 graph) a float32 step's bias gradients come out float64,
# the promotion spreads through everything computed from them, and the parameters are written back as float64: the
# MNIST autoencoder's float32 KFRA step ran 2.5 × slower with float64 parameters (859 against 349 ms, measured).
# The JAX modes reduce in the output dtype instead — what JAX does for float32 with x64 off.
JAX_REDUCE_TAG = "pt_kfgn_jax_reduce_in_output_dtype"
_REDUCE_REWRITE = "pt_kfgn_reduce_in_output_dtype"


def _reduce_in_output_dtype(fgraph, node):
    """A reduction whose accumulator is wider than its output, in the output's dtype (:data:`JAX_REDUCE_TAG`)."""
    acc, out = getattr(node.op, "acc_dtype", None), node.outputs[0].dtype
    if acc is None or acc == out:
        return None
    return [node.op.clone(acc_dtype=out)(*node.inputs)]


def register_reduce_in_output_dtype() -> None:
    """Register the rewrite of :data:`JAX_REDUCE_TAG` (once)."""
    from pytensor.tensor.elemwise import CAReduce

    _register_rewrite(_REDUCE_REWRITE, JAX_REDUCE_TAG, 49.6, [CAReduce], _reduce_in_output_dtype)


