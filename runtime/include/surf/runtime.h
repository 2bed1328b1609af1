// The embedding API: open a model from a source and run it with weights streamed through a
// bounded cache. Sources: a chunk store directory, a HuggingFace checkpoint directory (streamed
// straight from its safetensors), a weight server (ws://host:port[/model]) or a chunk store in an
// S3-compatible bucket (s3://bucket/prefix).
//
//   surf::OpenOptions opt;  opt.cache_size = 2;  opt.prefetch = 1;
//   auto session = surf::Session::open("models/llama-store", opt);
//   surf::TensorMap out = session->forward({{"input_ids", ids}});
//   std::cout << session->cache_stats().to_text();
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "surf/plugin.h"
#include "surf/runtime_export.h"
#include "surf/tensor_io.h"
#include "surf/tokenizer.h"

SURF_RUNTIME_PUBLIC_BEGIN

namespace surf {

struct CacheStats {
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t bytes_fetched = 0;  // bytes of chunks read from the source
  uint64_t disk_hits = 0;      // chunks read from the disk tier instead (--disk-cache)
  uint64_t disk_bytes = 0;     // their bytes
  uint64_t disk_corrupt = 0;   // disk tier files that failed verification (removed, refetched)
  uint64_t fetches = 0;
  uint64_t prefetch_issued = 0;
  uint64_t prefetch_used = 0;    // prefetched and then asked for
  uint64_t prefetch_wasted = 0;  // prefetched and evicted (or dropped) unused
  uint64_t fetch_ns = 0;         // time spent fetching (demand + prefetch)
  uint64_t wait_ns = 0;          // time compute waited for weights
  uint64_t resident_bytes = 0;   // memory of resident components
  uint64_t cached_bytes = 0;     // memory of streamed components held now
  uint64_t peak_cached_bytes = 0;
  uint64_t cached_components = 0;

  std::string to_text() const;
  std::string to_json() const;
};

// The streaming knobs (OpenOptions, CheckOptions, `--cache-size` and `--prefetch` in the CLI):
// one name, one default and one rule each.
inline constexpr int kDefaultCacheSize = 2;  // streamed components kept (besides those being prefetched)
inline constexpr int kDefaultPrefetch = 1;   // components fetched ahead in execution order
// The rule: cache_size >= 1 (the component in use is cached), prefetch >= 0 (0: none); anything
// else is Error(invalid_argument) naming the knob and the value. Session::open, check_fixture and
// the CLI call it before any work starts.
void validate_cache_options(int64_t cache_size, int64_t prefetch);

inline constexpr int kDefaultConnectTimeoutMs = 30000;

struct OpenOptions {
  // Plugin directories searched before SURF_PLUGIN_PATH, the install dir and the build tree.
  std::vector<std::string> plugin_dirs;
  int cache_size = kDefaultCacheSize;  // streamed components kept (besides those being prefetched)
  uint64_t cache_bytes = 0;            // also bound the cache in bytes; 0: no byte bound
  int prefetch = kDefaultPrefetch;     // components fetched ahead in execution order
  std::vector<std::string> warmup;     // component ids loaded at open; "all" = every component
  // A local disk tier for ws:// and s3:// sources (empty: none): fetched chunks are kept there,
  // named by checksum, verified when read back, evicted least-recently-used beyond
  // disk_cache_bytes. Processes may share the directory.
  std::string disk_cache_dir;
  uint64_t disk_cache_bytes = 10000ull * 1000000;
  // Freed component buffers kept for reuse. Fetching into warm pages is several times faster
  // than into fresh ones on VMs like this one; each spare costs up to the largest component's
  // size in memory. 2 keeps streaming at full speed; 0-1 trades speed for memory.
  int spare_buffers = 2;
  std::string token;  // bearer token for ws[s]:// sources
  // PEM CA bundle trusted for wss:// weight servers and https:// S3 endpoints instead of the
  // system store; empty: SURF_CA_BUNDLE (for S3 AWS_CA_BUNDLE first), else the system store.
  std::string ca_file;
  int retry_attempts = 6;      // network sources: attempts per fetch before a typed error
  int retry_backoff_ms = 100;  // first backoff; doubles per attempt, capped at 2 s
  int request_timeout_ms = 60000;
  // ws[s]:// sources: how long reaching a weight server may take (TCP connect, TLS handshake,
  // WebSocket upgrade and the hello answer), over all of Session::open's attempts; each later
  // reconnect gets as long. A server that accepts and never answers fails open after this.
  int connect_timeout_ms = kDefaultConnectTimeoutMs;
};

struct ModelInfo {
  std::string source;
  std::string source_kind;  // "store", "hf", "ws", "s3"
  std::string model_type;
  std::string plugin;  // plugin name and version
  std::string config_json;
  std::string compression = "none";  // how the chunks are stored: none | zstd (a checkpoint: none)
  // A store's --dtype (keep | f32 | bf16 | f16 | q8_0 | q4_0); "keep" for an HF checkpoint.
  std::string dtype;
  struct Component {
    std::string id;
    bool resident;
    uint64_t bytes;      // as stored
    uint64_t raw_bytes;  // tensor bytes
    size_t tensors;
    std::string dtypes;  // tensor count per dtype, e.g. "Q8_0 x7, F32 x2"
  };
  std::vector<Component> components;
  std::vector<std::string> execution_order;
};

// Called after each new token of each sequence with the token's piece of the decoded text ("" for
// special tokens, while a multi-byte character is incomplete, and always when the source has no
// tokenizer files); the pieces of a sequence concatenate to its text. Return false to stop that
// sequence (cancel). Runs on the generating thread between steps.
using TokenCallback = std::function<bool(int64_t sequence, int64_t id, std::string_view piece)>;

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  // A sequence stops after producing one of these ids (the id is kept). Empty: the model's EOS
  // ids (generation_config.json, else config.json). stop_at_eos = false: never stop on EOS.
  std::vector<int64_t> eos_token_ids;
  bool stop_at_eos = true;
  // A sequence stops once its new text contains one of these; its text and streamed pieces end
  // before the stop string (generated_ids keep every token). Needs tokenizer files.
  std::vector<std::string> stop_strings;
  // Greedy unless do_sample. Applied as HF does: repetition penalty (greedy too), then
  // temperature, top-k, top-p, min-p.
  bool do_sample = false;
  float temperature = 1.0f;
  int64_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off
  uint64_t seed = 0;                // sequence r samples from its own generator seeded seed + r
  TokenCallback on_token;
  bool return_logits = true;  // generation_logits [rows, steps, vocab] (memory: 4 bytes each)
};

