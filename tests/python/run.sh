#!/usr/bin/env bash
# `any2any serve` from outside: the official openai Python client (test_openai_client.py) and
# the playground page in headless Chromium (test_playground.py, needs Debian's chromium).
# Makes its own venv from requirements.txt (pinned), builds the binary, serves the tiny fixtures
# on a free loopback port, runs the tests, stops the server.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${OPENAI_VENV:-target/openai-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q -r tests/python/requirements.txt
cargo build --release --bin any2any
work="$(mktemp -d)"
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
# Show-o's tiny fixture has no tokenizer: a copy with a word-level one (ids < 100)
cp -r tests/fixtures/showo-tiny "$work/showo"
"$VENV/bin/python" - "$work/showo/tokenizer.json" <<'PY'
import json, sys
words = ["[UNK]", "a", "cat", "dog", "red", "blue", "fox", "in", "snow", "paint", "the", "sky"]
json.dump({"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
           "model": {"type": "WordLevel", "vocab": {w: i + 1 for i, w in enumerate(words)}, "unk_token": "[UNK]"}},
          open(sys.argv[1], "w"))
PY
target/release/any2any serve --model tests/fixtures/janus-tiny --model "$work/showo" --port 0 \
  2> "$work/serve.log" &
pid=$!
for _ in $(seq 100); do
  grep -q "serving" "$work/serve.log" 2>/dev/null && break
  sleep 0.1
done
addr="$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -1)"
[ -n "$addr" ] || { cat "$work/serve.log"; exit 1; }
ANY2ANY_BASE_URL="$addr" ANY2ANY_JANUS=tests/fixtures/janus-tiny ANY2ANY_SHOWO="$work/showo" \
  ANY2ANY_IMAGE=tests/fixtures/janus-tiny/image.png ANY2ANY_EDIT_IMAGE=tests/fixtures/showo-tiny/edit_image.png \
  "$VENV/bin/python" tests/python/test_openai_client.py
ANY2ANY_BASE_URL="$addr" ANY2ANY_SHOWO="$work/showo" ANY2ANY_EDIT_IMAGE=tests/fixtures/showo-tiny/edit_image.png \
  ANY2ANY_SHOT="${ANY2ANY_SHOT:-target/playground.png}" "$VENV/bin/python" tests/python/test_playground.py
