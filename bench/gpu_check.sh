#!/usr/bin/env bash
# The agent on a GPU, one command: bench/gpu_check.py's table (overhead, host syncs, memory;
# ResNet-50, ViT-B/16, a 1.1B bf16 transformer, FSDP2 where there are two GPUs), then the CUDA
# test suite. About 5 minutes on one H100; each part is cut off past its share of 10 minutes.
#
#     bash bench/gpu_check.sh [gpu_check.py options]     # e.g. --steps 60
#
# Exits non-zero when either part fails.
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
status=0
timeout 420 "$PYTHON" bench/gpu_check.py "$@" || status=$?
timeout 170 "$PYTHON" -m pytest -q -p no:cacheprovider tests/gpu || status=$?
exit $status
