#include "component_provider.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "surf/log.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/safetensors.h"

namespace surf {

BufferPool::BufferPool(size_t max_free) : state_(std::make_shared<State>()) { state_->max_free = max_free; }

std::shared_ptr<ByteBuffer> BufferPool::acquire(size_t size) {
  std::unique_ptr<ByteBuffer> buf;
  {
    std::lock_guard lock(state_->mutex);
    auto& free = state_->free;
    // Best fit among buffers big enough; else the biggest (it grows).
    auto best = free.end();
    for (auto it = free.begin(); it != free.end(); ++it) {
      if ((*it)->capacity() >= size && (best == free.end() || (*it)->capacity() < (*best)->capacity())) best = it;
    }
    if (best == free.end() && !free.empty()) {
      best = std::max_element(free.begin(), free.end(),
                              [](const auto& a, const auto& b) { return a->capacity() < b->capacity(); });
    }
    if (best != free.end()) {
      buf = std::move(*best);
      free.erase(best);
    }
  }
  if (!buf) buf = std::make_unique<ByteBuffer>();
  if (buf->capacity() < size) log_debug("buffer pool: new allocation of " + std::to_string(size) + " bytes (had " + std::to_string(buf->capacity()) + ")");
  buf->resize(size);
  std::weak_ptr<State> weak = state_;
  return std::shared_ptr<ByteBuffer>(buf.release(), [weak](ByteBuffer* b) {
    if (auto s = weak.lock()) {
      std::lock_guard lock(s->mutex);
      if (s->free.size() < s->max_free) {
        s->free.emplace_back(b);
        return;
      }
    }
    delete b;
  });
}

namespace {
// Matrices this large stay 16-bit in memory (the ops convert them panel by panel); smaller
// tensors (norms, biases, small tables) are converted to f32 once.
bool keep_16bit(const RawTensor& t) {
  return (t.dtype == DType::F16 || t.dtype == DType::BF16) && t.shape.size() >= 2 && t.length / 2 >= (1u << 16);
}
size_t converted_size(const RawTensor& t) { return (t.length * 2 + 63) / 64 * 64; }
}  // namespace

std::shared_ptr<LoadedComponent> materialize(const std::string& id, const std::vector<RawTensor>& raw,
                                             std::shared_ptr<const void> holder, size_t holder_bytes,
                                             BufferPool& pool) {
  size_t convert_bytes = 0;
  for (const auto& t : raw) {
    if ((t.dtype == DType::F16 || t.dtype == DType::BF16) && !keep_16bit(t)) convert_bytes += converted_size(t);
  }
  std::shared_ptr<ByteBuffer> converted;
  if (convert_bytes) converted = pool.acquire(convert_bytes);
  std::vector<std::pair<std::string, Tensor>> tensors;
  size_t at = 0;
  bool uses_holder = false;
  for (const auto& t : raw) {
    if ((t.dtype == DType::F16 || t.dtype == DType::BF16) && !keep_16bit(t)) {
      float* dst = reinterpret_cast<float*>(converted->data() + at);
      convert_to_f32(t.dtype, t.data, dst, t.length / 2);
      tensors.emplace_back(t.name, Tensor::view(DType::F32, t.shape, dst, converted));
      at += converted_size(t);
    } else {
      if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
        fail(ErrorCode::corrupt, "component '" + id + "': tensor '" + t.name + "' is misaligned");
      }
      tensors.emplace_back(t.name, Tensor::view(t.dtype, t.shape, t.data, holder));
      uses_holder = true;
    }
  }
  const uint64_t memory = (uses_holder ? holder_bytes : 0) + convert_bytes;
  return std::make_shared<LoadedComponent>(id, std::move(tensors), memory);
}

std::shared_ptr<LoadedComponent> decode_into_component(const std::string& id, std::shared_ptr<const void> holder,
                                                       const std::byte* chunk, size_t size, BufferPool& pool) {
  // Decompression needs a buffer of its own; plain chunks are used in place.
  auto scratch = chunk_is_compressed(chunk, size) ? pool.acquire(0) : std::make_shared<ByteBuffer>();
  DecodedChunk d = decode_chunk(chunk, size, id, *scratch, /*verify_checksum=*/false);
  std::vector<RawTensor> raw;
  for (const auto& t : d.tensors) raw.push_back({t.name, t.dtype, t.shape, t.data, t.length});
  if (d.compression == Compression::zstd) return materialize(id, raw, scratch, scratch->capacity(), pool);
  return materialize(id, raw, std::move(holder), size, pool);
}

namespace {

class StoreProvider final : public ComponentProvider {
 public:
  StoreProvider(std::shared_ptr<StorageBackend> backend, std::shared_ptr<BufferPool> pool)
      : backend_(std::move(backend)), pool_(std::move(pool)) {
    ByteBuffer text;
    try {
      backend_->get("manifest.json", text);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::not_found) {
        fail(ErrorCode::not_found, backend_->describe() + " is not a chunk store (no manifest.json: " + e.what() + ")");
      }
      throw;
    }
    manifest_ = Manifest::from_json(std::string(reinterpret_cast<const char*>(text.data()), text.size()));
  }

  const Manifest& manifest() const override { return manifest_; }
  std::string describe() const override { return backend_->describe(); }