struct TextGeneration {
  std::vector<std::string> texts;           // new text per prompt (special tokens skipped)
  std::vector<std::string> finish_reasons;  // eos | stop_string | length | cancelled
  // generated_ids [rows, prefix + steps] (rows that stopped early padded with the pad id),
  // generated_lengths [rows] (new tokens per row), generation_logits.
  TensorMap tensors;
};

class Session {
 public:
  // Reads the source's manifest (a checkpoint's headers) and finds the plugin; fetches no weights:
  // resident components load on first use, or at open with OpenOptions::warmup, or by warm_up.
  // Throws surf::Error with a clear message: unknown source, no plugin for the model_type, ...
  static std::unique_ptr<Session> open(const std::string& source, const OpenOptions& options = {});
  ~Session();

  TensorMap forward(const TensorMap& inputs, const RunOptions& options = {});
  // Greedy, exactly max_new_tokens per row (no EOS stop): today's behaviour, kept for callers
  // that compare with fixed-width references.
  TensorMap generate(const TensorMap& inputs, int64_t max_new_tokens);
  // Stopping, sampling and streaming per `options`; also writes generated_lengths.
  TensorMap generate(const TensorMap& inputs, const GenerateOptions& options);
  // Run on a background thread; calls on one session are serialised. The session must outlive
  // the futures it returned (wait for them before destroying it). Concurrent generate_async
  // calls are merged at step granularity: a request joins the running ones at the next step and
  // leaves when done, and each step streams the model once for all of them (their on_token
  // callbacks run on that one thread); each request's ids equal the same request run alone.
  std::future<TensorMap> forward_async(TensorMap inputs, RunOptions options = {});
  std::future<TensorMap> generate_async(TensorMap inputs, int64_t max_new_tokens);
  std::future<TensorMap> generate_async(TensorMap inputs, GenerateOptions options);

