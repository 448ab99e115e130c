#!/usr/bin/env bash
# The GPU benchmarks as one prepared command (issue 13): training windows/s of the naive tutorial
# pipeline against our GPU path (resident data, fused AdamW, bf16, optionally CUDA graphs), one
# table. Needs torch, numpy and pydantic only.
#
#   bash benchmarks/gpu.sh                      # CUDA: batches 1024..32768, 5 interleaved repeats
#   bash benchmarks/gpu.sh --compile            # adds the torch.compile(reduce-overhead) variant
#   bash benchmarks/gpu.sh --device cpu --steps 2 --repeats 1   # smoke test (in the test suite)
#
# On a bare GPU box without pydantic: put its wheels in .whl/ (pydantic, pydantic-core,
# annotated-types, typing-extensions, typing-inspection) and this script installs them into a
# temporary folder first. Record what it prints in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
if ! "$PY" -c 'import pydantic' 2>/dev/null; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        site=$(mktemp -d)
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
        export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu.sh: pydantic is missing: pip install pydantic, or put its wheels in .whl/" >&2
        exit 2
    fi
fi
if [ "$#" -eq 0 ] && command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
exec "$PY" benchmarks/gpu_bench.py "$@"
