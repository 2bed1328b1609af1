#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <list>
#include <thread>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "sources/component_provider.h"
#include "cache/layer_cache.h"
#include "generation/generator.h"
#include "text/model_files.h"
#include "plugins/plugin_registry.h"
#include "sources/open_source.h"
#include "sources/store_backend.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/safetensors.h"

namespace fs = std::filesystem;

namespace surf {

std::string CacheStats::to_text() const {
  std::ostringstream s;
  auto mb = [](uint64_t b) { return static_cast<double>(b) / 1e6; };
  s.setf(std::ios::fixed);
  s.precision(1);
  s << "cache: hits " << hits << ", misses " << misses << ", evictions " << evictions << ", fetched " << fetches
    << " chunks / " << mb(bytes_fetched) << " MB in " << static_cast<double>(fetch_ns) / 1e6 << " ms; ";
  if (disk_hits || disk_corrupt) {
    s << "disk cache " << disk_hits << " chunks / " << mb(disk_bytes) << " MB, " << disk_corrupt << " corrupt; ";
  }
  s << "prefetch issued " << prefetch_issued << ", used " << prefetch_used << ", wasted " << prefetch_wasted
    << "; waited " << static_cast<double>(wait_ns) / 1e6 << " ms; resident " << mb(resident_bytes) << " MB, cached now "
    << cached_components << " components / " << mb(cached_bytes) << " MB, peak " << mb(peak_cached_bytes) << " MB";
  return s.str();
}

std::string CacheStats::to_json() const {
  nlohmann::json j = {{"hits", hits},
                      {"misses", misses},
                      {"evictions", evictions},
                      {"fetches", fetches},
                      {"bytes_fetched", bytes_fetched},
                      {"disk_hits", disk_hits},
                      {"disk_bytes", disk_bytes},
                      {"disk_corrupt", disk_corrupt},
                      {"prefetch_issued", prefetch_issued},
                      {"prefetch_used", prefetch_used},
                      {"prefetch_wasted", prefetch_wasted},
                      {"fetch_ms", static_cast<double>(fetch_ns) / 1e6},
                      {"wait_ms", static_cast<double>(wait_ns) / 1e6},
                      {"resident_bytes", resident_bytes},
                      {"cached_bytes", cached_bytes},
                      {"peak_cached_bytes", peak_cached_bytes},
                      {"cached_components", cached_components}};
  return j.dump(1);
}

struct Session::Impl {
  PluginRegistry registry;
  std::shared_ptr<const LoadedPlugin> plugin;
  std::shared_ptr<BufferPool> pool;
  std::shared_ptr<ComponentProvider> provider;
  std::unique_ptr<LayerCache> cache;
  std::unique_ptr<PluginModel> model;
  ModelInfo info;
  std::mutex run_mutex;
  // The text side, loaded on first use.
  std::shared_ptr<ModelFiles> files;
  std::mutex text_mutex;
  bool text_loaded = false;
  std::unique_ptr<Tokenizer> tokenizer;
  GenerationDefaults generation;

  void load_text() {
    std::lock_guard lock(text_mutex);
    if (text_loaded) return;
    const TokenizerFiles tf = read_tokenizer_files(*files);
    if (!tf.empty()) tokenizer = Tokenizer::from_files(tf);
    generation = parse_generation_defaults(info.config_json, files->read("generation_config.json"));
    text_loaded = true;
  }
  int64_t pad_id() {
    if (generation.pad_token_id) return *generation.pad_token_id;
    if (tokenizer && tokenizer->special_tokens().pad) return *tokenizer->special_tokens().pad;
    if (!generation.eos_token_ids.empty()) return generation.eos_token_ids[0];
    return 0;
  }

  // generate_async: queued requests join the running ones at the next step; each step streams
  // the model once for every running request's sequences (batch_loop, on its own thread).
  struct Queued {
    TensorMap inputs;
    GenerateOptions options;
    std::vector<int64_t> eos;
    int64_t pad = 0;
    const Tokenizer* tokenizer = nullptr;
    bool drop_lengths = false;  // generate(inputs, max_new_tokens)'s outputs
    std::promise<TensorMap> promise;
  };
  std::mutex queue_mutex;
  std::condition_variable queue_changed;
  std::deque<Queued> queue;
  std::thread batcher;
  bool stopping = false;

