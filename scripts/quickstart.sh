#!/usr/bin/env bash
# Command 1 of the README: set up, then run kaito-gitops on the bundled example repository.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo
echo "==> kaito-gitops validate example-repo"
.venv/bin/kaito-gitops validate example-repo || true
echo
echo "==> kaito-gitops plan example-repo"
.venv/bin/kaito-gitops plan example-repo
