// The reference side of tokenizer_bench: @lenml/tokenizers (a JavaScript port of transformers.js's
// tokenizers) encodes the same paragraphs; prints one JSON line. Needs NODE_PATH to an npm install
// of @lenml/tokenizers (see tests/data/tokenizers/make_expected.mjs).
//   node tokenizer_bench_reference.mjs TOKENIZER.json.gz TEXT_FILE RUNS
import fs from "node:fs";
import zlib from "node:zlib";
import path from "node:path";

const [tokPath, textPath, runsArg] = process.argv.slice(2);
const nm = process.env.NODE_PATH || "/tmp/tokref/node_modules";
const { TokenizerLoader } = await import(path.join(nm, "@lenml/tokenizers/dist/main.mjs"));
const json = JSON.parse(zlib.gunzipSync(fs.readFileSync(tokPath)).toString("utf8"));
const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: { tokenizer_class: "PreTrainedTokenizerFast" } });
const text = fs.readFileSync(textPath, "utf8");
const paragraphs = text.split("\n\n");
const bytes = Buffer.byteLength(text, "utf8");
const runs = Number(runsArg || 3);
const times = [];
let ids = 0;
let checksum = 0;
for (let r = 0; r <= runs; ++r) {
  const t0 = process.hrtime.bigint();
  let n = 0, sum = 0;
  for (const p of paragraphs) {
    const e = tok.encode(p, { add_special_tokens: false });
    n += e.length;
    for (const id of e) sum = (sum * 31 + id) % 1000000007;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r > 0) times.push(s);  // the first run warms caches and the JIT
  ids = n;
  checksum = sum;
}
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
console.log(JSON.stringify({ seconds: median, mbps: bytes / median / 1e6, ids, checksum }));
