// STORE/manifest.json: what a chunk store holds and how to run it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "surf/plugin.h"

namespace surf {

// Version 2: tensors may have the GGML block dtypes (Q8_0, Q4_0); stores without them are written
// as version 1, which runtimes that predate the block formats read.
inline constexpr int kManifestFormatVersion = 2;
inline constexpr int kManifestFormatVersionUnquantized = 1;

struct ManifestTensor {
  std::string name;     // inside the component
  std::string hf_name;  // where it came from
  DType dtype = DType::F32;
  Shape shape;
};

struct ManifestComponent {
  std::string id;
  ComponentRole role = ComponentRole::streamed;
  std::string key;         // storage key of the chunk, "chunks/<id>.msgpack"
  uint64_t bytes = 0;      // chunk size as stored
  uint64_t raw_bytes = 0;  // tensor bytes before compression
  std::string checksum;    // of the whole chunk object
  std::vector<ManifestTensor> tensors;
};

// A file copied from the checkpoint beside the chunks (tokenizer files, generation_config.json),
// stored at file_key(name).
struct ManifestFile {
  std::string name;  // as in the checkpoint: [A-Za-z0-9_.-]+
  uint64_t bytes = 0;
  std::string checksum;  // as chunks' (checksum_of)
};

struct Manifest {
  int format_version = kManifestFormatVersion;
  std::string architecture;  // plugin name that chunked it
  std::string model_type;
  std::string config_json;  // the HF config, verbatim
  std::string compression = "none";
  std::string dtype = "keep";  // what the chunker was asked for: keep | f32 | bf16 | f16 | q8_0 | q4_0
  std::vector<ManifestComponent> components;
  std::vector<std::string> execution_order;
  std::vector<ManifestFile> files;  // absent in stores made before files travelled: empty

  const ManifestComponent* find(const std::string& id) const;
  const ManifestFile* find_file(const std::string& name) const;
  std::string to_json() const;
  static Manifest from_json(const std::string& text);  // Error(corrupt/unsupported) on bad input
};

// Component ids (and served model names) become file names: [A-Za-z0-9_.-]+, at most 200
// characters, no "..". validate_component_id throws Error(invalid_argument) otherwise.
bool is_valid_component_id(std::string_view id);
void validate_component_id(const std::string& id);
std::string chunk_key(const std::string& component_id);
std::string file_key(const std::string& file_name);  // "files/<name>"

}  // namespace surf
