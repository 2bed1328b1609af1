// surf: chunk, serve, run, generate, inspect, check and list plugins.
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "args.h"
#include "inputs.h"
#include "progress.h"
#include "surf/log.h"
#include "text_commands.h"
#include "surf/runtime.h"
#include "surf/version.h"
#include "synth.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"
#include "surf/storage/s3.h"
#include "surf/storage/safetensors.h"

using namespace surf;
using cli::Args;
using cli::Flag;

namespace {

const char* kUsage =
    "usage: surf COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  verify    STORE | ws://...        re-check every chunk's size and checksum (via the server for ws[s]://)\n"
    "  version                           version, plugin ABI and build (--version: the version)\n"
    "  chunk     HF_DIR --out STORE          split a HuggingFace checkpoint into a chunk store\n"
    "  run       SOURCE (--inputs F | --text T) --output F   one forward pass, weights streamed\n"
    "  generate  SOURCE (--prompt T | --inputs F --output F) --max-new-tokens N   text or ids\n"
    "  tokenize  SOURCE --text T [--json]    token ids of a text (the model's tokenizer)\n"
    "  detokenize SOURCE --ids 1,2,3         text of token ids\n"
    "  inspect   SOURCE                      model type, components, sizes\n"
    "  plugins                               architecture plugins found and why others were skipped\n"
    "  check     FIXTURE_DIR...              run golden fixtures through their plugins\n"
    "  serve     --store STORE [--port N]    serve chunk stores over WebSocket\n"
    "  synth     --arch llama --preset P --out DIR   random-weight checkpoint of a real shape\n"
    "\n"
    "STORE is a chunk store directory or s3://bucket/prefix (a chunk store in an S3-compatible bucket;\n"
    "credentials, region and endpoint as the AWS SDKs find them). SOURCE is a STORE, a HuggingFace\n"
    "checkpoint directory, ws://host:port[/model] or wss://... (a weight server), or several weight\n"
    "servers of one model, comma-separated (a fleet).\n"
    "Run `surf COMMAND --help` for the options of a command.\n";

const std::vector<Flag> kPluginFlags = {
    {"plugin-dir", true, "search this plugin directory first (repeatable)"},
};

// The streaming knobs of run, generate and check.
const std::vector<Flag> kStreamFlags = {
    {"cache-size", true,
     "streamed components kept in the cache, >= 1 (default " + std::to_string(kDefaultCacheSize) + ")"},
    {"prefetch", true, "components fetched ahead, >= 0 (default " + std::to_string(kDefaultPrefetch) + ")"},
};

const std::vector<Flag> kCacheFlags = {
    {"cache-mb", true, "also bound the cache in megabytes"},
    {"warmup", true, "comma-separated component ids to load at open, or 'all'"},
    {"spare-buffers", true, "freed buffers kept for reuse (default 2; fewer saves memory, costs speed)"},
    {"stats-json", true, "write cache statistics as JSON to this file"},
};

// How run, generate, inspect and check reach a weight server or a bucket.
const std::vector<Flag> kSourceFlags = {
    {"token-file", true, "bearer token for ws[s]:// sources, read from this file (or set SURF_TOKEN)"},
    {"token", true, "bearer token on the command line (visible in ps: prefer --token-file or SURF_TOKEN)"},
    {"ca-file", true, "PEM CA bundle trusted for wss:// and https:// instead of the system store (or SURF_CA_BUNDLE)"},
    {"disk-cache", true, "keep chunks fetched from ws[s]:// and s3:// sources in this directory (shared, verified)"},
    {"disk-cache-mb", true, "bound the disk cache in megabytes (default 10000)"},
    {"connect-timeout", true,
     "ws[s]:// sources: seconds to reach the server - TCP connect, TLS, WebSocket upgrade, hello - over all "
     "attempts (default " +
         std::to_string(kDefaultConnectTimeoutMs / 1000) + ")"},
};

// --connect-timeout SECONDS, as milliseconds (at most a day).
int connect_timeout_ms(const Args& a) { return a.get_seconds_ms("connect-timeout", kDefaultConnectTimeoutMs, 86400); }

std::vector<Flag> join(std::initializer_list<std::vector<Flag>> parts) {
  std::vector<Flag> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  out.push_back({"help", false, "show this help"});
  return out;
}

bool wants_help(const std::vector<std::string>& argv) {
  for (const auto& a : argv) {
    if (a == "--help" || a == "-h") return true;
  }
  return false;
}

void print_help(const std::string& synopsis, const std::string& text, const std::vector<Flag>& flags) {
  std::cout << "usage: surf " << synopsis << "\n\n" << text << "\n\noptions:\n" << cli::flags_help(flags);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

// The first line of a secret file, trailing whitespace removed; an empty one is an error.
std::string read_secret_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) fail(ErrorCode::not_found, "cannot read " + what + " file '" + path + "'");
  std::string s;
  std::getline(in, s);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  if (s.empty()) fail(ErrorCode::invalid_argument, what + " file '" + path + "' is empty");
  return s;
}

