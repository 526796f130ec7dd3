#!/usr/bin/env bash
# The GPU check from the repository root, with no install: scripts/gpu_check.sh OUT_DIR [--dry-run]
# (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m minilazy.gpu_check "$@"
