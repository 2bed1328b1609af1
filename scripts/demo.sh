#!/usr/bin/env bash
# The demo: install what is missing, build, make a LLaMA-shaped checkpoint (random weights, bf16),
# chunk it, start a weight server, and stream a forward pass and a short generation from it
# through a cache smaller than the model, printing outputs and cache statistics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null
surf=build/runtime/cli/surf
out=demo-out
rm -rf "$out" && mkdir -p "$out"
echo "== synth: a LLaMA-shaped checkpoint (8 layers, hidden 512, bf16, random weights)"
$surf synth --arch llama --preset small --dtype bf16 --out "$out/hf"
echo "== chunk: one msgpack chunk per component"
$surf chunk "$out/hf" --out "$out/store"
$surf inspect "$out/store" | tail -n 4
echo "== serve: a weight server on 127.0.0.1 (any free port)"
$surf serve --store llama-small="$out/store" --port 0 > "$out/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q "listening on" "$out/serve.log" && break; sleep 0.1; done
cat "$out/serve.log"
port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$out/serve.log")
source="ws://127.0.0.1:$port/llama-small"
echo "== run: forward pass streamed from $source, 2 layers cached, 1 prefetched"
$surf run "$source" --inputs "$out/hf/inputs.safetensors" --output "$out/out.safetensors" \
  --cache-size 2 --prefetch 1
echo "== generate: 8 greedy tokens; every step streams the layers again"
$surf generate "$source" --inputs "$out/hf/inputs.safetensors" --max-new-tokens 8 \
  --output "$out/gen.safetensors" --cache-size 2 --prefetch 1
echo "== the server's view (GET /metrics)"
curl -s "http://127.0.0.1:$port/metrics" | grep -E "^surf_(requests_total\{op=\"get_chunk\"\}|bytes_served_total|cache_(hits|misses)_total)"