// --token-file, then --token, then SURF_TOKEN.
std::string client_token(const Args& a) {
  if (a.has("token-file")) return read_secret_file(a.get("token-file"), "token");
  if (a.has("token")) return a.get("token");
  const char* env = std::getenv("SURF_TOKEN");
  return env ? env : "";
}

void require_positional(const Args& a, size_t n, const std::string& what) {
  if (a.positional.size() != n) throw std::invalid_argument("expected " + what + " (see --help)");
}

std::string require(const Args& a, const std::string& flag) {
  if (!a.has(flag)) throw std::invalid_argument("missing required option --" + flag);
  return a.get(flag);
}

// --cache-size and --prefetch under the runtime's rule, checked before any work starts.
void read_stream_flags(const Args& a, int& cache_size, int& prefetch) {
  const long long cache = a.get_int("cache-size", kDefaultCacheSize);
  const long long ahead = a.get_int("prefetch", kDefaultPrefetch);
  validate_cache_options(cache, ahead);
  cache_size = static_cast<int>(cache);
  prefetch = static_cast<int>(ahead);
}

// --disk-cache DIR --disk-cache-mb N (run, generate, check).
void read_disk_flags(const Args& a, std::string& dir, uint64_t& bytes) {
  dir = a.get("disk-cache");
  const long long mb = a.get_int("disk-cache-mb", 10000);
  if (mb < 1) throw std::invalid_argument("--disk-cache-mb must be at least 1");
  if (a.has("disk-cache-mb") && dir.empty()) throw std::invalid_argument("--disk-cache-mb needs --disk-cache DIR");
  bytes = static_cast<uint64_t>(mb) * 1000000ull;
}

OpenOptions open_options(const Args& a) {
  OpenOptions o;
  o.plugin_dirs = a.all("plugin-dir");
  read_stream_flags(a, o.cache_size, o.prefetch);
  const long long mb = a.get_int("cache-mb", 0);
  if (mb < 0) throw std::invalid_argument("--cache-mb must not be negative");
  o.cache_bytes = static_cast<uint64_t>(mb) * 1000000ull;
  o.warmup = split_commas(a.get("warmup"));
  o.spare_buffers = static_cast<int>(a.get_int_in("spare-buffers", 2, 0, 1024));
  o.token = client_token(a);
  o.ca_file = a.get("ca-file");
  o.connect_timeout_ms = connect_timeout_ms(a);
  read_disk_flags(a, o.disk_cache_dir, o.disk_cache_bytes);
  return o;
}

void print_outputs(const TensorMap& out) {
  for (const auto& [name, t] : out) {
    std::cout << name << " " << dtype_name(t.dtype()) << shape_string(t.shape());
    if (t.dtype() == DType::I64 && t.numel() <= 64) {
      std::cout << " =";
      for (int64_t i = 0; i < t.numel(); ++i) std::cout << " " << t.i64()[i];
    } else if (t.dtype() == DType::F32 && t.numel() > 0) {
      std::cout << " first:";
      for (int64_t i = 0; i < std::min<int64_t>(4, t.numel()); ++i) std::cout << " " << t.f32()[i];
    }
    std::cout << "\n";
  }
}

// Opens SOURCE, times `work` on the session, writes and prints its outputs and the cache statistics.
// An output path whose directory does not exist fails after the whole run; check it first.
void check_output_dir(const std::string& path, const std::string& flag) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::is_directory(dir, ec)) {
    fail(ErrorCode::not_found, "--" + flag + " '" + path + "': no directory '" + dir.string() + "'");
  }
}

// While it lives, a progress line of what the session has fetched (components and bytes, rate),
// polled from its cache statistics every 100 ms; only when stderr is a terminal.
class FetchProgress {
 public:
  explicit FetchProgress(const Session& session, bool enabled = true) : session_(session) {
    if (!enabled || !line_.active()) return;
    thread_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      while (!done_) {
        draw(false);
        wake_.wait_for(lock, std::chrono::milliseconds(100));
      }
    });
  }
  ~FetchProgress() {
    if (!thread_.joinable()) return;
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    wake_.notify_all();
    thread_.join();
    draw(true);
    line_.finish();
  }
  FetchProgress(const FetchProgress&) = delete;
  FetchProgress& operator=(const FetchProgress&) = delete;

 private:
  void draw(bool force) {
    const CacheStats st = session_.cache_stats();
    const uint64_t bytes = st.bytes_fetched + st.disk_bytes;
    const double secs = line_.seconds();
    line_.update("fetching: " + std::to_string(st.fetches) + " components fetched, " + cli::human_bytes(bytes) + ", " +
                     cli::human_bytes(static_cast<uint64_t>(secs > 0 ? static_cast<double>(bytes) / secs : 0)) + "/s",
                 force);
  }
  const Session& session_;
  cli::ProgressLine line_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool done_ = false;
  std::thread thread_;
};

