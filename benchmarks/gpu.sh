#!/usr/bin/env bash
# The GPU benchmark on a bare GPU machine (issue 28): install the carried wheels (PyTensor and what it needs that
# the machine lacks, and kfac-jax's stack), then run benchmarks/gpu.py; the JSON goes to $OUT (or ./gpu.json).
# The wheels are downloaded here for the machine's Python 3.12 (docs/performance.md, "GPU").
#   bash benchmarks/gpu.sh            # on the GPU machine, from the repository root, with .whl/ carried
#   bash benchmarks/gpu.sh --cpu      # end to end on this CPU, tiny (the installed venv; no wheels needed)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
if [[ "${1:-}" != "--cpu" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
    export PYTENSOR_FLAGS="base_compiledir=/tmp/pytensor"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi
export PYTHONUNBUFFERED=1
python3 -m benchmarks.gpu --json "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
