#include "sources/open_source.h"

#include <filesystem>

#include "sources/disk_tier.h"
#include "sources/store_backend.h"
#include "surf/storage/buffer.h"
#include "surf/storage/manifest.h"
#include "surf/runtime.h"
#include "surf/storage/safetensors.h"

namespace fs = std::filesystem;

namespace surf {

namespace {

Manifest read_manifest(StorageBackend& backend) {
  ByteBuffer buf;
  backend.get("manifest.json", buf);
  return Manifest::from_json(std::string(reinterpret_cast<const char*>(buf.data()), buf.size()));
}

// Network sources read the disk tier first when there is one.
std::shared_ptr<ComponentProvider> with_disk_tier(std::shared_ptr<ComponentProvider> p, const OpenOptions& options,
                                                  const std::shared_ptr<BufferPool>& pool) {
  if (options.disk_cache_dir.empty()) return p;
  auto tier = std::make_shared<DiskTier>(options.disk_cache_dir, options.disk_cache_bytes);
  return make_disk_tier_provider(std::move(p), std::move(tier), pool);
}

}  // namespace

std::shared_ptr<ModelFiles> open_model_files(const std::string& source, const OpenOptions& options) {
  if (source.rfind("ws://", 0) == 0 || source.rfind("wss://", 0) == 0) {
    return open_ws_source(source, options, std::make_shared<BufferPool>(1)).files;
  }
  if (is_s3_url(source)) {
    auto backend = open_store_backend(source, false, options.ca_file);
    return store_model_files(backend, read_manifest(*backend));
  }
  const fs::path path(source);
  if (!fs::is_directory(path)) fail(ErrorCode::not_found, "source '" + source + "' does not exist");
  if (fs::is_regular_file(path / "manifest.json")) {
    auto backend = open_store_backend(source, false);
    return store_model_files(backend, read_manifest(*backend));
  }
  return directory_model_files(source);
}

SourceDescription open_source(const std::string& source, const OpenOptions& options, PluginRegistry& registry,
                              std::shared_ptr<BufferPool> pool) {
  SourceDescription d;
  if (source.rfind("ws://", 0) == 0 || source.rfind("wss://", 0) == 0) {
    d.kind = "ws";
    WsSource ws = open_ws_source(source, options, pool);
    d.provider = with_disk_tier(std::move(ws.provider), options, pool);
    d.files = std::move(ws.files);
    d.plugin = registry.find(d.provider->manifest().model_type);
    return d;
  }
  if (is_s3_url(source)) {
    d.kind = "s3";
    auto backend = open_store_backend(source, false, options.ca_file);
    d.provider = with_disk_tier(make_store_provider(backend, pool), options, pool);
    d.files = store_model_files(backend, d.provider->manifest());
    d.plugin = registry.find(d.provider->manifest().model_type);
    return d;
  }
  const fs::path path(source);
  if (!fs::exists(path)) fail(ErrorCode::not_found, "source '" + source + "' does not exist");
  if (fs::is_regular_file(path / "manifest.json")) {
    d.kind = "store";
    auto backend = open_store_backend(source, false);
    d.provider = make_store_provider(backend, pool);
    d.files = store_model_files(backend, d.provider->manifest());
    d.plugin = registry.find(d.provider->manifest().model_type);
    return d;
  }
  if (fs::is_regular_file(path / "config.json")) {  // without weights, open says what it found
    d.kind = "hf";
    auto ck = HfCheckpoint::open(path);
    const ModelConfig config = ModelConfig::parse(ck->config_json());
    const std::string type = config.model_type();
    if (type.empty()) fail(ErrorCode::invalid_argument, "config.json in '" + source + "' has no model_type");
    d.plugin = registry.find(type);
    d.provider = make_hf_provider(ck, d.plugin->plan(config), type, d.plugin->name(), pool);
    d.files = directory_model_files(source);
    return d;
  }
  fail(ErrorCode::invalid_argument,
       "'" + source +
           "' is neither a chunk store (manifest.json) nor a HuggingFace checkpoint "
           "(config.json + model.safetensors[.index.json] or pytorch_model.bin[.index.json]); "
           "it holds: " +
           HfCheckpoint::list_files(path));
}

}  // namespace surf