void run_and_report(const Args& a, const std::string& out_path, const std::function<TensorMap(Session&)>& work) {
  check_output_dir(out_path, "output");
  if (a.has("stats-json")) check_output_dir(a.get("stats-json"), "stats-json");
  auto session = Session::open(a.positional[0], open_options(a));
  const auto t0 = std::chrono::steady_clock::now();
  TensorMap out;
  {
    FetchProgress progress(*session);
    out = work(*session);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  write_safetensors(out_path, out);
  print_outputs(out);
  const CacheStats st = session->cache_stats();
  std::cerr << "time: " << seconds * 1e3 << " ms\n" << st.to_text() << "\n";
  if (a.has("stats-json")) {
    std::ofstream stats(a.get("stats-json"));
    if (!stats) fail(ErrorCode::io, "cannot write '" + a.get("stats-json") + "'");
    stats << st.to_json() << "\n";
  }
}

// Id tensors may be I32 or I64.
TensorMap read_inputs(const std::string& path) { return cli::read_input_tensors(path); }

volatile sig_atomic_t g_interrupt = 0;

void on_interrupt(int sig) { g_interrupt = sig; }

// SIGINT and SIGTERM set g_interrupt while it lives (SA_RESTART: I/O in progress completes);
// the previous handlers come back after.
class InterruptFlag {
 public:
  InterruptFlag() {
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~InterruptFlag() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  InterruptFlag(const InterruptFlag&) = delete;
  InterruptFlag& operator=(const InterruptFlag&) = delete;

 private:
  struct sigaction old_int_ = {};
  struct sigaction old_term_ = {};
};

int cmd_chunk(const std::vector<std::string>& argv) {
  const auto flags =
      join({{{"out", true, "chunk store to create: a directory or s3://bucket/prefix"},
             {"dtype", true,
              "keep | f32 | bf16 | f16 | q8_0 | q4_0 (default keep; q8_0/q4_0 quantize linear-layer weights)"},
             {"compress", true, "none | zstd (default none)"},
             {"zstd-level", true, "zstd level (default 3)"},
             {"force", false, "replace a non-empty output (refused otherwise)"}},
            kPluginFlags});
  if (wants_help(argv)) {
    print_help("chunk HF_DIR --out STORE [options]",
               "Splits a HuggingFace checkpoint into one msgpack chunk per component of the\n"
               "architecture plugin's plan, plus STORE/manifest.json (written last). On a terminal a\n"
               "progress line on stderr shows components and bytes done, rate and time left.\n"
               "SIGINT/SIGTERM stop it after the chunk being written and remove what it wrote (the\n"
               "directory too if it made it); exit status 130/143.",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 1, "one HF_DIR");
  ChunkOptions o;
  o.dtype = a.get("dtype", "keep");
  o.compression = a.get("compress", "none");
  o.zstd_level = static_cast<int>(a.get_int_in("zstd-level", 3, 1, 22));
  o.plugin_dirs = a.all("plugin-dir");
  o.force = a.has("force");
  const std::string out = require(a, "out");
  cli::ProgressLine line;
  if (line.active()) {
    o.progress = [&line](const ChunkProgress& p) {
      const double secs = line.seconds();
      const double rate = secs > 0 ? static_cast<double>(p.bytes_done) / secs : 0;
      std::string text = "chunking: " + std::to_string(p.components_done) + "/" + std::to_string(p.components_total) +
                         " components, " + cli::human_bytes(p.bytes_done) + " / " + cli::human_bytes(p.bytes_total) +
                         ", " + cli::human_bytes(static_cast<uint64_t>(rate)) + "/s";
      if (p.bytes_done > 0 && rate > 0) {
        text += ", " + cli::human_seconds(static_cast<double>(p.bytes_total - p.bytes_done) / rate) + " left";
      }
      line.update(text, p.components_done == p.components_total);
    };
  }
  // SIGINT/SIGTERM only set a flag (async-signal-safe); the chunker polls it between chunks and,
  // when set, removes what it wrote before returning here.
  InterruptFlag interrupt;
  o.cancelled = [] { return g_interrupt != 0; };
  try {
    const std::string summary = chunk_checkpoint(a.positional[0], out, o);
    line.finish();
    std::cout << summary << "\n";
  } catch (const ChunkCancelled&) {
    line.finish();
    const int sig = g_interrupt;
    std::cerr << "surf chunk: interrupted by " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ": the partial output in '"
              << out << "' was removed\n";
    return 128 + sig;
  } catch (...) {
    line.finish();
    throw;
  }
  return 0;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The model inputs of an inputs file. Other tensors (a golden file's expected outputs) are not
// inputs and stay unread, but a name within two edits of an input's ("attention_masks") is a
// misspelling that would silently change the result: an error naming it.
TensorMap pick_inputs(const TensorMap& all) {
  static const std::vector<std::string> known = {"input_ids", "attention_mask", "token_type_ids", "position_ids",
                                                 "decoder_input_ids"};
  TensorMap in;
  for (const auto& k : known) {
    if (auto it = all.find(k); it != all.end()) in[k] = it->second;
  }
  for (const auto& [name, _] : all) {
    if (in.count(name)) continue;
    for (const auto& k : known) {
      if (edit_distance(name, k) <= 2) {
        fail(ErrorCode::invalid_argument,
             "the inputs file has an unknown input '" + name + "' (did you mean '" + k + "'?)");
      }
    }
  }
  if (!in.count("input_ids")) fail(ErrorCode::invalid_argument, "the inputs file has no 'input_ids' tensor");
  return in;
}

int cmd_run(const std::vector<std::string>& argv) {
  const auto flags =
      join({{{"inputs", true, "safetensors file with input_ids [, attention_mask, ...] (ids I32 or I64)"},
             {"text", true, "text to encode with the model's tokenizer instead of --inputs (repeatable: a batch)"},
             {"output", true, "safetensors file to write the outputs to"},
             {"hidden-states", false, "also write per-layer hidden states"}},
            kStreamFlags,
            kCacheFlags,
            kSourceFlags,
            kPluginFlags});
  if (wants_help(argv)) {
    print_help("run SOURCE (--inputs IN.safetensors | --text \"...\") --output OUT.safetensors [options]",
               "One forward pass with weights streamed through the cache. Reads input_ids,\n"
               "attention_mask, token_type_ids, position_ids, decoder_input_ids when present, or\n"
               "encodes --text with the model's tokenizer (right-padded, with attention_mask);\n"
               "writes HF-named outputs (logits, last_hidden_state, pooler_output, ...).",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 1, "one SOURCE");
  const std::string out_path = require(a, "output");
  if (a.has("text") == a.has("inputs")) throw std::invalid_argument("give either --inputs or --text");
  TensorMap inputs;
  if (a.has("inputs")) inputs = pick_inputs(read_inputs(a.get("inputs")));
  RunOptions ro;
  ro.hidden_states = a.has("hidden-states");
  run_and_report(a, out_path, [&](Session& s) {
    if (a.has("text")) inputs = s.encode_texts(a.all("text"), false);
    return s.forward(inputs, ro);
  });
  return 0;
}

int cmd_generate(const std::vector<std::string>& argv) {
  const auto flags =
      join({{{"prompt", true, "raw text prompt (repeatable: a batch); new text goes to stdout as it comes"},
             {"inputs", true, "safetensors file with the prompt ids (I32 or I64)"},
             {"output", true, "safetensors file for generated_ids, generated_lengths, generation_logits"},
             {"max-new-tokens", true, "tokens to generate at most"},
             {"prompt-key", true, "take the prompt from this tensor alone (every token real)"}},
            cli::kGenerationFlags,
            kStreamFlags,
            kCacheFlags,
            kSourceFlags,
            kPluginFlags});
  if (wants_help(argv)) {
    print_help(
        "generate SOURCE (--prompt \"...\" | --inputs IN.safetensors --output OUT.safetensors) --max-new-tokens N "
        "[options]",
        "Generation with a KV cache: greedy unless a sampling option is given; a sequence stops on\n"
        "the model's EOS (generation_config.json / config.json), a --stop string or after N tokens.\n"
        "--prompt is raw text encoded with the model's tokenizer (apply a chat template yourself);\n"
        "the new text is printed as it is produced. --inputs reads input_ids (with attention_mask if\n"
        "present), or the tensor named by --prompt-key. --output writes generated_ids (decoder-only:\n"
        "prompt + new tokens; T5: decoder start + new tokens), generated_lengths, generation_logits.",
        flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 1, "one SOURCE");
  const long long steps = a.get_int("max-new-tokens", -1);
  if (steps < 1) throw std::invalid_argument("--max-new-tokens N (N >= 1) is required");
  const GenerateOptions go = cli::generation_options(a, steps);
  if (a.has("prompt")) {
    if (a.has("inputs")) throw std::invalid_argument("give either --prompt or --inputs");
    auto session = Session::open(a.positional[0], open_options(a));
    const auto t0 = std::chrono::steady_clock::now();
    TextGeneration g;
    {
      // The new text streams to stdout: a progress line on the same terminal would overwrite it.
      FetchProgress progress(*session, ::isatty(STDOUT_FILENO) != 1);
      g = cli::generate_prompts(*session, a.all("prompt"), go);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (a.has("output")) write_safetensors(a.get("output"), g.tensors);
    int64_t tokens = 0;
    for (int64_t r = 0; r < g.tensors.at("generated_lengths").numel(); ++r)
      tokens += g.tensors.at("generated_lengths").i64()[r];
    std::cerr << "generated " << tokens << " tokens in " << seconds * 1e3 << " ms (" << tokens / std::max(seconds, 1e-9)
              << " tokens/s); finished:";
    for (const auto& r : g.finish_reasons) std::cerr << " " << r;
    std::cerr << "\n" << session->cache_stats().to_text() << "\n";
    return 0;
  }
  const std::string in_path = require(a, "inputs"), out_path = require(a, "output");
  const TensorMap all = read_inputs(in_path);
  TensorMap inputs;
  if (a.has("prompt-key")) {
    auto it = all.find(a.get("prompt-key"));
    if (it == all.end())
      fail(ErrorCode::invalid_argument, "the inputs file has no tensor '" + a.get("prompt-key") + "'");
    inputs["input_ids"] = it->second;
  } else {
    inputs = pick_inputs(all);
    inputs.erase("decoder_input_ids");
    inputs.erase("position_ids");
  }
  run_and_report(a, out_path, [&](Session& s) { return s.generate(inputs, go); });
  return 0;
}

int cmd_plugins(const std::vector<std::string>& argv) {
  const auto flags = join({{{"json", false, "print JSON"}}, kPluginFlags});
  if (wants_help(argv)) {
    print_help("plugins [--plugin-dir DIR] [--json]",
               "Lists the search path and every plugin file found: loaded (with the model types it\n"
               "serves) or skipped (with the reason).",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 0, "no positional arguments");
  const auto dirs = plugin_search_path(a.all("plugin-dir"));
  const auto results = scan_plugins(a.all("plugin-dir"));
  if (a.has("json")) {
    nlohmann::json j = {{"search_path", dirs}, {"plugins", nlohmann::json::array()}};
    for (const auto& r : results) {
      j["plugins"].push_back({{"path", r.path},
                              {"status", plugin_load_status_name(r.status)},
                              {"message", r.message},
                              {"name", r.name},
                              {"version", r.version},
                              {"model_types", r.model_types}});
    }
    std::cout << j.dump(1) << "\n";
    return 0;
  }
  std::cout << "search path:\n";
  for (const auto& d : dirs) std::cout << "  " << d << "\n";
  size_t loaded = 0;
  for (const auto& r : results) {
    std::cout << plugin_load_status_name(r.status) << "  " << r.path;
    if (!r.name.empty()) {
      std::cout << "  " << r.name << " " << r.version << " [";
      for (size_t i = 0; i < r.model_types.size(); ++i) std::cout << (i ? ", " : "") << r.model_types[i];
      std::cout << "]";
    }
    if (!r.message.empty()) std::cout << "  (" << r.message << ")";
    std::cout << "\n";
    loaded += r.status == PluginLoadStatus::loaded;
  }
  if (loaded == 0) std::cout << "no plugins found: pass --plugin-dir or set SURF_PLUGIN_PATH\n";
  return 0;
}

int cmd_inspect(const std::vector<std::string>& argv) {
  const auto flags = join({{{"json", false, "print JSON"}}, kSourceFlags, kPluginFlags});
  if (wants_help(argv)) {
    print_help("inspect SOURCE [--json]", "Shows the model type, the plugin that serves it and its components.", flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 1, "one SOURCE");
  OpenOptions o;
  o.plugin_dirs = a.all("plugin-dir");
  o.prefetch = 0;
  o.token = client_token(a);
  o.ca_file = a.get("ca-file");
  o.connect_timeout_ms = connect_timeout_ms(a);
  auto session = Session::open(a.positional[0], o);
  const ModelInfo& info = session->info();
  if (a.has("json")) {
    nlohmann::json j = {{"source", info.source},
                        {"kind", info.source_kind},
                        {"model_type", info.model_type},
                        {"plugin", info.plugin},
                        {"compression", info.compression},
                        {"dtype", info.dtype},
                        {"config", nlohmann::json::parse(info.config_json)},
                        {"execution_order", info.execution_order},
                        {"components", nlohmann::json::array()}};
    for (const auto& c : info.components) {
      j["components"].push_back({{"id", c.id},
                                 {"role", c.resident ? "resident" : "streamed"},
                                 {"bytes", c.bytes},
                                 {"raw_bytes", c.raw_bytes},
                                 {"tensors", c.tensors},
                                 {"dtypes", c.dtypes}});
    }
    j["dtype"] = info.dtype;
    std::cout << j.dump(1) << "\n";
    return 0;
  }
  uint64_t resident = 0, streamed = 0, biggest = 0;
  std::cout << "source: " << info.source << " (" << info.source_kind << ")\nmodel_type: " << info.model_type
            << "\nplugin: " << info.plugin << "\ncompression: " << info.compression << "\ndtype: " << info.dtype
            << "\ncomponents (execution order):\n";
  for (const auto& id : info.execution_order) {
    for (const auto& c : info.components) {
      if (c.id != id) continue;
      std::cout << "  " << c.id << "  " << (c.resident ? "resident" : "streamed") << "  " << c.tensors << " tensors ("
                << c.dtypes << ")  " << c.bytes << " bytes\n";
      (c.resident ? resident : streamed) += c.raw_bytes;
      if (!c.resident) biggest = std::max(biggest, c.raw_bytes);
    }
  }
  std::cout << "resident " << resident << " bytes, streamed " << streamed << " bytes, largest streamed component "
            << biggest << " bytes\n";
  return 0;
}

int cmd_check(const std::vector<std::string>& argv) {
  const auto flags = join(
      {{{"source", true,
         "hf (in place) | store (chunked to a temp store) | ws (that store behind a weight server) | a SOURCE URL"},
        {"dtype", true,
         "with store|ws: chunk as keep|f32|bf16|f16|q8_0|q4_0; q8_0/q4_0 compare with golden-<dtype>.*"}},
       kStreamFlags,
       kSourceFlags,
       kPluginFlags});
  if (wants_help(argv)) {
    print_help("check FIXTURE_DIR... [--plugin-dir DIR] [--source hf|store|ws] [--dtype q8_0|q4_0]",
               "Runs each fixture (HF checkpoint + golden.safetensors + golden.json) through the plugin\n"
               "serving its model_type and compares every expected tensor with golden.json's rule and\n"
               "fp32 tolerance (generated ids exactly). Paths without golden.json/golden.safetensors are\n"
               "skipped with a note; a NOTE line says when a --source serves another model_type than the\n"
               "fixture's. Exit status 0 only if all pass (and at least one was compared).",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  if (a.positional.empty()) throw std::invalid_argument("expected at least one FIXTURE_DIR");
  CheckOptions o;
  o.plugin_dirs = a.all("plugin-dir");
  o.source = a.get("source", "hf");
  o.token = client_token(a);
  o.ca_file = a.get("ca-file");
  o.connect_timeout_ms = connect_timeout_ms(a);
  read_stream_flags(a, o.cache_size, o.prefetch);
  o.dtype = a.get("dtype", "keep");
  read_disk_flags(a, o.disk_cache_dir, o.disk_cache_bytes);
  int passed = 0, failed = 0, skipped = 0;
  for (const auto& dir : a.positional) {
    try {
      const CheckReport r = check_fixture(dir, o);
      for (const auto& n : r.notes) std::printf("%s  %s  %s\n", r.skipped ? "SKIP" : "NOTE", dir.c_str(), n.c_str());
      if (r.skipped) {
        ++skipped;
        continue;
      }
      for (const auto& l : r.lines) {
        std::printf("%s  %s  %-26s max_abs_err %.3g  worst/tol %.3f  (%lld compared)%s%s\n", l.passed ? "PASS" : "FAIL",
                    dir.c_str(), l.tensor.c_str(), l.max_abs_error, l.worst_ratio, static_cast<long long>(l.compared),
                    l.note.empty() ? "" : "  ", l.note.c_str());
        (l.passed ? passed : failed)++;
      }
      if (r.lines.empty()) {
        std::printf("FAIL  %s  no expected tensor was compared\n", dir.c_str());
        ++failed;
      }
    } catch (const Error& e) {
      std::printf("FAIL  %s  %s\n", dir.c_str(), e.what());
      ++failed;
    }
  }
  std::printf("%d passed, %d failed", passed, failed);
  if (skipped > 0) std::printf(", %d skipped (not fixtures)", skipped);
  std::printf("\n");
  // Nothing compared at all (every path skipped) is not a pass.
  return failed == 0 && passed > 0 ? 0 : 1;
}

int cmd_serve(const std::vector<std::string>& argv) {
  const auto flags =
      join({{{"store", true, "chunk store to serve: DIR, s3://bucket/prefix or NAME=either (repeatable)"},
             {"name", true, "model name for a single --store (default: its directory name)"},
             {"host", true, "address to bind (default 127.0.0.1)"},
             {"port", true, "port, 0..65535 (default 8765; 0 = any free port)"},
             {"cache-mb", true, "server-side chunk cache in MB, 0..1000000 (default 256)"},
             {"max-mbps", true, "pace all answers together to N megabits/s, 0..1000000 (default 0: unlimited)"},
             {"read-ahead", true, "after a chunk, read the next N in execution order, 0..64 (default 2; 0: off)"},
             {"token-file", true, "require the bearer token in this file"},
             {"tls-cert", true, "PEM certificate chain: serve wss:// and https:// only (with --tls-key)"},
             {"tls-key", true, "PEM private key of --tls-cert"},
             {"max-connections", true, "refuse connections beyond this, 1..1000000 (default 256)"},
             {"max-connections-per-address", true,
              "refuse connections from one address beyond this, 0..1000000 (default 64; 0: no limit)"},
             {"max-buffer-mb", true, "request bytes buffered over all connections, in MiB, 1..1048576 (default 64)"},
             {"hello-timeout-ms", true, "with --token-file: time to authenticate, 1..3600000 (default 10000)"},
             {"max-request-bytes", true, "largest request accepted, 256..67108864 (default 65536)"},
             {"threads", true, "I/O threads, 1..256 (default 2)"}}});
  if (wants_help(argv)) {
    print_help("serve --store STORE [--store NAME=STORE ...] [--host 127.0.0.1] [--port 8765] [options]",
               "Serves chunk stores over WebSocket (docs/protocol.md) until SIGINT/SIGTERM. The same port\n"
               "answers GET /healthz and GET /metrics (Prometheus). Prints 'listening on HOST:PORT'.\n"
               "With --tls-cert/--tls-key the port speaks TLS only (wss://, https://); SIGHUP reloads the\n"
               "certificate and key for new connections without dropping open ones.",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 0, "no positional arguments (use --store)");
  ServeOptions o;
  for (const auto& st : a.all("store")) {
    const size_t eq = st.find('=');
    std::string name, dir;
    if (eq != std::string::npos && st.rfind("s3://", 0) != 0) {
      name = st.substr(0, eq);
      dir = st.substr(eq + 1);
    } else {
      dir = st;
      std::string trimmed = dir;
      while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
      name = trimmed.substr(trimmed.find_last_of('/') + 1);
    }
    o.stores.emplace_back(name, dir);
  }
  if (o.stores.empty()) throw std::invalid_argument("missing required option --store");
  if (a.has("name")) {
    if (o.stores.size() != 1) throw std::invalid_argument("--name applies to a single --store; use NAME=DIR");
    o.stores[0].first = a.get("name");
  }
  o.host = a.get("host", "127.0.0.1");
  // Every numeric flag in its range or refused, naming the flag and the range: a typo must not
  // become a silently different server (--max-connections 0 used to mean 1).
  o.port = static_cast<uint16_t>(a.get_int_in("port", 8765, 0, 65535));
  o.cache_bytes = static_cast<uint64_t>(a.get_int_in("cache-mb", 256, 0, 1000000)) * 1000000ull;
  o.max_mbps = static_cast<double>(a.get_int_in("max-mbps", 0, 0, 1000000));
  o.read_ahead = static_cast<int>(a.get_int_in("read-ahead", 2, 0, 64));
  o.max_connections = static_cast<size_t>(a.get_int_in("max-connections", 256, 1, 1000000));
  o.max_request_bytes = static_cast<size_t>(a.get_int_in("max-request-bytes", 65536, 256, 64LL << 20));
  o.max_connections_per_address = static_cast<size_t>(a.get_int_in("max-connections-per-address", 64, 0, 1000000));
  o.max_buffer_bytes = static_cast<size_t>(a.get_int_in("max-buffer-mb", 64, 1, 1 << 20)) << 20;
  o.hello_timeout_ms = static_cast<int>(a.get_int_in("hello-timeout-ms", 10000, 1, 3600000));
  o.threads = static_cast<int>(a.get_int_in("threads", 2, 1, 256));
  if (a.has("token-file")) o.token = read_secret_file(a.get("token-file"), "token");
  o.tls_cert_file = a.get("tls-cert");
  o.tls_key_file = a.get("tls-key");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty()) {
    throw std::invalid_argument("--tls-cert and --tls-key go together");
  }
  // SIGINT and SIGTERM end the server, SIGHUP reloads its certificate: blocked here, before the
  // server starts its threads (which inherit the mask), and taken by sigwait below, so they
  // arrive nowhere else.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  WeightServer server(o);
  std::cout << "listening on " << o.host << ":" << server.port() << (server.tls() ? " with TLS" : "") << " (";
  for (size_t i = 0; i < o.stores.size(); ++i) std::cout << (i ? ", " : "") << o.stores[i].first;
  std::cout << ")" << std::endl;
  for (int signal = 0; sigwait(&signals, &signal) == 0 && signal == SIGHUP;) {
    if (!server.tls()) {
      log_warn("serve: SIGHUP ignored: no certificate to reload (started without --tls-cert)");
      continue;
    }
    try {
      log_warn("serve: certificate reloaded: " + server.reload_certificate());
    } catch (const Error& e) {
      log(LogLevel::error, "serve: certificate reload failed, keeping the current one: " + std::string(e.what()));
    }
  }
  log_info("serve: shutting down");
  server.stop();
  return 0;
}

int cmd_synth(const std::vector<std::string>& argv) {
  const auto flags = join({{{"arch", true, "architecture (llama)"},
                            {"preset", true, "tiny | small | medium | tinyllama-1.1b"},
                            {"dtype", true, "bf16 | f16 | f32 (default bf16)"},
                            {"seed", true, "random seed (default 1)"},
                            {"out", true, "directory to write config.json and safetensors to"}}});
  if (wants_help(argv)) {
    print_help("synth --arch llama --preset NAME [--dtype bf16] --out DIR",
               "Writes a random-weight HuggingFace checkpoint with the shapes of a real model\n"
               "(sharded with an index above 1 GiB), for benchmarks and demos without downloads.",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 0, "no positional arguments");
  SynthOptions o;
  o.arch = a.get("arch", "llama");
  o.preset = a.get("preset", "tiny");
  o.dtype = a.get("dtype", "bf16");
  o.seed = static_cast<uint64_t>(a.get_int("seed", 1));
  synth_checkpoint(require(a, "out"), o);
  std::cout << "wrote " << o.arch << " " << o.preset << " (" << o.dtype << ") to " << a.get("out") << "\n";
  return 0;
}

int cmd_verify(const std::vector<std::string>& argv) {
  std::vector<Flag> flags = {{"quiet", false, "print only problems and the summary"}};
  for (const auto& f : kSourceFlags) {
    if (f.name.rfind("disk-cache", 0) != 0) flags.push_back(f);  // how to reach a weight server
  }
  if (wants_help(argv)) {
    print_help("verify STORE [--quiet]",
               "Re-reads every chunk and file a chunk store (a directory or s3://bucket/prefix) lists and\n"
               "checks its size and checksum. STORE may also be a weight server, ws[s]://host:port[/model]:\n"
               "then every chunk and file of its manifest is fetched through the server and checked.\n"
               "Exit status 1 when any is bad.",
               flags);
    return 0;
  }
  Args a = cli::parse(argv, flags);
  require_positional(a, 1, "one STORE");
  const std::string store = a.positional[0];
  auto report = [&](const std::string& name, uint64_t bytes, const std::string& problem) {
    if (!problem.empty()) {
      std::cout << "BAD " << name << ": " << problem << "\n";
    } else if (!a.has("quiet")) {
      std::cout << "ok  " << name << " (" << bytes << " bytes)\n";
    }
  };
  if (store.rfind("ws://", 0) == 0 || store.rfind("wss://", 0) == 0) {
    OpenOptions o;
    o.token = client_token(a);
    o.ca_file = a.get("ca-file");
    o.connect_timeout_ms = connect_timeout_ms(a);
    size_t checked = 0;
    const size_t bad = verify_weight_server(store, o, [&](const VerifyItem& item) {
      ++checked;
      report(item.name, item.bytes, item.problem);
    });
    std::cout << store << ": " << checked << " items, " << bad << " bad\n";
    return bad == 0 ? 0 : 1;
  }
  std::unique_ptr<StorageBackend> backend;
  if (store.rfind("s3://", 0) == 0) {
    backend = open_s3_backend(store, s3_config_from_environment());
  } else {
    if (!std::filesystem::is_directory(store)) fail(ErrorCode::not_found, "no chunk store directory '" + store + "'");
    backend = open_filesystem_backend(store, false);
  }
  if (!backend->exists("manifest.json"))
    fail(ErrorCode::not_found, "'" + store + "' has no manifest.json (not a chunk store, or an incomplete one)");
  ByteBuffer buf;
  backend->get("manifest.json", buf);
  const Manifest m = Manifest::from_json(std::string(reinterpret_cast<const char*>(buf.data()), buf.size()));
  size_t checked = 0, bad = 0;
  auto check = [&](const std::string& name, const std::string& key, uint64_t bytes, const std::string& checksum) {
    ++checked;
    std::string problem;
    try {
      backend->get(key, buf);
      if (buf.size() != bytes) {
        problem = "size " + std::to_string(buf.size()) + ", the manifest says " + std::to_string(bytes);
      } else if (checksum_of(buf.data(), buf.size()) != checksum) {
        problem = "checksum mismatch";
      }
    } catch (const std::exception& e) {
      problem = e.what();
    }
    bad += problem.empty() ? 0 : 1;
    report(name, bytes, problem);
  };
  for (const auto& c : m.components) check(c.id, c.key, c.bytes, c.checksum);
  for (const auto& f : m.files) check("files/" + f.name, file_key(f.name), f.bytes, f.checksum);
  std::cout << store << ": " << checked << " items, " << bad << " bad\n";
  return bad == 0 ? 0 : 1;
}

// The version, the plugin ABI this runtime loads and how it was built.
int cmd_version() {
  std::cout << "surf " << SURF_SDK_VERSION << "\n"
            << "plugin ABI " << SURF_ABI_MAJOR << "." << SURF_ABI_MINOR << " (plugins built for " << SURF_ABI_MAJOR
            << ".0 to " << SURF_ABI_MAJOR << "." << SURF_ABI_MINOR << " load)\n"
            << "build tag " << SURF_BUILD_TAG << "\n"
            << "compiler " << __VERSION__ << "\n"
            << "plugin search path:";
  for (const auto& d : plugin_search_path({})) std::cout << " " << d;
  std::cout << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && !std::strcmp(argv[1], "--version")) {
    std::cout << "surf " << SURF_SDK_VERSION << "\n";
    return 0;
  }
  if (argc >= 2 && !std::strcmp(argv[1], "version")) return cmd_version();
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> rest(argv + 2, argv + argc);
  try {
    if (cmd == "chunk") return cmd_chunk(rest);
    if (cmd == "run") return cmd_run(rest);
    if (cmd == "generate") return cmd_generate(rest);
    if (cmd == "plugins") return cmd_plugins(rest);
    if (cmd == "inspect") return cmd_inspect(rest);
    if (cmd == "verify") return cmd_verify(rest);
    if (cmd == "check") return cmd_check(rest);
    if (cmd == "synth") return cmd_synth(rest);
    if (cmd == "serve") return cmd_serve(rest);
    if (cmd == "tokenize") return cli::cmd_tokenize(rest);
    if (cmd == "detokenize") return cli::cmd_detokenize(rest);
    std::cerr << "surf: error: unknown command '" << cmd << "' (see surf --help)\n";
    return 2;
  } catch (const std::invalid_argument& e) {
    std::cerr << "surf " << cmd << ": error: " << e.what() << "\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << "surf " << cmd << ": error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "surf " << cmd << ": error: " << e.what() << "\n";
    return 1;
  }
}