  std::future<TensorMap> enqueue(Queued q) {
    auto future = q.promise.get_future();
    std::lock_guard lock(queue_mutex);
    queue.push_back(std::move(q));
    if (!batcher.joinable()) batcher = std::thread([this] { batch_loop(); });
    queue_changed.notify_all();
    return future;
  }

  void batch_loop() {
    struct Running {
      GenerationRequest request;
      std::promise<TensorMap> promise;
      bool drop_lengths;
    };
    std::list<Running> running;
    for (;;) {
      std::deque<Queued> joining;
      {
        std::unique_lock lock(queue_mutex);
        queue_changed.wait(lock, [&] { return stopping || !queue.empty() || !running.empty(); });
        if (stopping && queue.empty() && running.empty()) return;
        joining.swap(queue);
      }
      std::lock_guard run(run_mutex);  // one step at a time, between other calls on the session
      for (auto& q : joining) {
        try {
          running.push_back({GenerationRequest(*model, *cache, q.inputs, q.options, q.eos, q.pad, q.tokenizer),
                             std::move(q.promise), q.drop_lengths});
        } catch (...) {
          q.promise.set_exception(std::current_exception());
        }
      }
      std::vector<Sequence*> sequences;
      for (const auto& r : running)
        sequences.insert(sequences.end(), r.request.active().begin(), r.request.active().end());
      if (!sequences.empty()) {
        Tensor logits;
        try {
          cache->begin_pass(PassKind::step);
          logits = model->step(sequences, *cache);
        } catch (...) {
          for (auto& r : running) r.promise.set_exception(std::current_exception());
          running.clear();
          continue;
        }
        const int64_t vocab = logits.dim(-1);
        int64_t row = 0;
        for (auto it = running.begin(); it != running.end();) {
          const auto n = static_cast<int64_t>(it->request.active().size());
          const float* rows = logits.f32() + row * vocab;
          row += n;
          try {
            if (n > 0) it->request.absorb(rows, vocab);
            ++it;
          } catch (...) {  // a callback threw: that request fails, the others go on
            it->promise.set_exception(std::current_exception());
            it = running.erase(it);
          }
        }
      }
      for (auto it = running.begin(); it != running.end();) {
        if (!it->request.done()) {
          ++it;
          continue;
        }
        TensorMap out = it->request.finish().tensors;
        if (it->drop_lengths) out.erase("generated_lengths");
        it->promise.set_value(std::move(out));
        it = running.erase(it);
      }
    }
  }

