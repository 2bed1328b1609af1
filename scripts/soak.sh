#!/bin/sh
# Soak (issue 13), not part of CI: `surf serve` on 127.0.0.1 against 32 clients through a
# fault-injecting proxy (drops, stalls, truncation, resets), plus slow and idle clients, for
# MINUTES (default 10). Prints requests served, errors by kind, wrong outputs (must be 0) and the
# server's RSS over time; exits non-zero on a wrong output or a dead server.
#
#   scripts/soak.sh [MINUTES] [BUILD_DIR]      (extra flags: SOAK_ARGS="--clients 32 --idle 16 ...")
set -eu
minutes="${1:-10}"
build="${2:-build}"
root="$(cd "$(dirname "$0")/.." && pwd)"
ninja -C "$build" tests/bench/soak runtime/cli/surf plugins/llama/libsurf-llama.so >/dev/null
export SURF_TEST_FIXTURES="$root/tests/fixtures"
export SURF_TEST_PLUGIN_DIR="$(cd "$build" && pwd)/plugins"
export SURF_EXE="$(cd "$build" && pwd)/runtime/cli/surf"
export SURF_PLUGIN_PATH=""
# shellcheck disable=SC2086
exec "$build/tests/bench/soak" --minutes "$minutes" ${SOAK_ARGS:-}
