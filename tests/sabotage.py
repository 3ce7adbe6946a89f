"""Break one optimiser feature on purpose, then run tests: the tests that guard it must fail.

    cd tests && python sabotage.py G=I test_kfgn.py -k numpy_step      # expect failures

Sabotages: none, G=I, Q=I, gamma=1e4, pi=1, half-curvature, no-pi-guard, no-rollback, no-retries,
cache-bypass, cache-zero, lambda-floor, gamma-floor, tie-smallest, keep-increase, mixture-gn-split,
no-spike-rollback, loss-bound, infimum.  A developer tool (not collected by pytest); the closing notes quote its results.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("PT_KFGN_BACKEND", "fast")
import pytensor.tensor as pt
import pytest

from pt_kfgn.optim import adaptation, damping, kfgn, stages

name = sys.argv[1]
orig_curv = stages.curvature
if name == "G=I":
    stages.curvature = lambda *a, **k: [(Q, pt.eye(G.shape[0], dtype=G.dtype)) for Q, G in orig_curv(*a, **k)]
elif name == "Q=I":
    stages.curvature = lambda *a, **k: [(pt.eye(Q.shape[0], dtype=Q.dtype), G) for Q, G in orig_curv(*a, **k)]
elif name == "gamma=1e4":
    orig = stages.damped_inverse
    stages.damped_inverse = lambda f, eps: orig(f, pt.constant(1e4, dtype=eps.dtype) + 0 * eps)
elif name == "pi=1":
    damping.trace_norm_pi = lambda Q, G: pt.constant(1.0, dtype=Q.dtype)
elif name == "half-curvature":
    adaptation.step_size = lambda gd, q: -gd / (0.5 * q)
elif name == "no-pi-guard":
    def pi(Q, G):
        return pt.sqrt((pt.trace(Q) / pt.cast(Q.shape[0], Q.dtype)) / (pt.trace(G) / pt.cast(G.shape[0], G.dtype)))
    damping.trace_norm_pi = pi
elif name == "no-rollback":
    orig_init = kfgn.KFGN.__init__
    def init(self, *a, **k):
        orig_init(self, *a, **k)
        self._rollback = False
        self._prev = []
    kfgn.KFGN.__init__ = init
elif name == "no-retries":
    orig_init = kfgn.KFGN.__init__
    def init(self, *a, **k):
        orig_init(self, *a, **k)
        self.retries = 0
    kfgn.KFGN.__init__ = init
elif name == "cache-bypass":
    from pt_kfgn.optim import schedule
    schedule.next_kind = lambda self: schedule.StepKind(True, True, 1, self.trial_every == 1 or self.t % self.T1 == 0)
elif name == "cache-zero":
    # never write the caches: refresh steps skip the cache update
    src_build = kfgn.KFGN._build
    def build2(self, kind):
        fs, inv = self._factor_state, self._inverse_state
        if kind[0]:
            self._factor_state = []
            if self._inverse_state:
                self._inverse_state = []
        try:
            return src_build(self, kind)
        finally:
            self._factor_state, self._inverse_state = fs, inv
    kfgn.KFGN._build = build2
elif name == "lambda-floor":  # round 3's bounds: λ may fall to 1e-20, where the LM rule is inert
    adaptation.lambda_bounds = lambda eta, min_damping=None: (1e-20, adaptation.LAMBDA_MAX)
elif name == "gamma-floor":
    adaptation.gamma_bounds = lambda eta, min_damping=None: (1e-20, adaptation.GAMMA_MAX)
elif name == "tie-smallest":  # round 3's order: the smallest candidate first, so a tie ratchets γ down
    orig_c = adaptation.gamma_candidates

    def smallest_first(*a, **k):
        c = orig_c(*a, **k)
        return [c[1], c[0], c[2]]
    adaptation.gamma_candidates = smallest_first
elif name == "keep-increase":
    orig_s = stages.step_status
    stages.step_status = lambda f0, model, f_new=None, reject_increase=False, spike=None: orig_s(
        f0, model, f_new, False, spike)
elif name == "mixture-gn-split":  # the mixture's curvature back to round 3's convex split
    from pt_kfgn.graph import losses
    orig_mix = losses.Mixture.__init__
    losses.Mixture.__init__ = lambda self, curvature="gn-split": orig_mix(self, "gn-split")
elif name == "no-spike-rollback":
    orig_s = stages.step_status
    stages.step_status = lambda f0, model, f_new=None, reject_increase=False, spike=None: orig_s(
        f0, model, f_new, reject_increase)
elif name == "loss-bound":  # the gap ignored: α* of eq. 39-41 alone
    orig_q = stages.quadratic_model
    stages.quadratic_model = lambda *a, **k: orig_q(*a[:9], None)
elif name == "infimum":  # BCE's infimum taken as 0 (the entropy of soft targets dropped)
    from pt_kfgn.graph import losses
    losses.BernoulliCE.infimum = lambda self, y: pt.zeros((), dtype=y.dtype)
elif name != "none":
    raise SystemExit(f"unknown sabotage {name}")
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--no-header", "-rN", "--durations=0", *sys.argv[2:]]))
