#!/usr/bin/env bash
# The demo: install what is missing, build, make a LLaMA-shaped checkpoint (random weights, bf16),
# chunk it, and stream a forward pass and a short generation through a cache smaller than the model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh >/dev/null
surf=build/runtime/cli/surf
out=demo-out
rm -rf "$out" && mkdir -p "$out"
echo "== synth: a LLaMA-shaped checkpoint (8 layers, hidden 512, bf16)"
$surf synth --arch llama --preset small --dtype bf16 --out "$out/hf"
echo "== chunk: one msgpack chunk per component"
$surf chunk "$out/hf" --out "$out/store"
$surf inspect "$out/store" | tail -n 4
echo "== run: forward pass, 2 layers cached, 1 prefetched"
$surf run "$out/store" --inputs "$out/hf/inputs.safetensors" --output "$out/out.safetensors" \
  --cache-size 2 --prefetch 1
echo "== generate: 8 greedy tokens, every step streams the layers again"
$surf generate "$out/store" --inputs "$out/hf/inputs.safetensors" --max-new-tokens 8 \
  --output "$out/gen.safetensors" --cache-size 2 --prefetch 1
