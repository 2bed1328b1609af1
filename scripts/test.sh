#!/usr/bin/env bash
# Installs what is missing, builds, runs the whole suite and prints "N passed, N failed", counting
# every leg:
#   release    build/        every suite (unit, integration, s3, python)
#   asan       build-asan/   ASan + UBSan (gcc): unit, integration and s3 suites
#   tsan       build-tsan/   TSan (gcc): the threaded parts (cache + prefetcher, client, server)
#   fuzz       build-fuzz/   libFuzzer + ASan + UBSan (clang): each harness for SURF_FUZZ_SECONDS (30)
# SURF_TEST_LEGS="release asan" runs a subset. Each leg's JUnit log lands in build-*/meson-logs.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || exit 1
legs=${SURF_TEST_LEGS:-release asan tsan fuzz}
status=0
logs=()
extra_failures=0

configure() {  # dir, then meson options
  local dir=$1
  shift
  [ -f "$dir/build.ninja" ] || meson setup "$dir" "$@" >/dev/null || return 1
}

for leg in $legs; do
  echo "=== leg: $leg"
  case $leg in
    release)
      bash scripts/build.sh || { extra_failures=$((extra_failures + 1)); status=1; continue; }
      meson test -C build --num-processes 2 --print-errorlogs || status=1
      # meson counts the python suite as one test; pytest writes each of its cases here.
      logs+=(build/meson-logs/testlog.junit.xml build/meson-logs/pytest.junit.xml)
      ;;
    asan)
      # Release optimisation keeps the suite fast; the sanitizers still see every access.
      configure build-asan --buildtype=release -Db_sanitize=address,undefined -Db_lundef=false &&
        ninja -C build-asan || { extra_failures=$((extra_failures + 1)); status=1; continue; }
      ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C build-asan --num-processes 2 --print-errorlogs --suite unit --suite integration --suite s3 \
        --timeout-multiplier 3 || status=1
      logs+=(build-asan/meson-logs/testlog.junit.xml)
      ;;
    tsan)
      # Only what the threads suite runs: its two tests, the CLI they start and the plugins.
      configure build-tsan --buildtype=release -Db_sanitize=thread -Db_lundef=false &&
        ninja -C build-tsan tests/cache_test tests/weight_server_test runtime/cli/surf \
          $(ninja -C build-tsan -t targets all | sed -n 's|^\(plugins/[^:]*\.so\):.*|\1|p') ||
        { extra_failures=$((extra_failures + 1)); status=1; continue; }
      TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/tests/tsan.supp" \
        meson test -C build-tsan --no-rebuild --num-processes 2 --print-errorlogs --suite threads \
        --timeout-multiplier 4 || status=1
      logs+=(build-tsan/meson-logs/testlog.junit.xml)
      ;;
    fuzz)
      bash scripts/fuzz.sh "${SURF_FUZZ_SECONDS:-30}" || status=1
      logs+=(build-fuzz/fuzz-results.junit.xml)
      ;;
    *)
      echo "unknown leg '$leg'"
      exit 2
      ;;
  esac
done

python3 - "$extra_failures" "${logs[@]}" <<'PY'
import os, sys, xml.etree.ElementTree as ET
passed, failed, skipped = 0, int(sys.argv[1]), 0
for path in sys.argv[2:]:
    if not os.path.exists(path):
        print(f"missing test log {path}")
        failed += 1
        continue
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
PY
exit $status
