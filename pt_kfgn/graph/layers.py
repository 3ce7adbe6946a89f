"""Feed-forward networks as PyTensor graphs (eq. 1), Lasagne style.

Each dense layer computes ``h = a @ W + b`` with ``W`` stored ``(n_in, n_out)`` as Lasagne stores it
and ``b`` a separate shared vector; ``a_next = f(h)``.  The network output is the last
pre-activation ``h_L`` (the loss holds the link).  The curvature code never relies on this builder:
it walks whatever graph it is given (:mod:`pt_kfgn.graph.walk`), so a hand-written graph works too.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytensor
import pytensor.tensor as pt

# tanh is pt.tanh: the Numba backend evaluates float32 tanh as a vectorised rational function
# (pt_kfgn.fast_math), 2.6 ms per 10⁶ values against 4.1 ms for sigmoid and 15 ms for the C library's tanh.
TRANSFER_FUNCTIONS = {
    "identity": lambda h: h,
    "linear": lambda h: h,
    "sigmoid": pt.sigmoid,
    "tanh": pt.tanh,
    "relu": lambda h: pt.maximum(h, 0.0),
    "leaky_relu": lambda h: pt.switch(h > 0, h, 0.01 * h),
    "softplus": pt.softplus,
}
INITS = ("glorot", "sparse")


def all_finite(A: np.ndarray) -> bool:
    """Whether every entry of ``A`` is finite: one pass for the sum (a NaN or inf makes it non-finite), and the
    entry-wise test only when the sum is not finite (an overflow of finite entries) [ours: one pass keeps the
    per-step check a small fraction of an Adam step]."""
    return bool(np.isfinite(A.sum())) or bool(np.all(np.isfinite(A)))


def check_batch(X, n_in: int, dtype) -> np.ndarray:
    """A finite ``(N, n_in)`` array of ``dtype`` for a network with ``n_in`` inputs, or a clear ValueError
    (no copy when ``X`` already is one)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_in:
        raise ValueError(f"inputs of shape {X.shape} do not match the network input (N, {n_in})")
    if X.shape[0] == 0:
        raise ValueError("the batch is empty")
    if not all_finite(X):
        raise ValueError("inputs contain NaN or inf")
    return np.asarray(X, dtype=dtype)


def check_data(net, loss, X, Y) -> tuple[np.ndarray, np.ndarray]:
    """A batch ``(X, Y)`` for ``net`` and ``loss`` in the net's dtype (:func:`check_batch` and the loss's
    ``check_targets``), or a clear ValueError."""
    X = check_batch(X, net.sizes[0], net.dtype)
    return X, np.asarray(loss.check_targets(Y, X.shape[0], net.sizes[-1]), dtype=net.dtype)


def _check_choice(name: str, value: str, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {sorted(choices)}")


def init_weights(n_in: int, n_out: int, rng: np.random.Generator, method: str = "glorot",
                 activation: str = "tanh") -> np.ndarray:
    """Initial weight matrix ``(n_in, n_out)``.

    ``glorot``: uniform Glorot/Bengio (2010) init as Lasagne's ``GlorotUniform`` (gain 4 for sigmoid).
    ``sparse``: Martens (2010) sparse init, 15 non-zero N(0, 1) incoming weights per unit.
    """
    _check_choice("init", method, INITS)
    if method == "glorot":
        gain = 4.0 if activation == "sigmoid" else 1.0
        bound = gain * np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-bound, bound, size=(n_in, n_out))
    W = np.zeros((n_in, n_out))
    k = min(15, n_in)
    for j in range(n_out):  # one-off at construction time, not on a hot path
        rows = rng.choice(n_in, size=k, replace=False)
        W[rows, j] = rng.standard_normal(k)
    return W


