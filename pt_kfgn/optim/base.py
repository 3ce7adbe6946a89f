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
from pt_kfgn.graph.chain import layer_chain
from pt_kfgn.graph.layers import check_batch
from pt_kfgn.graph.losses import get_loss


def regularised_objective(loss, chain, y, eta: float):
    """``(Ē, f)`` with ``f = Ē + ½η‖θ‖²`` over every parameter of ``chain`` (the objective of App. B).

    The one place the weight-decay term is written; ``eta = 0`` gives ``f = Ē``.
    """
    Ebar = loss.mean(chain.output, y)
    if not eta:
        return Ebar, Ebar
    return Ebar, Ebar + 0.5 * eta * sum(pt.sqr(p).sum() for p in chain.params)


class Optimizer:
    """Base class: holds the network, the loss, the symbolic target and the compiled evaluator."""

    name = "optimizer"

    def __init__(self, net, loss, backend: str | None = None):
        self.net = net
        self.loss = get_loss(loss)
        self.chain = layer_chain(net.output)
        self.params = self.chain.params
        self.y = pt.matrix("Y", dtype=net.dtype)
        self.backend = check_backend(backend)
        self.t = 0  # steps taken (accepted or rejected)
        self.rejected = 0
        self._eval_fn = None

    # -- data checks -------------------------------------------------------------------------------
    def check(self, X, Y):
        """Validate and cast a batch; a clear ValueError on shape mismatch or NaN/inf."""
        X = check_batch(X, self.net.sizes[0], self.net.dtype)
        Y = self.loss.check_targets(Y, X.shape[0], self.net.sizes[-1]).astype(self.net.dtype)
        return X, Y

    def batch_loss(self):
        """Ē on the symbolic batch (mean over datapoints of the per-datapoint loss)."""
        return regularised_objective(self.loss, self.chain, self.y, 0.0)[0]

    def evaluate(self, X, Y, chunk: int = 5000) -> float:
        """Mean loss over a data set, in chunks (one compiled function, reused)."""
        if self._eval_fn is None:
            with floatx(self.net.dtype):
                self._eval_fn = compile_function([self.net.X, self.y], self.batch_loss(), backend=self.backend)
        X, Y = self.check(X, Y)
        total = 0.0
        for i in range(0, len(X), chunk):
            total += float(self._eval_fn(X[i:i + chunk], Y[i:i + chunk])) * len(X[i:i + chunk])
        return total / len(X)

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
        return {"name": self.name, "t": self.t, "rejected": self.rejected,
                "shared": [np.copy(v.get_value()) if isinstance(v.get_value(), np.ndarray) else v.get_value()
                           for v in self.state_variables()],
                "hyper": self.hyper_state()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint was written by {state.get('name')!r}, not {self.name!r}")
        variables = self.state_variables()
        if len(variables) != len(state["shared"]):
            raise ValueError("checkpoint does not match this optimiser's state")
        for v, value in zip(variables, state["shared"]):
            v.set_value(value)
        self.t, self.rejected = state["t"], state["rejected"]
        self.load_hyper_state(state["hyper"])

    def step(self, X, Y) -> dict:  # pragma: no cover - interface
        raise NotImplementedError
