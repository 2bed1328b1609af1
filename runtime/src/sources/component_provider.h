// Where the cache gets components from: a chunk store (any StorageBackend: a directory, S3), a
// HuggingFace checkpoint read in place, or a weight server. Providers return components already
// materialised for compute: f32/i64 tensors, float tensors of other dtypes converted once.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "surf/plugin.h"
#include "cache/buffer_pool.h"
#include "surf/storage/buffer.h"
#include "surf/storage/manifest.h"

namespace surf {

class LoadedComponent final : public Component {
 public:
  LoadedComponent(std::string id, std::vector<std::pair<std::string, Tensor>> tensors, uint64_t memory_bytes)
      : id_(std::move(id)), tensors_(std::move(tensors)), memory_bytes_(memory_bytes) {}
  const std::string& id() const override { return id_; }
  const Tensor* find(std::string_view name) const override {
    for (const auto& [n, t] : tensors_) {
      if (n == name) return &t;
    }
    return nullptr;
  }
  uint64_t memory_bytes() const { return memory_bytes_; }
  const std::vector<std::pair<std::string, Tensor>>& tensors() const { return tensors_; }

 private:
  std::string id_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
  uint64_t memory_bytes_;
};

struct RawTensor {
  std::string name;
  DType dtype;
  Shape shape;
  const std::byte* data;
  size_t length;
};

// f32/i64 tensors, large f16/bf16 matrices and Q8_0/Q4_0 tensors become views into `holder` (no
// copy; the SDK's matmuls take 16-bit and quantized weights); small f16/bf16 tensors are converted to f32 into
// one pooled buffer. The result keeps `holder` alive only if some tensor references it.
std::shared_ptr<LoadedComponent> materialize(const std::string& id, const std::vector<RawTensor>& raw,
                                             std::shared_ptr<const void> holder, size_t holder_bytes, BufferPool& pool);

// Decodes a chunk whose whole-object checksum the caller has verified and materialises it;
// `holder` owns the chunk bytes (tensors of plain chunks point into them).
std::shared_ptr<LoadedComponent> decode_into_component(const std::string& id, std::shared_ptr<const void> holder,
                                                       const std::byte* chunk, size_t size, BufferPool& pool);

struct FetchResult {
  std::shared_ptr<LoadedComponent> component;
  uint64_t bytes_fetched = 0;  // from the source (network, store)
  // The disk tier's part (sources/disk_tier.h): chunks read from it, their bytes, and files found
  // corrupt there (and fetched again).
  uint64_t disk_hits = 0, disk_bytes = 0, disk_corrupt = 0;
  // The verified chunk as it arrived, for the disk tier to keep; valid while chunk_holder lives.
  // Set by the chunk-store and weight-server providers; null otherwise.
  const std::byte* chunk = nullptr;
  size_t chunk_size = 0;
  std::shared_ptr<const void> chunk_holder{};
};

class ComponentProvider {
 public:
  virtual ~ComponentProvider() = default;
  virtual const Manifest& manifest() const = 0;
  virtual std::string describe() const = 0;
  // Thread-safe. Error(not_found) for an unknown component, Error(corrupt) for a bad chunk.
  virtual FetchResult fetch(const std::string& id) = 0;
  // A fetch ahead of use (the prefetcher's): a source with several servers spreads these.
  virtual FetchResult prefetch(const std::string& id) { return fetch(id); }
};

class StorageBackend;
std::unique_ptr<ComponentProvider> make_store_provider(std::shared_ptr<StorageBackend> backend,
                                                       std::shared_ptr<BufferPool> pool);

class HfCheckpoint;
// Resolution of a plan against a checkpoint: which HF tensor fills each component tensor.
struct ResolvedTensor {
  std::string name;
  std::string hf_name;
};
struct ResolvedComponent {
  const ComponentSpec* spec;
  std::vector<ResolvedTensor> tensors;
};
// Error(not_found) naming the first required tensor that is missing (and its component);
// warns about checkpoint tensors that no component claims and the plan does not ignore.
std::vector<ResolvedComponent> resolve_plan(const ComponentPlan& plan, const HfCheckpoint& ck);

std::unique_ptr<ComponentProvider> make_hf_provider(std::shared_ptr<HfCheckpoint> ck, const ComponentPlan& plan,
                                                    const std::string& model_type, const std::string& plugin_name,
                                                    std::shared_ptr<BufferPool> pool);

struct OpenOptions;
// ws[s]://host:port[/model]: a weight server (docs/protocol.md); several comma-separated URLs of
// servers of one model: a fleet (prefetches spread over them, failover when one dies).
// Components and the model's files (get_file) from the same servers.
class ModelFiles;
struct WsSource {
  std::shared_ptr<ComponentProvider> provider;
  std::shared_ptr<ModelFiles> files;
};
WsSource open_ws_source(const std::string& url, const OpenOptions& options, std::shared_ptr<BufferPool> pool);

std::unique_ptr<ComponentProvider> make_ws_provider(const std::string& url, const OpenOptions& options,
                                                    std::shared_ptr<BufferPool> pool);

}  // namespace surf
