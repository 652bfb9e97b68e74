#!/usr/bin/env bash
# Command 1 of the README: set up, then run the kaito-gitops daemon with the local target on the
# bundled example repository, and print the endpoint with ready-to-run curl commands.
#
# The daemon watches a scratch git repository made from example-repo/local (so you can edit,
# commit and watch it react) and serves SmolLM2-135M-Instruct on 127.0.0.1 with the OpenAI API
# and Kaito's /chat. Ctrl-C stops the daemon and everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh ml

HERE=.kaito-gitops/quickstart
REPO="$HERE/repo"
STATE="$HERE/local"
if [ ! -d "$REPO/.git" ]; then
  mkdir -p "$REPO/workspaces"
  cp example-repo/local/*.yaml "$REPO/workspaces/"
  git -C "$REPO" init -q -b main
  git -C "$REPO" add -A
  GIT_AUTHOR_NAME=quickstart GIT_AUTHOR_EMAIL=quickstart@localhost \
  GIT_COMMITTER_NAME=quickstart GIT_COMMITTER_EMAIL=quickstart@localhost \
    git -C "$REPO" commit -q -m "SmolLM2 from example-repo/local"
fi

echo "==> preparing SmolLM2-135M-Instruct (the first time converts the packaged GGUF, ~30 s)"
.venv/bin/python -c "from runtime.weights import resolve_model; print(resolve_model('smollm2-135m-instruct'))"

rm -f "$STATE"/*/*/endpoint.json
PORT="${KAITO_GITOPS_PORT:-8080}"
echo "==> kaito-gitops run --target local (health and metrics on 127.0.0.1:$PORT)"
.venv/bin/kaito-gitops run --repo "$REPO" --path workspaces --target local --local-state-dir "$STATE" \
  --listen "127.0.0.1:$PORT" --interval 30s --log-format text &
DAEMON=$!
trap 'kill -TERM $DAEMON 2>/dev/null || true; wait $DAEMON 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

until [ -f "$STATE/default/smollm2/endpoint.json" ]; do
  kill -0 "$DAEMON" 2>/dev/null || { echo "the daemon stopped; see the log above" >&2; exit 1; }
  sleep 1
done
ENDPOINT=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' \
  "$STATE/default/smollm2/endpoint.json")
cat <<MSG

SmolLM2 is serving at $ENDPOINT

  curl -s $ENDPOINT/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}]}'

  curl -s $ENDPOINT/chat -H 'Content-Type: application/json' -d '{"prompt": "Tell me a joke"}'

Edit or add workspaces in $REPO/workspaces and commit: the daemon reacts to the commit at once.
Status (written to the kaito-status branch): .venv/bin/kaito-gitops status --repo $REPO
Server log: $STATE/default/smollm2/server.log      Ctrl-C stops everything.
MSG
wait "$DAEMON"