  explicit Impl(const OpenOptions& o) : registry(o.plugin_dirs) {}
  ~Impl() {
    {
      std::lock_guard lock(queue_mutex);
      stopping = true;
    }
    queue_changed.notify_all();
    if (batcher.joinable()) batcher.join();
    // The model and the cache's components may hold plugin objects: release before the plugin.
    model.reset();
    cache.reset();
  }
};

namespace {

// What the pool may hold: the resident components, and (cache + prefetch) streamed ones of the
// largest size, as the cache never holds more than that many; the spares that keep fetches in
// warm pages live in what the cache's buffers leave of that, so a streamed pass stays within the
// memory the options ask for.
uint64_t pool_limit(const Manifest& m, const OpenOptions& options) {
  uint64_t resident = 0, largest = 0;
  for (const auto& c : m.components) {
    const uint64_t bytes = std::max(c.bytes, c.raw_bytes) + 64 * 1024;  // + the chunk's framing, aligned
    if (c.role == ComponentRole::resident) {
      resident += bytes;
    } else {
      largest = std::max(largest, bytes);
    }
  }
  const uint64_t slots = static_cast<uint64_t>(std::max(0, options.cache_size) + std::max(0, options.prefetch));
  return resident + std::max<uint64_t>(slots, 1) * largest;
}

}  // namespace

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

std::unique_ptr<Session> Session::open(const std::string& source, const OpenOptions& options) {
  validate_cache_options(options.cache_size, options.prefetch);
  auto impl = std::make_unique<Impl>(options);
  // Spare buffers: the next load reuses warm pages (fresh ones cost far more) while the pool
  // holds only a constant beyond the cache itself.
  impl->pool = std::make_shared<BufferPool>(static_cast<size_t>(std::max(0, options.spare_buffers)));
  SourceDescription src = open_source(source, options, impl->registry, impl->pool);
  impl->plugin = src.plugin;
  impl->provider = std::move(src.provider);
  const Manifest& m = impl->provider->manifest();
  impl->pool->set_limit(pool_limit(m, options));
  const ModelConfig config = ModelConfig::parse(m.config_json);
  // The plugin's plan for this config must be covered by the source.
  const ComponentPlan plan = impl->plugin->plan(config);
  for (const auto& spec : plan.components) {
    if (m.find(spec.id) == nullptr) {
      fail(ErrorCode::not_found,
           "source " + source + " lacks component '" + spec.id + "' that plugin '" + impl->plugin->name() + "' needs");
    }
  }
  impl->model = impl->plugin->create_model(config);
  CacheOptions co;
  co.cache_size = options.cache_size;
  co.cache_bytes = options.cache_bytes;
  co.prefetch = options.prefetch;
  // Nothing is fetched here: resident components load on first use (or by warm-up), so opening a
  // remote source only reads its manifest.
  impl->cache = std::make_unique<LayerCache>(impl->provider, co);
  if (!options.warmup.empty()) impl->cache->warm(options.warmup);

  ModelInfo& info = impl->info;
  info.source = source;
  info.source_kind = src.kind;
  info.model_type = m.model_type;
  info.plugin = impl->plugin->name() + " " + impl->plugin->version();
  info.config_json = m.config_json;
  info.execution_order = m.execution_order;
  info.compression = m.compression;
  info.dtype = m.dtype;
  for (const auto& c : m.components) {
    std::map<std::string, int> count;
    for (const auto& t : c.tensors) count[dtype_name(t.dtype)]++;
    std::string dtypes;
    for (const auto& [name, n] : count) dtypes += (dtypes.empty() ? "" : ", ") + name + " x" + std::to_string(n);
    info.components.push_back(
        {c.id, c.role == ComponentRole::resident, c.bytes, c.raw_bytes, c.tensors.size(), dtypes});
  }
  impl->files = src.files ? src.files : no_model_files();
  return std::unique_ptr<Session>(new Session(std::move(impl)));
}

TensorMap Session::forward(const TensorMap& inputs, const RunOptions& options) {
  std::lock_guard lock(impl_->run_mutex);
  TensorMap out;
  impl_->cache->begin_pass(PassKind::forward);
  impl_->model->forward(inputs, options, *impl_->cache, out);
  return out;
}

TensorMap Session::generate(const TensorMap& inputs, int64_t max_new_tokens) {
  std::lock_guard lock(impl_->run_mutex);
  if (impl_->model->decodes()) return generate_greedy(*impl_->model, *impl_->cache, inputs, max_new_tokens);
  TensorMap out;  // an ABI 1.0 plugin runs its own loop
  RunOptions o;
  o.max_new_tokens = max_new_tokens;
  impl_->model->generate(inputs, o, *impl_->cache, out);
  return out;
}

TensorMap Session::generate(const TensorMap& inputs, const GenerateOptions& options) {
  impl_->load_text();
  std::lock_guard lock(impl_->run_mutex);
  if (!impl_->model->decodes())
    fail(ErrorCode::unsupported,
         "plugin '" + impl_->info.plugin +
             "' predates runtime-driven decoding (ABI 1.0): only generate(inputs, max_new_tokens) is available");
  const std::vector<int64_t> eos =
      options.eos_token_ids.empty() ? impl_->generation.eos_token_ids : options.eos_token_ids;
  return run_generation(*impl_->model, *impl_->cache, inputs, options, eos, impl_->pad_id(), impl_->tokenizer.get())
      .tensors;
}

bool Session::has_tokenizer() {
  impl_->load_text();
  return impl_->tokenizer != nullptr;
}

const Tokenizer& Session::tokenizer() {
  impl_->load_text();
  if (!impl_->tokenizer) {
    fail(ErrorCode::not_found, "source '" + impl_->info.source +
                                   "' has no tokenizer files (tokenizer.json, tokenizer.model or spiece.model)");
  }
  return *impl_->tokenizer;
}

std::vector<int64_t> Session::eos_token_ids() {
  impl_->load_text();
  return impl_->generation.eos_token_ids;
}

TensorMap Session::encode_texts(const std::vector<std::string>& texts, bool pad_left) {
  const Tokenizer& tok = tokenizer();
  if (texts.empty()) fail(ErrorCode::invalid_argument, "no text to encode");
  std::vector<std::vector<int64_t>> rows;
  size_t width = 0;
  for (const auto& t : texts) {
    rows.push_back(tok.encode(t, true));
    if (rows.back().empty()) fail(ErrorCode::invalid_argument, "text encodes to no tokens");
    width = std::max(width, rows.back().size());
  }
  const auto n = static_cast<int64_t>(rows.size()), w = static_cast<int64_t>(width);
  Tensor ids = Tensor::empty(DType::I64, {n, w}), mask = Tensor::empty(DType::I64, {n, w});
  const int64_t pad = impl_->pad_id();
  for (int64_t r = 0; r < n; ++r) {
    const auto& row = rows[static_cast<size_t>(r)];
    const int64_t off = pad_left ? w - static_cast<int64_t>(row.size()) : 0;
    for (int64_t c = 0; c < w; ++c) {
      const int64_t k = c - off;
      const bool real = k >= 0 && k < static_cast<int64_t>(row.size());
      ids.i64()[r * w + c] = real ? row[static_cast<size_t>(k)] : pad;
      mask.i64()[r * w + c] = real ? 1 : 0;
    }
  }
  return {{"input_ids", ids}, {"attention_mask", mask}};
}

TextGeneration Session::generate_text(const std::vector<std::string>& prompts, const GenerateOptions& options) {
  const TensorMap inputs = encode_texts(prompts, true);
  std::lock_guard lock(impl_->run_mutex);
  if (!impl_->model->decodes())
    fail(ErrorCode::unsupported, "plugin '" + impl_->info.plugin + "' predates runtime-driven decoding (ABI 1.0)");
  const std::vector<int64_t> eos =
      options.eos_token_ids.empty() ? impl_->generation.eos_token_ids : options.eos_token_ids;
  GenerationRun run =
      run_generation(*impl_->model, *impl_->cache, inputs, options, eos, impl_->pad_id(), impl_->tokenizer.get());
  return {std::move(run.texts), std::move(run.finish_reasons), std::move(run.tensors)};
}

std::future<TensorMap> Session::generate_async(TensorMap inputs, GenerateOptions options) {
  if (!impl_->model->decodes()) {  // generate's error, through the future
    return std::async(std::launch::async,
                      [this, in = std::move(inputs), o = std::move(options)] { return generate(in, o); });
  }
  Impl::Queued q;
  try {
    impl_->load_text();
  } catch (...) {
    q.promise.set_exception(std::current_exception());
    return q.promise.get_future();
  }
  q.eos = options.eos_token_ids.empty() ? impl_->generation.eos_token_ids : options.eos_token_ids;
  q.pad = impl_->pad_id();
  q.tokenizer = impl_->tokenizer.get();
  q.inputs = std::move(inputs);
  q.options = std::move(options);
  return impl_->enqueue(std::move(q));
}

std::future<TensorMap> Session::forward_async(TensorMap inputs, RunOptions options) {
  return std::async(std::launch::async, [this, in = std::move(inputs), options] { return forward(in, options); });
}

std::future<TensorMap> Session::generate_async(TensorMap inputs, int64_t max_new_tokens) {
  if (impl_->model->decodes()) {  // as generate(inputs, max_new_tokens): greedy, no stopping
    Impl::Queued q;
    q.inputs = std::move(inputs);
    q.options.max_new_tokens = max_new_tokens;
    q.options.stop_at_eos = false;
    q.drop_lengths = true;
    return impl_->enqueue(std::move(q));
  }
  return std::async(std::launch::async,
                    [this, in = std::move(inputs), max_new_tokens] { return generate(in, max_new_tokens); });
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& source, const OpenOptions& options) {
  const auto files = open_model_files(source, options);
  const TokenizerFiles tf = read_tokenizer_files(*files);
  if (tf.empty())
    fail(ErrorCode::not_found,
         "source '" + source + "' has no tokenizer files (tokenizer.json, tokenizer.model or spiece.model)");
  return Tokenizer::from_files(tf);
}

void Session::warm_up(const std::vector<std::string>& ids) { impl_->cache->warm(ids); }
void Session::clear_cache() {
  std::lock_guard lock(impl_->run_mutex);
  impl_->cache->clear();
}
CacheStats Session::cache_stats() const { return impl_->cache->stats(); }
void Session::reset_cache_stats() { impl_->cache->reset_stats(); }
const ModelInfo& Session::info() const { return impl_->info; }

}  // namespace surf
