"""The Kronecker-factored Gauss-Newton optimiser: KFLR, KFRA, KFAC (Appendix B).

Each iteration is **one** compiled PyTensor function, composed from the named stages of
:mod:`pt_kfgn.optim.stages`: objective and gradient → Kronecker factors (optionally averaged or cached
across steps) → damped Cholesky factors → direction ``δ = −Ĉ⁻¹∇f`` → ``α*`` from a forward-mode GN product
→ guarded update.  The step comes in a few kinds, each compiled once, on first use or by :meth:`KFGN.compile`:

* every ``T₁``-th step also evaluates the trial loss ``f(θ + α*δ)`` for ``ρ`` and the LM rule (eq. 42);
* every ``T₂``-th step solves for three γ and keeps the best (eq. 43);
* with ``curvature_every``/``inverse_every`` > 1 (amortised curvature [ours, as kfac-jax]) the steps in
  between reuse the factors / the damped inverses cached in shared variables (kept as explicit inverses, so
  that a reusing step applies them by GEMMs instead of triangular solves; a γ search solves its three
  candidates by Cholesky and inverts only the chosen one; measured in docs/performance.md).

**Guarantee.**  A step is applied only if the loss at θ, the direction, ``α*`` and the model change are
finite and the model predicts a decrease (and, on ``T₁`` steps, the trial loss is finite).  A step that
passes these checks can still land where the *next* batch's loss is not finite (the trial loss is not
evaluated on every step, as in the paper): the next step then restores the previous parameters from a copy
kept in shared variables (a **rollback**) before retrying.  The next step also rolls back a step that
multiplied the loss of its (fresh) batch by more than ``rollback_factor`` (one extra forward pass) [ours].
A rejected step is retried on the same batch with raised damping up to ``retries`` times; after ``max_rejections`` consecutive rejected steps the run
stops with :class:`StalledError`, naming the cause.
"""

from __future__ import annotations

import math
import threading
import time
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.graph.replace import clone_replace

from pt_kfgn.backend import floatx
from pt_kfgn.curvature.factors import check_memory, factor_sizes
from pt_kfgn.graph.losses import new_rng, noise_input
from pt_kfgn.optim import adaptation as rules
from pt_kfgn.optim import schedule, stages
from pt_kfgn.optim.base import Optimizer, regularised_objective
from pt_kfgn.optim.symbolic import METHODS as KFGN_METHODS
from pt_kfgn.optim.symbolic import kfgn_step


def _jit_warm(fn, args) -> None:
    """JIT-compile a PyTensor JAX function by calling its jitted core on the explicit ``args`` and the current
    values of its shared inputs: JAX functions are pure, so nothing is updated (the thunk, not the jitted
    function, writes the outputs back).  Without a jitted core (another linker), nothing happens."""
    jit_fn = getattr(fn.vm, "jit_fn", None)
    if jit_fn is None:
        return
    cells = fn.vm.inputs
    explicit = [np.asarray(a, dtype=i.variable.type.dtype) for a, i in zip(args, fn.maker.inputs)]
    values = explicit + [c[0] for c in cells[len(explicit):]]
    import jax

    jax.block_until_ready(jit_fn(*values))


class StalledError(RuntimeError):
    """Too many consecutive steps were rejected; the message names the last cause."""