class MLP:
    """A multilayer perceptron ``sizes[0]-sizes[1]-...-sizes[-1]`` over PyTensor shared variables.

    Parameters
    ----------
    sizes : layer widths, input first.
    activations : one transfer function per layer (``len(sizes) - 1``); the last is usually "identity".
    seed : seed of the initialisation.
    init : "glorot" [ours, Lasagne default] or "sparse" [Martens 2010].
    dtype : floatX of the parameters and the symbolic input.
    """

    def __init__(self, sizes: Sequence[int], activations: Sequence[str], seed: int = 0,
                 init: str = "glorot", dtype: str = "float64"):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must hold at least two positive widths, got {sizes}")
        if len(activations) != len(sizes) - 1:
            raise ValueError(f"need one activation per layer: {len(sizes) - 1} layers, "
                             f"{len(activations)} activations")
        for a in activations:
            _check_choice("activation", a, TRANSFER_FUNCTIONS)
        _check_choice("dtype", dtype, ("float32", "float64"))
        self.sizes, self.activations, self.dtype = sizes, list(activations), dtype
        self.layer_dims = list(itertools.pairwise(sizes))
        rng = np.random.default_rng(seed)
        self.params: list[tuple[pytensor.compile.SharedVariable, pytensor.compile.SharedVariable]] = []
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
            W = init_weights(n_in, n_out, rng, init, activations[i]).astype(dtype)
            # static shapes let PyTensor fold every factor size to a constant (and JAX needs them)
            self.params.append((pytensor.shared(W, name=f"W{i + 1}", shape=W.shape),
                                pytensor.shared(np.zeros(n_out, dtype), name=f"b{i + 1}", shape=(n_out,))))
        self.X = pt.matrix("X", dtype=dtype, shape=(None, sizes[0]))
        with pytensor.config.change_flags(floatX=dtype):
            self.output = self.forward(self.X)

    @property
    def flat_params(self) -> list:
        """``[W1, b1, W2, b2, ...]`` as shared variables."""
        return [p for pair in self.params for p in pair]

    def forward(self, X):
        """Symbolic output ``h_L`` for the symbolic input ``X`` (rows are datapoints)."""
        a = X
        for (W, b), act in zip(self.params, self.activations):
            a = TRANSFER_FUNCTIONS[act](pt.dot(a, W) + b)
        return a

    def get_params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of ``[(W, b), ...]`` with ``W`` of shape ``(n_in, n_out)``: writable, C-contiguous numpy arrays
        whatever backend last wrote them (a JAX step leaves device arrays in the shared variables)."""
        return [(np.array(W.get_value(), copy=True, order="C"), np.array(b.get_value(), copy=True, order="C"))
                for W, b in self.params]

    def set_params(self, params) -> None:
        """Set ``[(W, b), ...]``; shapes are checked, values cast to the net's dtype."""
        params = list(params)
        if len(params) != len(self.params):
            raise ValueError(f"expected {len(self.params)} (W, b) pairs, got {len(params)}")
        for i, ((W, b), (Wv, bv)) in enumerate(zip(self.params, params)):
            Wv, bv = np.asarray(Wv), np.asarray(bv)
            n_in, n_out = self.sizes[i], self.sizes[i + 1]
            if Wv.shape != (n_in, n_out) or bv.shape != (n_out,):
                raise ValueError(f"layer {i + 1}: expected W {(n_in, n_out)} and b {(n_out,)}, "
                                 f"got {Wv.shape} and {bv.shape}")
            W.set_value(Wv.astype(self.dtype))
            b.set_value(bv.astype(self.dtype))

    def __repr__(self) -> str:
        return f"MLP({self.sizes}, {self.activations}, dtype={self.dtype})"


def mlp(sizes: Sequence[int], activations: Sequence[str], seed: int = 0, init: str = "glorot",
        dtype: str = "float64") -> MLP:
    """Build an :class:`MLP`, e.g. ``mlp([6, 5, 4, 3], ["sigmoid", "tanh", "identity"])``."""
    return MLP(sizes, activations, seed=seed, init=init, dtype=dtype)


def autoencoder(dim: int, hidden: str = "tanh", code: str = "identity", seed: int = 0,
                dtype: str = "float32", widths: Sequence[int] = (1000, 500, 250, 30)) -> MLP:
    """The paper's ``D-1000-500-250-30-250-500-1000-D`` autoencoder (Sec. 5).

    Parameters
    ----------
    dim : int
        Input and output width ``D``.
    hidden : str
        Hidden transfer function, tanh [ours; the text does not say].
    code : str
        Transfer function of the code layer (identity).
    seed, dtype : int, str
        Initialisation seed and floatX.
    widths : sequence of int
        Encoder widths; the decoder mirrors them.
    """
    widths = list(widths)
    sizes = [dim] + widths + widths[-2::-1] + [dim]
    acts = [hidden] * (len(widths) - 1) + [code] + [hidden] * (len(widths) - 1) + ["identity"]
    return MLP(sizes, acts, seed=seed, dtype=dtype)


_autoencoder = autoencoder  # for build_net, whose flag shadows the name


