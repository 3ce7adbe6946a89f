"""Which stages a KFGN step runs: its *kind*, a tuple ``(refresh_factors, refresh_inverse, n_gamma, trial)``.

Each kind is one compiled function (:class:`pt_kfgn.optim.kfgn.KFGN`): the paper's step recomputes the
factors and their damped Cholesky factors every step, evaluates the trial loss ``f(θ + α*δ)`` on the ``T₁``
steps that update λ (eq. 42) and searches three γ on the ``T₂`` steps (eq. 43); amortised curvature
[ours, as kfac-jax] recomputes factors every ``curvature_every`` and inverses every ``inverse_every`` steps.
"""

from __future__ import annotations

from typing import NamedTuple


class StepKind(NamedTuple):
    """What one compiled step function runs (a tuple, so kinds sort, hash and compare as before)."""

    refresh_factors: bool  # compute fresh Kronecker factors (else the cached ones)
    refresh_inverse: bool  # factorise the damped factors anew (else the cached inverses)
    n_gamma: int  # 1, or 3 on the γ-search steps (eq. 43)
    trial: bool  # evaluate the trial loss f(θ + α*δ) for ρ (eq. 42)


def next_kind(opt) -> tuple:
    """The kind of step ``opt.t``: fresh factors every ``curvature_every``-th step (and while none are cached),
    fresh inverses every ``inverse_every``-th step and whenever γ or the factors changed, the trial loss every
    ``T₁``-th step (every step with ``trial_every=1``), the γ search every ``T₂``-th."""
    t = opt.t
    refresh_f = opt.curvature_every == 1 or t % opt.curvature_every == 0 or opt._refreshes == 0
    if opt.gamma_search and t % opt.T2 == 0:
        return StepKind(refresh_f, True, 3, True)
    refresh_i = (opt.inverse_every == 1 or refresh_f or t % opt.inverse_every == 0
                 or float(opt.gamma.get_value()) != opt._inverse_gamma)
    return StepKind(refresh_f, refresh_i, 1, opt.trial_every == 1 or t % opt.T1 == 0)


def all_kinds(opt, upto: int | None = None) -> list[tuple]:
    """Every kind the configuration of ``opt`` can use (what ``KFGN.compile`` compiles); with ``upto``, those
    that steps ``opt.t + 1 … upto`` can use: a run shorter than ``T₁`` needs no trial-loss kind, one shorter than
    ``T₂`` no γ search (a kind needed after all is compiled on first use)."""
    kinds = _all_kinds(opt)
    if upto is None:
        return kinds
    trial = opt.trial_every == 1 or upto // opt.T1 > opt.t // opt.T1
    search = upto // opt.T2 > opt.t // opt.T2
    return [k for k in kinds if (k.n_gamma == 1 or search) and (k.trial == (opt.trial_every == 1) or trial)]


def _all_kinds(opt) -> list[tuple]:
    trial_always, ce = opt.trial_every == 1, opt.curvature_every
    kinds = {StepKind(True, True, 1, trial_always), StepKind(True, True, 1, True)}
    if opt.gamma_search:
        kinds.add(StepKind(opt.T2 % ce == 0, True, 3, True))
    if ce > 1:
        kinds |= {StepKind(False, True, 1, trial_always), StepKind(False, True, 1, True)}
    if opt.inverse_every > 1:
        kinds |= {StepKind(False, False, 1, trial_always), StepKind(False, False, 1, True)}
    return sorted(kinds, reverse=True)


def describe(kind) -> str:
    """A short human description, e.g. ``(factors, inverses, γ search, trial loss)``."""
    refresh_f, refresh_i, n_gamma, trial = kind
    parts = ["factors" if refresh_f else "cached factors",
             "inverses" if refresh_i or n_gamma > 1 else "cached inverses"]
    parts += ["γ search"] if n_gamma > 1 else []
    parts += ["trial loss"] if trial else []
    return "(" + ", ".join(parts) + ")"
