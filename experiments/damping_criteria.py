"""Does the damping adapt? Issue 25's criteria, read from every second-order run's ``log.csv``.

Per run: how often ε (the damping added to the Kronecker factors) went up and down after update 500 and its
smallest value there (the rule: it moves both ways, a tenth of its changes at least each way, or stays ≥ 2η);
the smallest λ and ε of the whole run (never 1e-19); every LM verdict ρ < ¼ and the smallest factor by which it
raised ``λ + η`` (≥ 1.1; with the run's own η); the spike onsets after update 700 (a batch loss > 8 × the median of the previous 25
while the one before was not; at most 2 on the mixture), and how many of them the last step caused (the batch's
loss at the parameters before that step, ``batch_loss_before``, was below half of it), came on a step that
rolled the last one back (no ``batch_loss_before`` then), or had their own step undone by the next one (the
step taken on the spiking batch lifted a fresh batch beyond the rollback factor: the hard point stays unfitted).
Also the steps that the loss's infimum shortened (the log's ``bounded``; None for logs from before it).

    python -m experiments.damping_criteria --results results
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
from pathlib import Path

from experiments.mixture_curvature import spike_onsets
from pt_kfgn.optim.kfgn import KFGN
from pt_kfgn.train import log_file, read_log

# KFGN's default weight decay η, read from its signature; a run whose summary.json names its own η is read with that
ETA = inspect.signature(KFGN).parameters["eta"].default


def criteria(rows: list[dict], eta: float = ETA, settle_after: int = 500, spikes_after: int = 700) -> dict:
    """Issue 25's damping criteria of one run's log rows (see the module docstring)."""
    eps = [r["epsilon"] for r in rows]
    late = [(a, b) for a, b, r in zip(eps, eps[1:], rows[1:], strict=False) if r["step"] > settle_after]
    up, down = sum(b > a for a, b in late), sum(b < a for a, b in late)
    late_eps = [r["epsilon"] for r in rows if r["step"] > settle_after]
    raises = [(rows[i]["lambda"] + eta) / (rows[i - 1]["lambda"] + eta) for i in range(1, len(rows))
              if math.isfinite(rows[i]["rho"]) and rows[i]["rho"] < 0.25]
    moves = up + down
    both_ways = moves > 0 and min(up, down) >= 0.1 * moves
    settled = bool(late_eps) and min(late_eps) >= 2 * eta * (1 - 1e-6)  # float32 logs: 2η to rounding
    onsets = spike_onsets([r["batch_loss"] for r in rows], spikes_after)
    before = [rows[t - 1].get("batch_loss_before") for t in onsets]  # the batch at the parameters before the last step
    caused = sum(isinstance(b, float) and math.isfinite(b) and rows[t - 1]["batch_loss"] > 2 * b
                 for t, b in zip(onsets, before, strict=True))
    return {"updates": int(rows[-1]["step"]) if rows else 0, "epsilon_up": up, "epsilon_down": down,
            "epsilon_min_late": min(late_eps) if late_eps else None, "epsilon_adapts": both_ways or settled,
            "lambda_min": min(r["lambda"] for r in rows), "epsilon_min": min(eps),
            "verdicts_below_quarter": len(raises), "smallest_raise": min(raises) if raises else None,
            "spike_onsets_after_700": len(onsets), "onsets_the_last_step_caused": caused,
            "onsets_on_a_rollback": sum(bool(rows[t - 1].get("rolled_back") or 0) for t in onsets),
            "onsets_undone_by_the_next_step": sum(bool(rows[t].get("rolled_back") or 0) for t in onsets if t < len(rows)),
            "bounded_steps": sum(bool(r["bounded"]) for r in rows) if rows and rows[0].get("bounded") is not None
            else None}


def collect(results: Path) -> dict:
    """:func:`criteria` of every ``…/<method>/seed<k>`` run under ``results`` (the figures and their variants)."""
    out = {}
    for log in sorted(Path(results).glob("**/seed*/log.csv*")):
        run = log.parent
        if log_file(run) == log:
            summary = run / "summary.json"
            options = json.loads(summary.read_text()).get("options", {}) if summary.exists() else {}
            out[str(run.relative_to(results))] = criteria(read_log(run / "log.csv"), options.get("eta", ETA))
    return out


def table(res: dict) -> str:
    head = ("| run | updates | ε up / down after 500 | min ε after 500 | min λ, min ε "
            "| verdicts ρ < ¼ (smallest raise of λ + η) | spike onsets after 700 (the last step doubled the batch's loss; "
            "on a rollback; the onset's own step undone by the next) | steps the loss bound shortened |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in res.items():
        raise_ = "–" if c["smallest_raise"] is None else f"{c['smallest_raise']:.2f} ×"
        lines.append(f"| {name} | {c['updates']} | {c['epsilon_up']} / {c['epsilon_down']} | {c['epsilon_min_late']:.2g} "
                     f"| {c['lambda_min']:.2g}, {c['epsilon_min']:.2g} | {c['verdicts_below_quarter']} ({raise_}) "
                     f"| {c['spike_onsets_after_700']} ({c['onsets_the_last_step_caused']}; "
                     f"{c['onsets_on_a_rollback']}; {c['onsets_undone_by_the_next_step']}) "
                     f"| {'–' if c.get('bounded_steps') is None else c['bounded_steps']} |")
    return "\n".join(lines) + "\n"


def main(results: Path) -> dict:
    res = collect(results)
    (results / "damping_criteria.json").write_text(json.dumps(res, indent=2))
    (results / "damping_criteria.md").write_text(table(res))
    print(table(res), end="")
    return res


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results")
    main(Path(p.parse_args().results))