  FetchResult fetch(const std::string& id) override {
    const ManifestComponent* c = manifest_.find(id);
    if (c == nullptr) fail(ErrorCode::not_found, "component '" + id + "' is not in the store " + describe());
    auto buf = pool_->acquire(0);
    StreamingChecksum sum;
    try {
      backend_->get_blocks(c->key, *buf, [&](const std::byte* data, size_t size) { sum.update(data, size); });
    } catch (const Error& e) {
      if (e.code() == ErrorCode::not_found) {
        fail(ErrorCode::not_found, "component '" + id + "': chunk missing from the store (" + e.what() + ")");
      }
      throw;
    }
    if (buf->size() != c->bytes) {
      fail(ErrorCode::corrupt, "component '" + id + "': chunk is " + std::to_string(buf->size()) +
                                   " bytes, the manifest says " + std::to_string(c->bytes));
    }
    if (sum.hex() != c->checksum) {
      fail(ErrorCode::corrupt, "component '" + id + "': checksum mismatch (manifest " + c->checksum +
                                   ", chunk " + sum.hex() + ")");
    }
    // Verified above against the manifest: decoding makes no second pass over the bytes.
    return {decode_into_component(id, buf, buf->data(), buf->size(), *pool_), buf->size()};
  }

 private:
  std::shared_ptr<StorageBackend> backend_;
  std::shared_ptr<BufferPool> pool_;
  Manifest manifest_;
};

class HfProvider final : public ComponentProvider {
 public:
  HfProvider(std::shared_ptr<HfCheckpoint> ck, const ComponentPlan& plan, const std::string& model_type,
             const std::string& plugin_name, std::shared_ptr<BufferPool> pool)
      : ck_(std::move(ck)), plan_(plan), pool_(std::move(pool)) {
    manifest_.architecture = plugin_name;
    manifest_.model_type = model_type;
    manifest_.config_json = ck_->config_json();
    manifest_.execution_order = plan_.execution_order;
    for (auto& rc : resolve_plan(plan_, *ck_)) {
      ManifestComponent mc;
      mc.id = rc.spec->id;
      mc.role = rc.spec->role;
      mc.key = "(in place)";
      for (const auto& t : rc.tensors) {
        auto loc = ck_->find(t.hf_name);
        mc.tensors.push_back({t.name, t.hf_name, loc.info->dtype, loc.info->shape});
        mc.raw_bytes += loc.info->length;
      }
      mc.bytes = mc.raw_bytes;
      manifest_.components.push_back(std::move(mc));
    }
  }

  const Manifest& manifest() const override { return manifest_; }
  std::string describe() const override { return "hf:" + ck_->dir().string(); }

  FetchResult fetch(const std::string& id) override {
    const ManifestComponent* c = manifest_.find(id);
    if (c == nullptr) fail(ErrorCode::not_found, "component '" + id + "' is not part of the model");
    size_t total = 0;
    for (const auto& t : c->tensors) total += (ck_->find(t.hf_name).info->length + 63) / 64 * 64;
    auto buf = pool_->acquire(total);
    std::vector<RawTensor> raw;
    size_t at = 0;
    for (const auto& t : c->tensors) {
      auto loc = ck_->find(t.hf_name);
      loc.file->read(*loc.info, buf->data() + at);
      raw.push_back({t.name, loc.info->dtype, loc.info->shape, buf->data() + at, loc.info->length});
      at += (loc.info->length + 63) / 64 * 64;
    }
    return {materialize(id, raw, buf, buf->capacity(), *pool_), c->raw_bytes};
  }

 private:
  std::shared_ptr<HfCheckpoint> ck_;
  ComponentPlan plan_;
  std::shared_ptr<BufferPool> pool_;
  Manifest manifest_;
};

}  // namespace

std::vector<ResolvedComponent> resolve_plan(const ComponentPlan& plan, const HfCheckpoint& ck) {
  std::vector<ResolvedComponent> out;
  std::map<std::string, bool> claimed;
  for (const auto& spec : plan.components) {
    validate_component_id(spec.id);
    ResolvedComponent rc{&spec, {}};
    for (const auto& t : spec.tensors) {
      std::string found;
      for (const auto& cand : t.sources) {
        if (ck.find(cand).file != nullptr) {
          found = cand;
          break;
        }
      }
      if (found.empty()) {
        if (!t.required) continue;
        std::string names;
        for (const auto& cand : t.sources) names += (names.empty() ? "'" : " or '") + cand + "'";
        fail(ErrorCode::not_found, "checkpoint " + ck.dir().string() + " lacks tensor " + names +
                                       " (component '" + spec.id + "', tensor '" + t.name + "')");
      }
      claimed[found] = true;
      rc.tensors.push_back({t.name, found});
    }
    out.push_back(std::move(rc));
  }
  std::vector<std::string> unclaimed;
  for (const auto& name : ck.tensor_names()) {
    if (claimed.count(name)) continue;
    bool ignored = false;
    for (const auto& s : plan.ignored_suffixes) {
      if (name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) ignored = true;
    }
    for (const auto& p : plan.ignored_prefixes) {
      if (name.rfind(p, 0) == 0) ignored = true;
    }
    if (!ignored) unclaimed.push_back(name);
  }
  if (!unclaimed.empty()) {
    std::string list;
    for (size_t i = 0; i < unclaimed.size() && i < 5; ++i) list += (i ? ", " : "") + unclaimed[i];
    log_warn(std::to_string(unclaimed.size()) + " checkpoint tensor(s) not used by the model: " + list +
             (unclaimed.size() > 5 ? ", ..." : ""));
  }
  return out;
}

std::unique_ptr<ComponentProvider> make_store_provider(std::shared_ptr<StorageBackend> backend,
                                                       std::shared_ptr<BufferPool> pool) {
  return std::make_unique<StoreProvider>(std::move(backend), std::move(pool));
}

std::unique_ptr<ComponentProvider> make_hf_provider(std::shared_ptr<HfCheckpoint> ck, const ComponentPlan& plan,
                                                    const std::string& model_type, const std::string& plugin_name,
                                                    std::shared_ptr<BufferPool> pool) {
  return std::make_unique<HfProvider>(std::move(ck), plan, model_type, plugin_name, std::move(pool));
}

}  // namespace surf
