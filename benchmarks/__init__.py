"""Performance tooling: step times, profiles, scaling, compile times, the GPU benchmark (docs/performance.md)."""

import json
from pathlib import Path


def write_report(report: dict, path) -> None:
    """Write a benchmark's JSON report to ``path`` (its folder created), when a path is given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2))
