// HuggingFace safetensors files and checkpoint directories (config.json, single or sharded).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "surf/tensor.h"

namespace surf {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t offset = 0;  // absolute byte offset in the file (parse_safetensors_header: from the data start)
  uint64_t length = 0;
};

// The tensors a safetensors header describes (offsets relative to the data, which is `data_size`
// bytes), validated: dtypes, shapes, sizes, bounds, no overlaps. Errors name `file`.
std::vector<TensorInfo> parse_safetensors_header(std::string_view header, uint64_t data_size, const std::string& file,
                                                std::map<std::string, std::string>* metadata = nullptr);

class SafetensorsFile {
 public:
  // Parses and validates the header: length, JSON, dtypes, offsets within the file, sizes that
  // match shapes. Errors (corrupt / unsupported) name the file and the tensor.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // pread of the tensor's bytes into dst (info.length bytes).
  void read(const TensorInfo& info, void* dst) const;
  Tensor load(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  int fd_ = -1;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a (small) safetensors file.
TensorMap read_safetensors(const std::filesystem::path& path);
void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Streams a large safetensors file: declare all tensors, then write their bytes in order.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
  };
  SafetensorsWriter(const std::filesystem::path& path, std::vector<Entry> entries,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  // Bytes of the next tensor, in declaration order (may be called in pieces).
  void write(const void* data, size_t size);
  void finish();

 private:
  std::FILE* file_ = nullptr;
  std::filesystem::path path_;
  uint64_t expected_ = 0, written_ = 0;
};

// A HuggingFace checkpoint directory: config.json plus model.safetensors or shards listed in
// model.safetensors.index.json.
class HfCheckpoint {
 public:
  static std::shared_ptr<HfCheckpoint> open(const std::filesystem::path& dir);
  static bool looks_like(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const std::string& config_json() const { return config_json_; }
  std::vector<std::string> tensor_names() const;
  struct Located {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  // nullptr file if the tensor is absent.
  Located find(const std::string& name) const;

 private:
  std::filesystem::path dir_;
  std::string config_json_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Located> tensors_;
};

std::string read_text_file(const std::filesystem::path& path);

}  // namespace surf
