// The text side of a model as its source holds it: tokenizer files and generation_config.json,
// read by name from a checkpoint directory or a chunk store.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "surf/storage/backend.h"
#include "surf/storage/manifest.h"
#include "surf/tokenizer.h"

namespace surf {

class ModelFiles {
 public:
  virtual ~ModelFiles() = default;
  // The file's bytes, or nullopt when the source does not have it.
  virtual std::optional<std::string> read(const std::string& name) = 0;
};

// Files next to config.json in a HuggingFace checkpoint directory.
std::unique_ptr<ModelFiles> directory_model_files(const std::string& dir);
// The files a chunk store lists in its manifest (directory or S3), checked against the listed
// size and checksum (Error(corrupt) on a mismatch).
std::unique_ptr<ModelFiles> store_model_files(std::shared_ptr<StorageBackend> backend, Manifest manifest);
// A source that carries no files.
std::unique_ptr<ModelFiles> no_model_files();

// The tokenizer files of `files`; empty() when there are none.
TokenizerFiles read_tokenizer_files(ModelFiles& files);

// What generation needs from generation_config.json (if present) and config.json.
struct GenerationDefaults {
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id, bos_token_id;
};
GenerationDefaults parse_generation_defaults(const std::string& config_json,
                                             const std::optional<std::string>& generation_config_json);

}  // namespace surf
