#include "text/model_files.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "surf/error.h"
#include "surf/storage/buffer.h"
#include "surf/storage/chunk.h"

namespace fs = std::filesystem;

namespace surf {

namespace {

class DirectoryFiles final : public ModelFiles {
 public:
  explicit DirectoryFiles(std::string dir) : dir_(std::move(dir)) {}
  std::optional<std::string> read(const std::string& name) override {
    const fs::path p = fs::path(dir_) / name;
    if (!fs::is_regular_file(p)) return std::nullopt;
    std::ifstream in(p, std::ios::binary);
    if (!in) fail(ErrorCode::io, "cannot read '" + p.string() + "'");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string dir_;
};

class StoreFiles final : public ModelFiles {
 public:
  StoreFiles(std::shared_ptr<StorageBackend> backend, Manifest manifest)
      : backend_(std::move(backend)), manifest_(std::move(manifest)) {}
  std::optional<std::string> read(const std::string& name) override {
    const ManifestFile* f = manifest_.find_file(name);
    if (f == nullptr) return std::nullopt;
    ByteBuffer buf;
    backend_->get(file_key(name), buf);
    if (buf.size() != f->bytes || checksum_of(buf.data(), buf.size()) != f->checksum) {
      fail(ErrorCode::corrupt,
           "file '" + name + "' in " + backend_->describe() + " does not match its manifest entry (size or checksum)");
    }
    return std::string(reinterpret_cast<const char*>(buf.data()), buf.size());
  }

 private:
  std::shared_ptr<StorageBackend> backend_;
  Manifest manifest_;
};

class NoFiles final : public ModelFiles {
 public:
  std::optional<std::string> read(const std::string&) override { return std::nullopt; }
};

// An id or a list of ids.
std::vector<int64_t> ids_of(const nlohmann::json& j) {
  std::vector<int64_t> out;
  if (j.is_number_integer()) out.push_back(j.get<int64_t>());
  if (j.is_array()) {
    for (const auto& v : j) {
      if (v.is_number_integer()) out.push_back(v.get<int64_t>());
    }
  }
  return out;
}

}  // namespace

std::unique_ptr<ModelFiles> directory_model_files(const std::string& dir) {
  return std::make_unique<DirectoryFiles>(dir);
}
std::unique_ptr<ModelFiles> no_model_files() { return std::make_unique<NoFiles>(); }
std::unique_ptr<ModelFiles> store_model_files(std::shared_ptr<StorageBackend> backend, Manifest manifest) {
  return std::make_unique<StoreFiles>(std::move(backend), std::move(manifest));
}

TokenizerFiles read_tokenizer_files(ModelFiles& files) {
  TokenizerFiles f;
  f.tokenizer_json = files.read("tokenizer.json").value_or("");
  f.tokenizer_config_json = files.read("tokenizer_config.json").value_or("");
  f.special_tokens_map_json = files.read("special_tokens_map.json").value_or("");
  if (f.tokenizer_json.empty()) {
    f.sentencepiece_model = files.read("tokenizer.model").value_or("");
    if (f.sentencepiece_model.empty()) f.sentencepiece_model = files.read("spiece.model").value_or("");
  }
  return f;
}

GenerationDefaults parse_generation_defaults(const std::string& config_json,
                                             const std::optional<std::string>& generation_config_json) {
  GenerationDefaults d;
  nlohmann::json config = nlohmann::json::object(), gen = nlohmann::json::object();
  try {
    if (!config_json.empty()) config = nlohmann::json::parse(config_json);
    if (generation_config_json) gen = nlohmann::json::parse(*generation_config_json);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::invalid_argument, std::string("generation_config.json / config.json: ") + e.what());
  }
  for (const auto* j : {&gen, &config}) {
    if (d.eos_token_ids.empty() && j->contains("eos_token_id")) d.eos_token_ids = ids_of((*j)["eos_token_id"]);
    if (!d.pad_token_id && j->contains("pad_token_id")) {
      const auto v = ids_of((*j)["pad_token_id"]);
      if (!v.empty()) d.pad_token_id = v[0];
    }
    if (!d.bos_token_id && j->contains("bos_token_id")) {
      const auto v = ids_of((*j)["bos_token_id"]);
      if (!v.empty()) d.bos_token_id = v[0];
    }
  }
  return d;
}

}  // namespace surf
