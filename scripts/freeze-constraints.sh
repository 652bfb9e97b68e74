#!/usr/bin/env bash
# Regenerate requirements/constraints.txt from the current .venv (after a tested upgrade).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Versions tested together (pip freeze of the CI venv). Installs use them as constraints, so a"
  echo "# fresh machine gets what CI ran; regenerate with scripts/freeze-constraints.sh."
  .venv/bin/python -m pip freeze --disable-pip-version-check 2>/dev/null \
    | grep -v -e "^-e" -e "^kaito-gitops" -e "^sglang==" | sed 's/^torch==\([0-9.]*\)+cpu/torch==\1/'
} > requirements/constraints.txt
