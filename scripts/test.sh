#!/usr/bin/env bash
# Set up everything the tests need and run them. Extra arguments go to pytest.
# Tests that need Debian's docker-registry skip (saying so) when it is not installed;
# .ci/run installs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh ml dev sglang
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HOME="${HF_HOME:-$PWD/.cache/huggingface}"
export PYTHONDONTWRITEBYTECODE=1
echo "==> ruff"
.venv/bin/ruff check reconciler runtime tests
echo "==> pytest"
exec .venv/bin/python -m pytest "$@"
