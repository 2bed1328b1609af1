// HF checkpoint -> chunk store, one chunk per component of the plugin's plan.
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "sources/component_provider.h"
#include "plugins/plugin_registry.h"
#include "sources/store_backend.h"
#include "surf/log.h"
#include "surf/runtime.h"
#include "surf/storage/backend.h"
#include "surf/storage/chunk.h"
#include "surf/storage/safetensors.h"

namespace fs = std::filesystem;

namespace surf {

namespace {

std::optional<DType> target_dtype(const std::string& name) {
  if (name == "keep") return std::nullopt;
  DType d;
  try {
    d = dtype_from_name(name);
  } catch (const Error&) {
    d = DType::I64;
  }
  if (!is_float(d)) {
    fail(ErrorCode::invalid_argument, "--dtype " + name + " is not one of keep, f32, bf16, f16, q8_0, q4_0");
  }
  return d;
}

std::string read_whole_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) fail(ErrorCode::io, "cannot read '" + p.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The dtype a tensor is stored in. --dtype f32|bf16|f16 converts every float tensor. --dtype
// q8_0|q4_0 quantizes the nn.Linear weights the plan lists (2-D, `in` a multiple of 32: GGML blocks
// run along the reduction axis); every other tensor (embeddings, norms, biases, Conv1D weights)
// keeps the checkpoint's dtype.
DType stored_dtype(const std::optional<DType>& target, const TensorInfo& info, bool linear_weight) {
  if (!target || !is_float(info.dtype)) return info.dtype;
  if (!is_quantized(*target)) return *target;
  const bool blocks = info.shape.size() == 2 && info.shape[1] > 0 && info.shape[1] % dtype_block_elements(*target) == 0;
  return linear_weight && blocks ? *target : info.dtype;
}

}  // namespace

std::string chunk_checkpoint(const std::string& hf_dir, const std::string& out, const ChunkOptions& options) {
  const auto dtype = target_dtype(options.dtype);
  const Compression compression = compression_from_name(options.compression);
  auto ck = HfCheckpoint::open(hf_dir);
  const ModelConfig config = ModelConfig::parse(ck->config_json());
  const std::string type = config.model_type();
  if (type.empty()) fail(ErrorCode::invalid_argument, "config.json in '" + hf_dir + "' has no model_type");
  PluginRegistry registry(options.plugin_dirs);
  auto plugin = registry.find(type);
  const ComponentPlan plan = plugin->plan(config);
  const auto resolved = resolve_plan(plan, *ck);
  std::error_code ec;
  const bool made_dir = !is_s3_url(out) && !fs::exists(out, ec);
  // The subdirectories of a directory store this run makes (removed with what it wrote).
  std::vector<fs::path> made_subdirs;
  if (!is_s3_url(out)) {
    for (const char* sub : {"chunks", "files"}) {
      if (!fs::exists(fs::path(out) / sub, ec)) made_subdirs.push_back(fs::path(out) / sub);
    }
  }
  auto backend = open_store_backend(out, true);
  const std::set<std::string> linear(plan.linear_weights.begin(), plan.linear_weights.end());
  // An existing store is replaced only when asked: chunking into the wrong directory would
  // otherwise mix two models' chunks under one manifest.
  const std::vector<std::string> before = backend->list("");
  if (!before.empty() && !options.force) {
    fail(ErrorCode::invalid_argument,
         "output '" + out + "' is not empty (" + std::to_string(before.size()) + " files); give --force to replace it");
  }
  // From here the old store is visibly incomplete (no manifest) until the new one is complete.
  if (backend->exists("manifest.json")) backend->remove("manifest.json");
  std::set<std::string> written;
  auto put = [&](const std::string& key, const void* data, size_t size) {
    written.insert(key);
    backend->put(key, data, size);  // the filesystem backend writes a temporary name and renames
  };

  Manifest m;
  m.architecture = plugin->name();
  m.model_type = type;
  m.config_json = config.dump();
  m.compression = compression_name(compression);
  m.dtype = options.dtype;
  m.execution_order = plan.execution_order;
  ByteBuffer chunk, staging;
  uint64_t total_raw = 0, total_stored = 0, quantized = 0;
  size_t copied = 0;
  ChunkProgress progress;
  progress.components_total = resolved.size();
  for (const auto& rc : resolved) {
    for (const auto& t : rc.tensors) progress.bytes_total += ck->find(t.hf_name).info->length;
  }
  try {
    if (options.progress) options.progress(progress);
    for (const auto& rc : resolved) {
      if (options.cancelled && options.cancelled()) throw ChunkCancelled();
      ManifestComponent mc;
      mc.id = rc.spec->id;
      mc.role = rc.spec->role;
      mc.key = chunk_key(mc.id);
      // Stage every tensor (converted if asked) in one buffer, then encode.
      auto out_dtype_of = [&](const ResolvedTensor& t) {
        return stored_dtype(dtype, *ck->find(t.hf_name).info, linear.count(mc.id + "/" + t.name) > 0);
      };
      size_t need = 0;
      for (const auto& t : rc.tensors) {
        const TensorInfo& info = *ck->find(t.hf_name).info;
        need += shape_bytes(info.shape, out_dtype_of(t)) + 64;
        need += info.length + 64;  // room for the source bytes when converting
      }
      staging.resize(need);
      std::vector<ChunkTensorIn> ins;
      size_t at = 0;
      for (const auto& t : rc.tensors) {
        // Between tensors too: one component of a large model can take seconds.
        if (options.cancelled && options.cancelled()) throw ChunkCancelled();
        auto loc = ck->find(t.hf_name);
        const TensorInfo& info = *loc.info;
        const DType out_dtype = out_dtype_of(t);
        const size_t out_bytes = shape_bytes(info.shape, out_dtype);
        std::byte* src = staging.data() + at;
        loc.file->read(info, src);
        at += (info.length + 63) / 64 * 64;
        const size_t count = static_cast<size_t>(shape_numel(info.shape));
        std::byte* dst = src;
        if (out_dtype != info.dtype) {
          dst = staging.data() + at;
          std::vector<float> f32(count);
          convert_to_f32(info.dtype, src, f32.data(), count);
          convert_from_f32(out_dtype, f32.data(), dst, count);
          at += (out_bytes + 63) / 64 * 64;
        }
        quantized += is_quantized(out_dtype);
        progress.bytes_done += info.length;
        if (options.progress) options.progress(progress);
        ins.push_back({t.name, out_dtype, info.shape, dst, out_bytes});
        mc.tensors.push_back({t.name, t.hf_name, out_dtype, info.shape});
        mc.raw_bytes += out_bytes;
      }
      encode_chunk(mc.id, ins, compression, options.zstd_level, chunk);
      mc.bytes = chunk.size();
      mc.checksum = checksum_of(chunk.data(), chunk.size());
      put(mc.key, chunk.data(), chunk.size());
      total_raw += mc.raw_bytes;
      total_stored += mc.bytes;
      m.components.push_back(std::move(mc));
      ++progress.components_done;
      if (options.progress) options.progress(progress);
    }
    if (options.cancelled && options.cancelled()) throw ChunkCancelled();
    // The text side travels with the weights: tokenizer files and generation_config.json.
    for (const auto& name : tokenizer_file_names()) {
      const fs::path p = fs::path(hf_dir) / name;
      if (!fs::is_regular_file(p)) continue;
      const std::string bytes = read_whole_file(p);
      put(file_key(name), bytes.data(), bytes.size());
      m.files.push_back({name, bytes.size(), checksum_of(bytes.data(), bytes.size())});
      ++copied;
    }
    // The manifest goes last: a store without one is visibly incomplete.
    const std::string text = m.to_json();
    put("manifest.json", text.data(), text.size());
  } catch (...) {
    // No partial store is left behind: what this run wrote goes, and the directory if it made it.
    for (const auto& key : written) {
      try {
        backend->remove(key);
      } catch (...) {
      }
    }
    if (made_dir) {
      fs::remove_all(out, ec);
    } else {
      for (const auto& d : made_subdirs) fs::remove(d, ec);  // only if empty
    }
    throw;
  }
  // Replaced with --force: what the old store had that the new one does not write goes too.
  for (const auto& key : before) {
    if (!written.count(key)) backend->remove(key);
  }
  std::ostringstream s;
  s << "chunked " << hf_dir << " (" << type << ", plugin " << plugin->name() << ") into " << backend->describe() << ": "
    << m.components.size() << " components, " << total_raw << " tensor bytes, " << total_stored << " bytes stored ("
    << m.compression << ")";
  if (copied > 0) {
    s << "; files:";
    for (const auto& f : m.files) s << " " << f.name;
  }
  if (dtype && is_quantized(*dtype)) {
    s << "; " << quantized << " linear weights as " << dtype_name(*dtype) << ", other tensors as in the checkpoint";
  }
  return s.str();
}

}  // namespace surf