def classifier(dim_in: int, dim_out: int, hidden: str = "tanh", seed: int = 0, dtype: str = "float32",
               widths: Sequence[int] = (1000, 500, 250, 30)) -> MLP:
    """``dim_in-widths-dim_out`` with ``hidden`` units and an identity output (Sec. 5.2: 784-…-30-1)."""
    widths = list(widths)
    return MLP([dim_in] + widths + [dim_out], [hidden] * len(widths) + ["identity"], seed=seed, dtype=dtype)


def build_net(dim_in: int, dim_out: int, widths, hidden: str = "tanh", seed: int = 0, dtype: str = "float32",
              autoencoder: bool = True) -> MLP:
    """The experiments' network: :func:`autoencoder` (``dim_out`` = ``dim_in``) or :func:`classifier`."""
    if autoencoder:
        if dim_out != dim_in:
            raise ValueError(f"an autoencoder needs dim_out == dim_in, got {dim_out} and {dim_in}")
        return _autoencoder(dim_in, hidden, seed=seed, dtype=dtype, widths=widths)
    return classifier(dim_in, dim_out, hidden, seed=seed, dtype=dtype, widths=widths)


def _check_dtype(output, X) -> None:
    """Refuse a graph whose output is not in its input's dtype, naming the first node that changes it.

    The usual cause is a Python float in a float32 graph (``0.1 * h``, ``(x - 0.5) / 0.3``): PyTensor keeps such a
    constant in float64 when float32 cannot hold it exactly, and the product is float64.
    """
    if output.dtype == X.dtype:
        return
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import ancestors, io_toposort

    for node in io_toposort([X], [output]):
        narrow = [i for i in node.inputs if getattr(i, "dtype", None) == X.dtype and i.owner is not None or i is X]
        wide = [o for o in node.outputs if str(getattr(o, "dtype", "")).startswith("float") and o.dtype != X.dtype]
        if not (narrow and wide):
            continue
        consts = [c for i in node.inputs if getattr(i, "dtype", X.dtype) != X.dtype
                  for c in ancestors([i]) if isinstance(c, Constant)]
        hint = f" (the constant {float(np.asarray(consts[0].data).ravel()[0])!r} is {consts[0].dtype})" if consts else ""
        raise TypeError(
            f"the graph's output is {output.dtype} but its input X is {X.dtype}: {node.op} makes "
            f"{wide[0].dtype}{hint}; write constants in the input's dtype (np.{X.dtype}(0.3)) or set "
            f"pytensor.config.floatX = {X.dtype!r} before building the graph")
    raise TypeError(f"the graph's output is {output.dtype} but its input X is {X.dtype}")


class GraphNet:
    """Wrap a user's own forward graph ``output = h_L(X)`` so the optimisers can use it like an :class:`MLP`.

    The graph is made of dense layers joined by elementwise functions, chains and residual sums alike (see
    :func:`pt_kfgn.graph.walk.layer_graph`).  ``params`` holds one tuple per layer, ``(W, b)`` or ``(W,)`` for a layer
    without bias, in the graph's layer order.
    """

    def __init__(self, output, X):
        from pt_kfgn.graph.walk import layer_graph

        _check_dtype(output, X)
        graph = layer_graph(output)
        if graph.input is not X:
            raise ValueError(f"the graph's input is {graph.input}, not {X}")
        self.X, self.output, self.dtype = X, output, X.dtype
        self.params = [layer.params for layer in graph.layers]
        self.layer_dims = graph.layer_dims()
        self.sizes = [self.layer_dims[0][0]] + [d_out for _, d_out in self.layer_dims]

    @property
    def flat_params(self) -> list:
        return [p for group in self.params for p in group]

    def get_params(self) -> list[tuple[np.ndarray, ...]]:
        """Copies of the parameters, one tuple per layer (see :meth:`MLP.get_params`)."""
        return [tuple(np.array(p.get_value(), copy=True, order="C") for p in group) for group in self.params]

    def set_params(self, params) -> None:
        """Set the parameters from one tuple per layer; shapes are checked, values cast to the net's dtype."""
        params = list(params)
        if len(params) != len(self.params) or any(len(a) != len(b) for a, b in zip(params, self.params)):
            raise ValueError(f"expected {[len(g) for g in self.params]} arrays per layer, got "
                             f"{[len(g) for g in params]}")
        for i, (group, values) in enumerate(zip(self.params, params)):
            for p, v in zip(group, values):
                v = np.asarray(v)
                if v.shape != p.get_value().shape:
                    raise ValueError(f"layer {i + 1}: expected {p.name or 'a parameter'} of shape "
                                     f"{p.get_value().shape}, got {v.shape}")
            for p, v in zip(group, values):
                p.set_value(np.asarray(v).astype(self.dtype))
