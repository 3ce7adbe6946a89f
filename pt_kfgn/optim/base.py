"""The optimiser contract shared by KFGN, Hessian-free and the first-order baselines.

``opt.step(X, Y) -> dict`` performs one update on a mini-batch and returns its statistics
(always ``loss``: the mean training loss on the batch before the update);
``opt.evaluate(X, Y)`` is the mean loss over a data set; ``state_dict()`` / ``load_state_dict()``
capture everything a bit-identical resume needs (parameters, optimiser state, RNG states).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from pt_kfgn.backend import check_backend, compile_function, floatx
from pt_kfgn.graph.layers import check_data
from pt_kfgn.graph.losses import get_loss
from pt_kfgn.graph.walk import layer_graph
from pt_kfgn.sharding import check_devices, compile_on


def regularised_objective(loss, chain, y, eta: float):
    """``(Ē, f)`` with ``f = Ē + ½η‖θ‖²`` over every parameter of ``chain`` (the objective of App. B).

    The one place the weight-decay term is written; ``eta = 0`` gives ``f = Ē``.
    """
    Ebar = loss.mean(chain.output, y)
    if not eta:
        return Ebar, Ebar
    return Ebar, Ebar + 0.5 * eta * sum(pt.sqr(p).sum() for p in chain.params)


class StateMismatchError(ValueError):
    """A saved state that does not belong to this optimiser; the message names the first difference."""


class Optimizer:
    """Base class: holds the network, the loss, the symbolic target and the compiled evaluator."""

    name = "optimizer"

    def __init__(self, net, loss, backend: str | None = None, devices=None):
        self.net = net
        self.loss = get_loss(loss)
        self.chain = layer_graph(net.output)
        self.params = self.chain.params
        self.y = pt.matrix("Y", dtype=net.dtype)
        self.backend = check_backend(backend)
        self.mesh = check_devices(devices, self.backend)  # None: one device (pt_kfgn.sharding)
        self.t = 0  # steps taken (accepted or rejected)
        self.rejected = 0
        self._eval_fn = None

    # -- data checks -------------------------------------------------------------------------------
    def check(self, X, Y):
        """Validate and cast a batch; a clear ValueError on shape mismatch or NaN/inf."""
        return check_data(self.net, self.loss, X, Y)

    def check_step_batch(self, X, Y):
        """:meth:`check`, and on several devices a batch that splits evenly over them."""
        X, Y = self.check(X, Y)
        if self.mesh is not None:
            from pt_kfgn.sharding import check_divisible

            check_divisible(len(X), self.mesh)
        return X, Y

    def compile_step(self, inputs, outputs, updates=None, batch_inputs: int = 2):
        """Compile a step function: the backend's mode, on the optimiser's devices (the first ``batch_inputs``
        inputs hold one row per datapoint and are split over the devices)."""
        return compile_on(self.mesh, inputs, outputs, updates=updates, backend=self.backend,
                          batch_inputs=batch_inputs, static_shapes=self.static_shapes())

    def static_shapes(self) -> dict:
        """The batch's known lengths, for a user's graph whose input was declared without them (JAX needs
        static sizes)."""
        return {self.net.X: (None, self.net.sizes[0]), self.y: (None, self.net.sizes[-1])}

    def batch_loss(self):
        """Ē on the symbolic batch (mean over datapoints of the per-datapoint loss)."""
        return regularised_objective(self.loss, self.chain, self.y, 0.0)[0]

    def evaluation_function(self):
        """The compiled ``(X, Y) -> Ē`` that :meth:`evaluate` calls (built once, on first use)."""
        if self._eval_fn is None:
            with floatx(self.net.dtype):
                self._eval_fn = compile_function([self.net.X, self.y], self.batch_loss(), backend=self.backend,
                                                 static_shapes=self.static_shapes())
        return self._eval_fn

    def evaluate(self, X, Y, chunk: int = 5000) -> float:
        """Mean loss over a data set, in chunks (one compiled function, reused)."""
        fn = self.evaluation_function()
        X, Y = self.check(X, Y)
        total = 0.0
        for i in range(0, len(X), chunk):
            total += float(fn(X[i:i + chunk], Y[i:i + chunk])) * len(X[i:i + chunk])
        return total / len(X)

    def dummy_batch(self, n: int | None = None):
        """A valid batch of ``n`` zeros (target 1 in the first output: valid for every loss); by default two
        points or one per device."""
        if n is None:
            n = 2 if self.mesh is None else max(2, len(self.mesh.devices.flat))
        elif isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"a batch size must be a positive integer, got {n!r}")
        X = np.zeros((n, self.net.sizes[0]), self.net.dtype)
        Y = np.zeros((n, self.net.sizes[-1]), self.net.dtype)
        Y[:, 0] = 1.0
        return X, Y

    def example_batch(self, example=None):
        """The batch :meth:`compile` runs: ``example`` checked, or :meth:`dummy_batch` of its size."""
        if example is None or isinstance(example, (int, np.integer)):
            return self.dummy_batch(example)
        return self.check(*example)

    def compile(self, warm: bool = True, progress=None, example=None, background: bool = False,
                steps: int | None = None):
        """Compile (and with ``warm``, JIT by one step) now rather than at the first step; every piece of state
        is restored afterwards.  ``background`` and ``steps``: see :meth:`pt_kfgn.optim.kfgn.KFGN.compile` (one
        function here: nothing to defer or leave out).

        Parameters
        ----------
        warm : bool
            Run one step: Numba compiles at the first call, and JAX for each new batch shape.
        progress : callable, optional
            Receives a message before each compilation.
        example : (X, Y) or int, optional
            A batch of the size training will use (JAX specialises on it), or that size alone (a batch of zeros,
            so that compilation need not wait for the data); default :meth:`dummy_batch`.
        """
        if progress is not None:
            progress(f"compiling {self.name}")
        if warm:
            state = self.state_dict()
            self.step(*self.example_batch(example))
            self.load_state_dict(state)
        return self

    def averaged_params(self) -> list[np.ndarray] | None:
        """θ̄ (eq. 44-45) as ``[W1, b1, ...]``, or None for optimisers that do not average."""
        return None

    def evaluate_averaged(self, X, Y, chunk: int = 5000) -> float | None:
        """Mean loss at θ̄ (the parameters are swapped in and restored), or None without averaging."""
        avg = self.averaged_params()
        if avg is None:
            return None
        current = [p.get_value() for p in self.params]
        try:
            for p, a in zip(self.params, avg):
                p.set_value(a)
            return self.evaluate(X, Y, chunk)
        finally:
            for p, v in zip(self.params, current):
                p.set_value(v)

    def _contiguous_state(self) -> None:
        """Store every state array C-contiguous again.  A compiled update can return a strided view (e.g. the
        bias row of a layer matrix); Numba specialises a function on its arguments' memory layout, so a layout
        that flips between steps would recompile the whole step (tens of seconds) mid-run."""
        for v in self.state_variables():
            value = v.get_value(borrow=True)
            if isinstance(value, np.ndarray) and not value.flags.c_contiguous:
                v.set_value(np.ascontiguousarray(value), borrow=True)

    def host_state(self) -> None:
        """Store every state variable as a writable numpy array again (a JAX step leaves device arrays there, which
        the user's own ``pytensor.function`` in another mode, pickling without jax and comparisons across device
        counts cannot use).  :func:`pt_kfgn.train.train` calls it when it returns; not done per step, since on a
        GPU it would copy the whole state to the host and back every step."""
        for v in self.state_variables():
            value = v.get_value(borrow=True)
            if not isinstance(value, np.ndarray):
                v.set_value(np.array(value, copy=True, order="C"), borrow=True)

    # -- state -------------------------------------------------------------------------------------
    def state_variables(self) -> list:
        """Every shared variable that the optimiser's trajectory depends on (parameters first)."""
        return list(self.params)

    def hyper_state(self) -> dict:
        """Python-side state (scalars) beyond the shared variables."""
        return {}

    def load_hyper_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {"name": self.name, "t": self.t, "rejected": self.rejected, "loss": self._loss_id(),
                "sizes": list(self.net.sizes),
                "shared": [np.copy(v.get_value()) if isinstance(v.get_value(), np.ndarray) else v.get_value()
                           for v in self.state_variables()],
                "hyper": self.hyper_state()}

    def _loss_id(self) -> str:
        curvature = getattr(self.loss, "curvature", None)
        model = getattr(self.loss, "model_curvature", curvature)
        if curvature is None:
            return self.loss.name
        return f"{self.loss.name}({curvature})" if model == curvature else f"{self.loss.name}({curvature}; model {model})"

    def _variable_label(self, i: int, v) -> str:
        n = len(self.params)
        if i < n:
            return f"layer {i // 2 + 1} {'weight' if i % 2 == 0 else 'bias'}"
        return f"state {v.name or i}"

    def check_state_dict(self, state: dict) -> None:
        """Compare a state dict with this optimiser's whole state before anything is loaded: the optimiser's kind,
        the loss, the network's sizes, then every array's shape and dtype; :class:`StateMismatchError` names the
        first difference (e.g. "layer 1 weight: checkpoint (64, 32), net (64, 16)")."""
        if not isinstance(state, dict) or not {"name", "shared", "t", "rejected", "hyper"} <= set(state):
            raise StateMismatchError("not an optimiser state (keys name, shared, t, rejected, hyper expected)")
        if state["name"] != self.name:
            raise StateMismatchError(f"optimiser: checkpoint {state['name']!r}, this run {self.name!r}")
        if "loss" in state and state["loss"] != self._loss_id():
            raise StateMismatchError(f"loss: checkpoint {state['loss']!r}, this run {self._loss_id()!r}")
        sizes = "sizes" in state and list(state["sizes"]) != list(self.net.sizes)
        variables = self.state_variables()
        if sizes and len(variables) != len(state["shared"]):  # another depth: the arrays cannot be paired
            raise StateMismatchError(f"network sizes: checkpoint {list(state['sizes'])}, net {list(self.net.sizes)}")
        if len(variables) != len(state["shared"]):
            raise StateMismatchError(f"state arrays: checkpoint {len(state['shared'])}, this optimiser "
                                     f"{len(variables)} (another configuration: EMA, amortised curvature, rollback)")
        for i, (v, value) in enumerate(zip(variables, state["shared"])):
            mine, theirs = np.asarray(v.get_value()), np.asarray(value)
            if mine.shape != theirs.shape:
                where = "net" if i < len(self.params) else "this optimiser"
                raise StateMismatchError(f"{self._variable_label(i, v)}: checkpoint {theirs.shape}, {where} {mine.shape}")
            if mine.dtype != theirs.dtype:
                raise StateMismatchError(f"{self._variable_label(i, v)}: checkpoint dtype {theirs.dtype}, "
                                         f"this run {mine.dtype}")
        if sizes:
            raise StateMismatchError(f"network sizes: checkpoint {list(state['sizes'])}, net {list(self.net.sizes)}")

    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict`: checked whole first (:meth:`check_state_dict`), so a mismatch changes
        nothing; should loading still fail, the previous state is restored."""
        self.check_state_dict(state)
        before = self.state_dict()
        try:
            self._load(state)
        except Exception:
            self._load(before)
            raise

    def _load(self, state: dict) -> None:
        for v, value in zip(self.state_variables(), state["shared"]):
            v.set_value(np.array(value, copy=True) if isinstance(value, np.ndarray) else value)
        self.t, self.rejected = state["t"], state["rejected"]
        self.load_hyper_state(state["hyper"])

    def step(self, X, Y) -> dict:  # pragma: no cover - interface
        raise NotImplementedError
