#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang 14, ASan + UBSan) in build-fuzz/ and runs each one for
# SECONDS (default 30), starting from the committed reproducers and seeds made from the fixtures
# and the project's own encoders. Prints executions and findings per harness and writes
# build-fuzz/fuzz-results.junit.xml (one test case per harness: failed if it found anything).
#   bash scripts/fuzz.sh 600                # ten minutes each, as before a release
#   FUZZ_JOBS=3 bash scripts/fuzz.sh 600    # three harnesses at a time
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
targets=$(sed -n "s/^fuzz_targets = \[\(.*\)\]/\1/p" tests/fuzz/meson.build | tr -d "'" | tr ',' ' ')
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang-14 CXX=clang++-14 meson setup build-fuzz --buildtype=release -Dfuzz=true -Dtests=false \
    -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
# Everything (tests are off in this build): the harnesses, the CLI and the plugins it chunks seeds with.
ninja -C build-fuzz || exit 1

corpus=build-fuzz/corpus
rm -rf "$corpus" build-fuzz/findings && mkdir -p "$corpus" build-fuzz/findings
for t in $targets; do
  mkdir -p "$corpus/$t"
  [ -d "tests/fuzz/regressions/$t" ] && cp tests/fuzz/regressions/$t/* "$corpus/$t/" 2>/dev/null
done
build-fuzz/tests/fuzz/make_seeds "$corpus" || exit 1
store=$(mktemp -d)
trap 'rm -rf "$store"' EXIT
SURF_PLUGIN_PATH=build-fuzz/plugins ASAN_OPTIONS=detect_leaks=0 \
  build-fuzz/runtime/cli/surf chunk tests/fixtures/t5-tiny-random --out "$store/s" >/dev/null || exit 1
{
  cp "$store"/s/chunks/*.msgpack "$corpus/chunk/" 2>/dev/null
  cp "$store/s/manifest.json" "$corpus/manifest/"
}
for d in tests/fixtures/*/; do
  n=$(basename "$d")
  cp "$d/config.json" "$corpus/config/$n.json"
  for f in "$d"/*.safetensors; do  # the JSON header: 8-byte length, then the text
    len=$(od -An -tu8 -N8 "$f" | tr -d ' ')
    tail -c +9 "$f" | head -c "$len" > "$corpus/safetensors_header/$n-$(basename "$f").json"
  done
done
python3 - "$corpus/torch_pickle" tests/data/torch/*.bin tests/data/torch/*/*.bin <<'PY'
import os, sys, zipfile
for path in sys.argv[2:]:
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith("data.pkl"):
                    out = os.path.join(sys.argv[1], path.replace("/", "_") + ".pkl")
                    open(out, "wb").write(z.read(name))
    except zipfile.BadZipFile:
        pass
PY
# S3 answers as S3 documents them, and each tokenizer.json the tests carry cut to its first 300
# vocabulary entries (and the merges among them): every family's normalizer, pre-tokenizer and
# decoder settings, small enough for thousands of executions a second.
python3 - "$corpus" tests/data/tokenizers/*.tokenizer.json.gz <<'PY'
import gzip, json, os, sys
corpus = sys.argv[1]
xml = {
    "list": '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><KeyCount>2</KeyCount>'
            '<IsTruncated>true</IsTruncated><NextContinuationToken>1ueGcx/w=</NextContinuationToken>'
            '<Contents><Key>m/manifest.json</Key><Size>12</Size></Contents>'
            '<Contents><Key>m/chunks/a&amp;b&#x2F;&#233;.msgpack</Key></Contents></ListBucketResult>',
    "error": '<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
             '<Message>The resource you requested does not exist</Message><RequestId>1</RequestId></Error>',
    "upload": '<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>'
              '<UploadId>VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId></InitiateMultipartUploadResult>',
}
for name, text in xml.items():
    open(os.path.join(corpus, "s3_xml", name + ".xml"), "w").write(text)
for path in sys.argv[2:]:
    t = json.load(gzip.open(path))
    m = t.get("model") or {}
    vocab = m.get("vocab")
    if isinstance(vocab, dict):
        m["vocab"] = {k: v for k, v in vocab.items() if v < 300}
        merges = m.get("merges") or []
        keep = []
        for mg in merges:
            a, b = mg.split(" ", 1) if isinstance(mg, str) else mg
            if a in m["vocab"] and b in m["vocab"] and a + b in m["vocab"]:
                keep.append(mg)
        if "merges" in m:
            m["merges"] = keep
    elif isinstance(vocab, list):
        m["vocab"] = vocab[:300]
        if isinstance(m.get("unk_id"), int) and m["unk_id"] >= 300:
            m["unk_id"] = 0
    t["added_tokens"] = [a for a in t.get("added_tokens") or [] if a.get("id", 0) < 300]
    name = os.path.basename(path).replace(".tokenizer.json.gz", ".json")
    json.dump(t, open(os.path.join(corpus, "tokenizer_json", name), "w"))
PY

# FUZZ_JOBS harnesses run at once (default 1; each is one process on one core).
jobs=${FUZZ_JOBS:-1}
run_one() {
  # UBSan reports are findings too: without halt_on_error they are printed and the run goes on.
  ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build-fuzz/tests/fuzz/fuzz_$1 "$corpus/$1" -max_total_time="$seconds" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix=build-fuzz/findings/$1- \
    >"build-fuzz/findings/$1.log" 2>&1
  echo $? >"build-fuzz/findings/$1.rc"
}
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
  run_one "$t" &
done
wait

results=build-fuzz/fuzz-results.junit.xml
cases=""
failed=0
for t in $targets; do
  log=build-fuzz/findings/$t.log
  rc=$(cat "build-fuzz/findings/$t.rc")
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  found=$(ls build-fuzz/findings/$t-* 2>/dev/null | wc -l)
  echo "fuzz_$t: ${runs:-0} executions in ${seconds} s, $found finding(s) (exit $rc)"
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed=$((failed + 1))
    cases+="<testcase classname=\"fuzz\" name=\"$t\"><failure message=\"see $log\"/></testcase>"
  else
    cases+="<testcase classname=\"fuzz\" name=\"$t\"/>"
  fi
done
echo "<testsuites><testsuite name=\"fuzz\">$cases</testsuite></testsuites>" > "$results"
[ "$failed" -eq 0 ]