class KFGN(Optimizer):
    """Damped Kronecker-factored Gauss-Newton (Botev et al. 2017, Appendix B).

    Parameters
    ----------
    net : MLP or GraphNet
        The network (its output is the last pre-activation ``h_L``).
    loss : str or Loss
        "mse", "bce", "softmax_ce", "mixture" or a :class:`pt_kfgn.graph.losses.Loss`.
    method : {"kflr", "kfra", "kfac", "blockdiag-exact"}
        Curvature: KFLR (eq. 23-25), KFRA (eq. 26), KFAC (App. C) or the exact GN blocks (tiny nets only).
    eta : float
        Weight decay η, 1e-5 [M&G 2015], on weights and biases alike [ours: the paper does not single out
        biases].
    lam : float
        Initial λ on the full GN (eq. 39-42), 1.5 [ours, measured by the sensitivity study, docs/algorithm.md;
        the paper's value was not recovered, M&G 2015 used 150].  Kept in ``[max(η, 1e-8), 1e8]``
        (:func:`pt_kfgn.optim.adaptation.lambda_bounds`).
    gamma : float, optional
        Initial γ on the approximation; default ``λ₀``, i.e. ``ε₀ = λ₀ + η``: M&G's start ``γ_MG = √(λ₀ + η)``
        on each factor is ``ε = γ_MG²`` in the paper's units (eq. 36).  Kept in ``[max(η, 1e-8), 1e4]``.
    T1, omega1 : int, float
        LM interval 5 and factor ``(19/20)^T₁`` [paper / M&G].
    T2, omega2 : int, float
        γ-search interval 20 and factor ``(19/20)^T₂`` on ``ε = γ + η`` (M&G's ``(√(19/20))^T₂`` acts on
        ``√ε``; :func:`pt_kfgn.optim.adaptation.gamma_candidates`).
    reject_increase : bool
        On the steps that evaluate the trial loss, do not keep a step that raised it (ρ < 0); it is retried
        with raised damping [ours, in the spirit of Martens 2010's backtracking and kfac-jax's step
        rejection].
    rollback_factor : float or None
        Roll the previous step back when the loss of the current batch at θ is more than this factor times
        its loss at the parameters before that step (:func:`pt_kfgn.optim.adaptation.loss_spike`), then
        retry from there with λ raised (ε is left to the γ search), 2 [ours: ρ on the step's own batch cannot see a step that fits
        its batch and breaks the others, the mixture's spikes; docs/algorithm.md].  ``None``: only a
        non-finite loss rolls back.  Needs the rollback copy (``trial_every="T1"``).
    min_damping : float, optional
        The floor of λ and γ, default ``max(η, 1e-8)``: above it every LM verdict changes the model's
        damping ``λ + η`` measurably and the γ search's candidates differ [ours; tensorflow/kfac floors
        its damping at ``min_damping + l2_reg``, kfac-jax at ``min_damping = 1e-8``].
    zeta : float
        Parameter-averaging cap 0.99 [ours]; θ̄ (eq. 44-45) is reported, never used for updates.
    ema : float
        Moving average of the factors across steps, 0 = off [ours: measured, see README].
    alpha_max : float, optional
        Cap on α* (the authors' later code used 1) [ours: off].
    loss_bound : bool
        Do not let the step's quadratic model promise a fall below the loss's infimum on the batch: where
        it does, α is shortened to the step at which the model reaches it
        (:func:`pt_kfgn.optim.stages.quadratic_model`) [ours: at a confidently misclassified point the
        curvature is tiny and the gradient is not, so α* can promise more than the loss has; docs/algorithm.md].
    gamma_search : bool
        Run the γ search every T₂ steps [paper].
    trial_every : {"T1", 1}
        Evaluate the trial loss on the ``T₁`` steps that need ρ (paper, default) or on every step [ours].
    curvature_every, inverse_every : int
        Recompute the factors / their damped inverses every k steps (1 = every step, the paper);
        ``inverse_every`` is at most ``curvature_every`` [ours, as kfac-jax's update periods].
    retries : int
        Retries of a rejected step on the same batch with raised damping, 2 [ours].
    max_rejections : int
        Consecutive rejected steps before :class:`StalledError`, 20 [ours].
    seed : int
        KFAC's sampler seed (its noise is drawn on the host, :meth:`pt_kfgn.graph.losses.Loss.draw_noise`).
    backend : str, optional
        See :mod:`pt_kfgn.backend`.
    devices : int or jax.sharding.Mesh, optional
        With ``backend="jax"``: split each batch over this many devices, state replicated
        (:mod:`pt_kfgn.sharding`); the batch size must be divisible by the device count.
    """

    name = "kfgn"

    def __init__(self, net, loss, method: str = "kfra", *, eta: float = 1e-5, lam: float = 1.5,
                 gamma: float | None = None, T1: int = 5, T2: int = 20, omega1: float | None = None,
                 omega2: float | None = None, zeta: float = 0.99, ema: float = 0.0,
                 alpha_max: float | None = None, loss_bound: bool = True, gamma_search: bool = True,
                 trial_every="T1", reject_increase: bool = True, rollback_factor: float | None = 2.0,
                 min_damping: float | None = None,
                 curvature_every: int = 1, inverse_every: int = 1, retries: int = 2, max_rejections: int = 20,
                 seed: int = 0, backend: str | None = None, devices=None):
        if method not in KFGN_METHODS:
            raise ValueError(f"method={method!r} is not one of {list(KFGN_METHODS)}")
        T1, T2, curvature_every, inverse_every, max_rejections = rules.validate_int(
            1, T1=T1, T2=T2, curvature_every=curvature_every, inverse_every=inverse_every,
            max_rejections=max_rejections)
        (retries,) = rules.validate_int(0, retries=retries)
        if inverse_every > curvature_every:
            raise ValueError("inverse_every must not exceed curvature_every (new factors need new inverses)")
        if method == "blockdiag-exact" and (curvature_every > 1 or ema > 0):
            raise ValueError("blockdiag-exact supports neither amortised curvature nor a factor EMA")
        if trial_every not in ("T1", 1):
            raise ValueError(f"trial_every must be 'T1' or 1, got {trial_every!r}")
        if isinstance(eta, bool) or not (isinstance(eta, int | float) and math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a non-negative finite number, got {eta!r}")
        gamma = lam if gamma is None else gamma  # an invalid λ is named first, below
        omega1 = (19 / 20) ** T1 if omega1 is None else omega1
        omega2 = (19 / 20) ** T2 if omega2 is None else omega2
        rules.validate_positive(required=("lam",), lam=lam, gamma=gamma, alpha_max=alpha_max,
                                min_damping=min_damping)
        if rollback_factor is not None and (isinstance(rollback_factor, bool) or not (
                isinstance(rollback_factor, int | float) and 1 < rollback_factor < math.inf)):
            raise ValueError(f"rollback_factor must be a finite number > 1 or None, got {rollback_factor!r}")
        rules.validate_interval((0, 1), closed_low=False, omega1=omega1, omega2=omega2)
        rules.validate_interval((0, 1), closed_low=True, zeta=zeta, ema=ema)
        super().__init__(net, loss, backend, devices)
        self.name = f"kfgn-{method}"
        self.method, self.eta, self.T1, self.T2 = method, float(eta), T1, T2
        self.omega1, self.omega2, self.zeta, self.ema = float(omega1), float(omega2), float(zeta), float(ema)
        self.alpha_max, self.gamma_search, self.trial_every = alpha_max, gamma_search, trial_every
        self.curvature_every, self.inverse_every = curvature_every, inverse_every
        self.retries, self.max_rejections = retries, max_rejections
        self.reject_increase = bool(reject_increase)
        self.loss_bound = bool(loss_bound)
        self.rollback_factor = None if rollback_factor is None else float(rollback_factor)
        self.min_damping = min_damping
        self.lambda_bounds = rules.lambda_bounds(eta, min_damping)
        self.gamma_bounds = rules.gamma_bounds(eta, min_damping)
        fx = net.dtype
        self.lam = pytensor.shared(np.asarray(rules.clip(lam, self.lambda_bounds), dtype=fx), name="lambda")
        self.gamma = pytensor.shared(np.asarray(rules.clip(gamma, self.gamma_bounds), dtype=fx), name="gamma")
        # KFAC: the noise of its samples is drawn here (numpy) and enters the step as an input, like the batch
        self.noise_rng = new_rng(seed) if method == "kfac" else None
        self._noise = noise_input(net.dtype) if method == "kfac" else None
        self._no_noise = None  # the zeros passed to step kinds that reuse cached factors (no samples drawn)
        self.averaged = [pytensor.shared(np.array(p.get_value()), name=f"avg_{p.name}") for p in self.params]
        # the rollback copy: θ and θ̄ before the last applied update (only needed without a trial every step)
        self._rollback = trial_every != 1
        self._prev = ([pytensor.shared(np.array(v.get_value()), name=f"prev_{v.name}")
                       for v in (*self.params, *self.averaged)] if self._rollback else [])
        self._has_prev = pytensor.shared(np.asarray(0, "int8"), name="has_prev")
        # cached factors (EMA or amortised curvature) and cached damped inverses (amortised inverses)
        layer_shapes = [((d_in,) * 2, (d_out,) * 2) for d_in, d_out in factor_sizes(self.chain)]
        self._layer_dims = self.chain.layer_dims()  # for the memory check of every step: read once
        cache = ema > 0 or curvature_every > 1
        shapes = [s for pair in layer_shapes for s in pair]  # static shapes: JAX needs them (arange)
        self._factor_state = [pytensor.shared(np.zeros(s, fx), name=f"factor_{k}", shape=s)
                              for k, s in enumerate(shapes)] if cache else []
        self._inverse_state = [pytensor.shared(np.zeros(s, fx), name=f"inverse_{k}", shape=s)
                               for k, s in enumerate(shapes)] if inverse_every > 1 else []
        self._refreshes = 0  # accepted steps that computed fresh factors (the EMA's step count)
        self._inverse_gamma = math.nan  # γ the cached inverses hold (NaN: no cache yet)
        self.consecutive_rejections = 0
        self._fns = {}
        self._out_names = {}  # kind -> the names of its compiled function's outputs, in order
        self._pending = {}  # step kinds being compiled in the background: threading.Event per kind
        self._compile_lock = threading.RLock()
        self.background_compile_seconds = {}  # kind description -> seconds (compile(background=True))

    # -- symbolic construction -------------------------------------------------------------------
    def _current_factors(self, y, refresh: bool, k_ema):
        """Fresh factors (averaged into the EMA state when on) or the cached ones; and the cache updates."""
        if not refresh:
            return [tuple(self._factor_state[2 * i:2 * i + 2]) for i in range(len(self._factor_state) // 2)], {}
        factors, updates = stages.curvature(self.chain, self.loss, y, self.method, self._noise), {}
        if self.ema > 0:
            old = self._factor_state
            factors = [(k_ema * old[2 * i] + (1 - k_ema) * Q, k_ema * old[2 * i + 1] + (1 - k_ema) * G)
                       for i, (Q, G) in enumerate(factors)]
        return factors, updates

    def _build(self, kind: tuple):
        """Compile one step kind ``(refresh_factors, refresh_inverse, n_gamma, trial)``: the step of
        ``pk.kfgn_updates`` (:func:`pt_kfgn.optim.symbolic.kfgn_step`) on this kind's factors, γ candidates and
        cached inverses, plus the state that spans steps (averages, caches, the rollback copy)."""
        refresh_factors, refresh_inverse, n_gamma, trial = kind
        X, y, params, eta = self.net.X, self.y, self.params, self.eta
        fx = self.net.dtype
        k_ema, zeta_t = pt.scalar("k_ema", dtype=fx), pt.scalar("zeta_t", dtype=fx)
        factors, updates = self._current_factors(y, refresh_factors, k_ema)
        gammas = [self.gamma] if n_gamma == 1 else rules.gamma_candidates(
            self.gamma, np.asarray(eta, fx), np.asarray(self.omega2, fx),
            tuple(np.asarray(b, fx) for b in self.gamma_bounds), lambda v, b: pt.clip(v, *b))
        # amortised inverses are kept explicit, so that the steps reusing them apply two GEMMs per layer; a γ
        # search solves each candidate by Cholesky and inverts only the chosen one (below) [ours, measured]
        explicit = bool(self._inverse_state) and n_gamma == 1
        cached = None
        if self.method != "blockdiag-exact" and not (refresh_inverse or n_gamma > 1):
            cached = [tuple(self._inverse_state[2 * i:2 * i + 2]) for i in range(len(factors))]
        n = len(params)
        spike = None
        if self._rollback and self.rollback_factor is not None:  # the last step, judged on this fresh batch
            Ebar = regularised_objective(self.loss, self.chain, y, eta)[0]  # merged with the step's when compiled
            E_prev = clone_replace(Ebar, replace=dict(zip(params, self._prev[:n])))
            spike = pt.eq(self._has_prev, 1) & rules.loss_spike(Ebar, E_prev, np.asarray(self.rollback_factor, fx))
        step, info = kfgn_step(self.chain, y, self.loss, self.method, lam=self.lam, gamma=gammas, eta=eta,
                               alpha_max=self.alpha_max, factors=factors, inverse=cached, explicit=explicit,
                               trial=trial, reject_increase=self.reject_increase, spike=spike,
                               loss_bound=self.loss_bound)
        status, new_gamma = info["status"], info["gamma"]
        ok = pt.eq(status, 0)
        rollback = (pt.eq(status, 1) | pt.eq(status, 6)) & pt.eq(self._has_prev, 1) if self._rollback else None
        for i, (p, avg) in enumerate(zip(params, self.averaged)):
            kept = step[p]
            new_avg = pt.switch(ok, zeta_t * avg + (1 - zeta_t) * kept, avg)
            if rollback is not None:
                prev_p, prev_avg = self._prev[i], self._prev[n + i]
                updates[prev_p] = pt.switch(ok, p, prev_p)
                updates[prev_avg] = pt.switch(ok, avg, prev_avg)
                kept, new_avg = pt.switch(rollback, prev_p, kept), pt.switch(rollback, prev_avg, new_avg)
            updates[p], updates[avg] = kept, new_avg
        if rollback is not None:
            updates[self._has_prev] = pt.cast(ok & ~rollback, "int8")
        if refresh_factors and self._factor_state:
            for s, m in zip(self._factor_state, [m for pair in factors for m in pair]):
                updates[s] = pt.switch(ok, m, s)
        if self._inverse_state and (refresh_inverse or n_gamma > 1):
            inverse = info["inverse"] if n_gamma == 1 else stages.damped_inverse(factors, new_gamma + eta, True)
            for s, m in zip(self._inverse_state, [m for pair in inverse for m in pair]):
                updates[s] = pt.switch(ok, m, s)
        updates[self.gamma] = pt.switch(ok, new_gamma, self.gamma)
        nan = pt.constant(np.nan, dtype=fx)
        pis = stages.trace_norm_pis(factors) if self.method != "blockdiag-exact" else []
        pi_min, pi_max = (pt.min(pt.stack(pis)), pt.max(pt.stack(pis))) if pis else (nan, nan)
        named = {"loss": info["loss"], "objective": info["objective"],
                 "new_objective": info["new_objective"] if trial else nan, "alpha": info["alpha"],
                 "model_change": info["model_change"], "bounded": info["bounded"],
                 "rho": info["rho"] if trial else nan, "status": status,
                 "gamma": new_gamma, "pi_min": pi_min, "pi_max": pi_max}
        if rollback is not None:
            named["rollback"] = rollback
        if spike is not None:
            named["loss_before"] = E_prev
        self._out_names[kind] = tuple(named)
        outs = list(named.values())
        batch = [X, y] if self._noise is None else [X, y, self._noise]
        return self.compile_step([*batch, k_ema, zeta_t], outs, updates=updates, batch_inputs=len(batch))

    def _inputs(self, kind, X, Y, k, zeta_t) -> tuple:
        """The step function's arguments.  KFAC's noise is drawn for every call of a kind that computes fresh
        factors (fresh samples per try); the kinds that reuse cached factors get zeros and draw nothing."""
        if self.noise_rng is None:
            return X, Y, k, zeta_t
        if kind.refresh_factors:
            noise = self.loss.draw_noise(self.noise_rng, len(X), self.net.sizes[-1], self.net.dtype)
        else:
            shape = (len(X), self.loss.noise_columns(self.net.sizes[-1]))
            if self._no_noise is None or self._no_noise.shape != shape:
                self._no_noise = np.zeros(shape, self.net.dtype)
            noise = self._no_noise
        return X, Y, noise, k, zeta_t

    def _fn(self, kind: tuple):
        pending = self._pending.get(kind)
        if pending is not None:  # being compiled in the background: wait for it
            pending.wait()
        if kind not in self._fns:
            with self._compile_lock, floatx(self.net.dtype):
                if kind not in self._fns:
                    self._fns[kind] = self._build(kind)
        return self._fns[kind]

    def compile(self, warm: bool = True, progress=None, example=None, background: bool = False,
                steps: int | None = None):
        """Compile every step kind now (otherwise each on first use); see :meth:`Optimizer.compile`.

        With ``steps`` (the number of the last step training will run), only the kinds that steps up to it can
        use (:func:`pt_kfgn.optim.schedule.all_kinds`): a short run compiles no trial-loss or γ-search kind.

        With ``warm``, each kind runs once on ``example`` (a batch or its size; default a dummy two-point
        batch) and every shared variable (parameters, damping, caches, RNG) is restored afterwards.

        With ``background`` (JAX, one device), only the kind of the first step is compiled now; the others
        (the ``T₁`` trial-loss kind, the ``T₂`` γ-search kind, ...) are built and JIT-compiled by a background
        thread while the first steps run, by calling their jitted functions on copies of the inputs (no state
        changes) [ours].  A step that needs a kind still compiling waits for it.
        """
        X, Y = self.example_batch(example)
        kinds, rest = schedule.all_kinds(self, steps), []
        if background and self.backend == "jax" and self.mesh is None and warm:
            self.t += 1  # the kind of the next step
            first = schedule.next_kind(self)
            self.t -= 1
            rest = [k for k in kinds if k != first and k not in self._fns]
            rest.sort(key=lambda k: (k.n_gamma, not k.trial, not k.refresh_factors))  # the order steps need them
            kinds = [first]
        state = self.state_dict() if warm else None
        for i, kind in enumerate(kinds):
            if progress is not None:
                progress(f"compiling step kind {i + 1}/{len(kinds)} {schedule.describe(kind)}")
            fn = self._fn(kind)
            if warm:
                fn(*self._inputs(kind, X, Y, 0.0, 0.0))
                self._contiguous_state()
        later = {}
        if len(kinds) == 1 and background and warm and rest:
            self.evaluation_function()  # built here, so that no graph is built beside the thread
            zero = np.asarray(0.0, self.net.dtype)
            later = {k: self._inputs(k, X, Y, zero, zero) for k in rest}  # KFAC's draws: before the restore
        if warm:
            self.load_state_dict(state)
        if later:
            self._compile_in_background(later)
        return self

    def _compile_in_background(self, inputs: dict) -> None:
        """Build and JIT-compile the kinds ``inputs`` maps to example arguments, one after the other."""
        kinds = list(inputs)
        events = {k: threading.Event() for k in kinds}
        self._pending.update(events)

        def work():
            for kind in kinds:
                if not threading.main_thread().is_alive():  # the program is exiting: compile nothing more
                    events[kind].set()
                    self._pending.pop(kind, None)
                    continue
                t = time.perf_counter()
                try:
                    with self._compile_lock, floatx(self.net.dtype):
                        if kind not in self._fns:
                            fn = self._build(kind)
                            _jit_warm(fn, inputs[kind])
                            self._fns[kind] = fn
                    self.background_compile_seconds[schedule.describe(kind)] = time.perf_counter() - t
                except Exception as err:  # noqa: BLE001 - the step compiles it again on first use and raises there
                    warnings.warn(f"background compilation of {schedule.describe(kind)} failed ({err!r}); it is "
                                  "compiled when a step needs it", RuntimeWarning, stacklevel=1)
                finally:
                    events[kind].set()
                    self._pending.pop(kind, None)

        # not a daemon: a process that exits while XLA compiles in a daemon thread aborts in C++ ("terminate
        # called …", seen in a 3-step CLI run); exiting now waits for the kind being compiled, then skips the rest
        threading.Thread(target=work, name="pt_kfgn-compile", daemon=False).start()

    @property
    def compiling(self) -> int:
        """How many step kinds are still being compiled in the background (:meth:`compile`)."""
        return len(self._pending)

    # -- one iteration ---------------------------------------------------------------------------
    def step(self, X, Y) -> dict:
        """One KFGN iteration on the batch (with up to ``retries`` retries); returns its statistics."""
        X, Y = self.check_step_batch(X, Y)
        check_memory(self._layer_dims, len(X), self.method, self.loss.output_rank(self.net.sizes[-1]),
                     np.dtype(self.net.dtype).itemsize)
        self.t += 1
        zeta_t = rules.averaging_weight(self.t, self.zeta)
        rolled_back = False
        for attempt in range(self.retries + 1):
            kind = schedule.next_kind(self)
            k = rules.ema_weight(self._refreshes + 1, self.ema)
            fn = self._fn(kind)
            o = dict(zip(self._out_names[kind], fn(*self._inputs(kind, X, Y, k, zeta_t)), strict=True))
            self._contiguous_state()
            this_rollback = bool(o.get("rollback", False))
            rolled_back = rolled_back or this_rollback
            loss_before = float(o["loss_before"]) if "loss_before" in o and not rolled_back else math.nan
            status = int(o["status"])
            if status == 0:
                self._after_accepted(kind, float(o["rho"]))
                break
            self._raise_damping(lam_only=status == 6)
            if status == 1 and not this_rollback:
                break  # the loss at θ itself is not finite and there is nothing to roll back to
        accepted = status == 0
        if accepted:
            self.consecutive_rejections = 0
        else:
            self.rejected += 1
            self.consecutive_rejections += 1
            if status == 1 and not rolled_back or self.consecutive_rejections >= self.max_rejections:
                raise StalledError(
                    f"{self.name}: step {self.t} rejected ({self.consecutive_rejections} in a row, "
                    f"{attempt + 1} tries on the batch): {stages.STATUS[status]}; λ = "
                    f"{float(self.lam.get_value()):.3g}, γ = {float(self.gamma.get_value()):.3g}")
        return {"loss": float(o["loss"]), "loss_before": loss_before, "objective": float(o["objective"]),
                "new_objective": float(o["new_objective"]), "alpha": float(o["alpha"]),
                "model_change": float(o["model_change"]), "bounded": int(o["bounded"]), "rho": float(o["rho"]),
                "accepted": accepted,
                "status": stages.STATUS[status], "retries": attempt, "rolled_back": rolled_back,
                "lambda": float(self.lam.get_value()), "gamma": float(self.gamma.get_value()),
                "epsilon": float(self.gamma.get_value()) + self.eta, "pi_min": float(o["pi_min"]),
                "pi_max": float(o["pi_max"]), "rejected": self.rejected}

    def _after_accepted(self, kind, rho: float) -> None:
        refresh_f, refresh_i, n_gamma, trial = kind
        self._refreshes += int(refresh_f)
        if refresh_i or n_gamma > 1:
            self._inverse_gamma = float(self.gamma.get_value())
        if trial and self.t % self.T1 == 0:
            lam = rules.update_lambda(float(self.lam.get_value()), rho, self.omega1)
            self.lam.set_value(np.asarray(rules.clip(lam, self.lambda_bounds), self.net.dtype))

    def _raise_damping(self, lam_only: bool = False) -> None:
        """After a rejection: λ/ω₁ and ε/ω₂, within their bounds (the cached inverses are then stale).

        ``lam_only`` (a rollback): λ alone, the LM rule's verdict on a step too long for the next batch; the
        direction's damping is left to the γ search [ours: raising ε too on each of a mixture run's 30-90
        rollbacks drove ε to 10³-10⁴ and stalled KFRA, docs/algorithm.md]."""
        lam, gamma = rules.raised_damping(float(self.lam.get_value()), float(self.gamma.get_value()), self.eta,
                                          self.omega1, self.omega2, self.min_damping)
        self.lam.set_value(np.asarray(lam, self.net.dtype))
        if not lam_only:
            self.gamma.set_value(np.asarray(gamma, self.net.dtype))

    # -- state -----------------------------------------------------------------------------------
    def state_variables(self) -> list:
        return [*self.params, *self.averaged, self.lam, self.gamma, *self._prev, self._has_prev,
                *self._factor_state, *self._inverse_state]

    def hyper_state(self) -> dict:
        noise = {} if self.noise_rng is None else {"noise_rng": self.noise_rng.bit_generator.state}
        return {"refreshes": self._refreshes, "inverse_gamma": self._inverse_gamma, "cached_inverse": "explicit",
                "consecutive_rejections": self.consecutive_rejections, **noise}

    def load_hyper_state(self, state: dict) -> None:
        self._refreshes, self._inverse_gamma = int(state["refreshes"]), float(state["inverse_gamma"])
        if self._inverse_state and state.get("cached_inverse") != "explicit":
            # a checkpoint of an older version cached Cholesky factors: recompute the inverses on the next step
            warnings.warn("the checkpoint caches Cholesky factors (an older pt_kfgn); the inverses are recomputed "
                          "on the next step", stacklevel=2)
            self._inverse_gamma = math.nan
        self.consecutive_rejections = int(state["consecutive_rejections"])
        if self.noise_rng is not None:
            self.noise_rng.bit_generator.state = state["noise_rng"]

    def averaged_params(self) -> list[np.ndarray]:
        """θ̄ (eq. 44-45), flat ``[W1, b1, ...]``."""
        return [a.get_value() for a in self.averaged]