  // --- text: the source's tokenizer files (tokenizer.json, or spiece.model / tokenizer.model) ---
  bool has_tokenizer();
  // Loaded on first use; Error(not_found) in one line when the source has no tokenizer files.
  const Tokenizer& tokenizer();
  // Texts encoded with the tokenizer's special tokens into input_ids and attention_mask
  // [rows, longest], padded on the left (for generation) or the right (for encoders).
  TensorMap encode_texts(const std::vector<std::string>& texts, bool pad_left);
  // Prompts (raw text: apply a chat template yourself) to new text, batched; each prompt stops
  // on its own.
  TextGeneration generate_text(const std::vector<std::string>& prompts, const GenerateOptions& options);
  // The model's EOS ids (generation_config.json, else config.json).
  std::vector<int64_t> eos_token_ids();

  // Loads components now (ids, or "all": the resident ones and every streamed one in turn).
  void warm_up(const std::vector<std::string>& ids);
  // Drops every cached component, resident ones included (except those a running call holds);
  // the next call fetches them again. Waits for a running call on this session to finish.
  void clear_cache();
  CacheStats cache_stats() const;
  void reset_cache_stats();
  const ModelInfo& info() const;

  struct Impl;

 private:
  explicit Session(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The tokenizer that travels with a model, without opening the model (no plugin needed): SOURCE
// as for Session::open. Error(not_found) in one line when SOURCE has no tokenizer files.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& source, const OpenOptions& options = {});

// --- plugins ---

enum class PluginLoadStatus {
  loaded,
  open_failed,          // dlopen failed (not a shared library, missing dependency)
  missing_entry_point,  // no surf_plugin_entry symbol
  wrong_abi,            // ABI major differs or minor is newer than the runtime's
  build_mismatch,       // compiler / C++ library differs (build tag)
  invalid_descriptor,
  shadowed,  // serves model types already served by a plugin found earlier
};
const char* plugin_load_status_name(PluginLoadStatus s);

struct PluginLoadResult {
  std::string path;
  PluginLoadStatus status;
  std::string message;
  std::string name, version;
  std::vector<std::string> model_types;
};

// Directories searched, in order: explicit ones, SURF_PLUGIN_PATH (':'-separated), the plugins
// installed beside this library (libdir/surf/plugins, wherever the installed tree now is), the
// configured install dir, then the build tree next to the executable.
std::vector<std::string> plugin_search_path(const std::vector<std::string>& explicit_dirs);
// Loads every plugin on the search path and reports what happened to each file.
std::vector<PluginLoadResult> scan_plugins(const std::vector<std::string>& explicit_dirs);

// --- tools behind the CLI ---

struct ChunkProgress {
  size_t components_done = 0, components_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // checkpoint tensor bytes read
};
struct ChunkOptions {
  // keep | f32 | bf16 | f16 (every float tensor) | q8_0 | q4_0 (GGML blocks for the nn.Linear
  // weights the plugin's plan lists; other tensors keep their dtype)
  std::string dtype = "keep";
  std::string compression = "none";
  int zstd_level = 3;
  std::vector<std::string> plugin_dirs;
  // A non-empty output is refused (Error(invalid_argument)) unless force: then its manifest is
  // removed first and what the new store does not write is removed at the end.
  bool force = false;
  // Called once before the first chunk, after each tensor read and after each chunk written, with
  // what is done so far (components_done == components_total on the last call).
  std::function<void(const ChunkProgress&)> progress;
  // Polled before each chunk and each tensor: true stops the run with ChunkCancelled, after
  // removing what it wrote, as on an error. Must be cheap (e.g. a flag a signal handler set).
  std::function<bool()> cancelled;
};
// What chunk_checkpoint throws when ChunkOptions::cancelled said stop.
struct ChunkCancelled : Error {
  ChunkCancelled() : Error(ErrorCode::invalid_argument, "chunking cancelled") {}
};
// On an error, what was written is removed (and the directory, if this call made it).
// HF checkpoint directory -> chunk store at `out` (a directory or s3://bucket/prefix). Returns a summary.
std::string chunk_checkpoint(const std::string& hf_dir, const std::string& out, const ChunkOptions& options);

// --- the weight server ---

struct ServeOptions {
  // (model name, store) pairs; a store is a chunk store directory (or s3://bucket/prefix).
  std::vector<std::pair<std::string, std::string>> stores;
  std::string host = "127.0.0.1";
  uint16_t port = 8765;  // 0: any free port (reported through on_listening)
  uint64_t cache_bytes = 256ull << 20;
  // After answering for a component, read this many of the next ones in the model's execution
  // order from the store, so a client's next request does not wait for storage (0: off). They
  // take up to this many of the largest chunk in memory until asked for.
  int read_ahead = 2;
  double max_mbps = 0;                      // > 0: all answers together paced to this many megabits/s
  std::string token;                        // non-empty: clients must present it
  size_t max_connections = 256;             // open connections, counted from accept (before the upgrade)
  size_t max_connections_per_address = 64;  // from one peer address; 0: no such limit
  size_t max_buffer_bytes = 64ull << 20;    // request bytes buffered over all connections
  int hello_timeout_ms = 10000;             // with a token: an unauthenticated connection's time to say hello
  size_t max_request_bytes = 64 * 1024;
  int threads = 2;
  // PEM certificate chain and private key: the port then speaks only TLS (wss://, and https://
  // for /healthz and /metrics), TLS 1.2 or newer. Both or neither.
  std::string tls_cert_file, tls_key_file;
};
// A weight server running on its own threads from construction until stop() or destruction. It
// installs no signal handlers: a program that should stop on SIGINT/SIGTERM waits for them itself
// (as `surf serve` does) and calls stop().
class WeightServer {
 public:
  explicit WeightServer(const ServeOptions& options);  // Error if a store or the address is unusable
  ~WeightServer();
  WeightServer(const WeightServer&) = delete;
  WeightServer& operator=(const WeightServer&) = delete;
  uint16_t port() const;  // the bound port (useful with port 0)
  bool tls() const;
  // Reads the certificate and key files again and serves them to new connections; connections
  // already open keep theirs. Returns a description of the new certificate for the log; throws
  // Error (and keeps the old one) if the new files are unusable. Callable from any thread.
  std::string reload_certificate();
  // Closes the listening socket and the connections, and joins the server's threads. Idempotent;
  // call it from any thread but the server's own.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs a golden fixture (HF checkpoint + golden.safetensors + golden.json) through its plugin.
struct CheckOptions {
  std::string source = "hf";  // hf | store | ws (store served by an in-process weight server) | a SOURCE URL
  std::string token;          // for a ws[s]:// SOURCE URL
  std::string ca_file;        // as OpenOptions::ca_file
  int connect_timeout_ms = kDefaultConnectTimeoutMs;  // as OpenOptions::connect_timeout_ms
  // For store / ws: the chunker's --dtype. q8_0 / q4_0 compare against the fixture's
  // golden-<dtype>.* (the float64 reference on the dequantized weights) with exact matmuls
  // (ActivationRounding::none), and check the stored blocks against the sha256 listed there.
  std::string dtype = "keep";
  std::vector<std::string> plugin_dirs;
  int cache_size = kDefaultCacheSize;
  int prefetch = kDefaultPrefetch;
  std::string disk_cache_dir;  // as OpenOptions
  uint64_t disk_cache_bytes = 10000ull * 1000000;
};
struct CheckLine {
  std::string tensor;
  bool passed;
  double max_abs_error;
  double worst_ratio;  // max |a-e| / (atol + rtol |e|); <= 1 passes
  int64_t compared;
  std::string note;
};
struct CheckReport {
  std::string fixture;
  std::string model_type;  // the source's
  std::vector<CheckLine> lines;
  // Not a fixture (a directory or file without golden.json / golden.safetensors): nothing was
  // run or compared; `notes` says why.
  bool skipped = false;
  // Worth saying, not failures: the fixture's model_type differs from the source's, why it was skipped.
  std::vector<std::string> notes;
  bool passed() const;
};
CheckReport check_fixture(const std::string& fixture_dir, const CheckOptions& options);

// `surf verify` of a weight server: one chunk or file its manifest lists, and what is wrong with
// it (empty: its size and checksum match the manifest).
struct VerifyItem {
  std::string name;  // component id, or files/NAME
  uint64_t bytes = 0;
  std::string problem;
};
// Fetches every chunk and file the manifest of a ws[s]:// weight server (or fleet) lists through
// the server and checks each against the manifest's size and checksum (which covers the whole
// chunk as stored); `each` sees every item as it is checked. Returns the number of bad items.
// Errors that end the whole run (cannot connect, unauthorized) are thrown as usual.
size_t verify_weight_server(const std::string& url, const OpenOptions& options,
                            const std::function<void(const VerifyItem&)>& each);

}  // namespace surf

SURF_RUNTIME_PUBLIC_END
