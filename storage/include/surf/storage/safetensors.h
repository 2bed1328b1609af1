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
  uint64_t offset = 0;  // where its bytes start: in the file (safetensors; parse_safetensors_header: from
                        // the data start), in its storage record (PyTorch zip)
  uint64_t length = 0;
};

// The tensors a safetensors header describes (offsets relative to the data, which is `data_size`
// bytes), validated: dtypes, shapes, sizes, bounds, no overlaps. Errors name `file`. Tensors in
// safetensors dtypes that tensors here cannot hold (BOOL, U8, F64, ...) go to `skipped` (name ->
// dtype) when given, else they are Error(unsupported).
std::vector<TensorInfo> parse_safetensors_header(std::string_view header, uint64_t data_size, const std::string& file,
                                                 std::map<std::string, std::string>* metadata = nullptr,
                                                 std::map<std::string, std::string>* skipped = nullptr);

// A file of named tensors that checkpoints are made of: safetensors or a PyTorch zip checkpoint
// (torch_checkpoint.h). Readers fill the table; read() is safe to call from several threads.
class TensorFile {
 public:
  virtual ~TensorFile() = default;
  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  // Tensors stored in a dtype tensors cannot hold here (BOOL masks, U8, F64, ...): name -> dtype
  // name. Old checkpoints keep such buffers (GPT-NeoX's attention.bias); plans ignore them, and a
  // plan that needs one gets an error naming its dtype.
  const std::map<std::string, std::string>& skipped() const { return skipped_; }
  // The tensor's bytes into dst (info.length bytes).
  virtual void read(const TensorInfo& info, void* dst) const = 0;
  Tensor load(const std::string& name) const;

 protected:
  void add(TensorInfo info);
  std::filesystem::path path_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> skipped_;
};

class SafetensorsFile final : public TensorFile {
 public:
  // Parses and validates the header: length, JSON, dtypes, offsets within the file, sizes that
  // match shapes. Errors (corrupt / unsupported) name the file and the tensor.
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile() override;

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // pread of the tensor's bytes into dst (info.length bytes).
  void read(const TensorInfo& info, void* dst) const override;

 private:
  SafetensorsFile() = default;
  int fd_ = -1;
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
// model.safetensors.index.json, or else PyTorch's pytorch_model.bin or shards listed in
// pytorch_model.bin.index.json (safetensors preferred when both exist).
class HfCheckpoint {
 public:
  // Errors name what the directory holds when it has no weights in either format.
  static std::shared_ptr<HfCheckpoint> open(const std::filesystem::path& dir);
  static bool looks_like(const std::filesystem::path& dir);
  // "config.json, model.gguf, ..." (at most a dozen names): what a directory holds, for messages.
  static std::string list_files(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  const std::string& config_json() const { return config_json_; }
  const std::string& format() const { return format_; }  // "safetensors" or "pytorch"
  // Every tensor name, those in skipped() included.
  std::vector<std::string> tensor_names() const;
  struct Located {
    const TensorFile* file;
    const TensorInfo* info;
  };
  // nullptr file if the tensor is absent (or skipped).
  Located find(const std::string& name) const;
  // name -> dtype of tensors whose dtype cannot be loaded (see TensorFile::skipped).
  const std::map<std::string, std::string>& skipped() const { return skipped_; }

 private:
  std::filesystem::path dir_;
  std::string config_json_;
  std::string format_;
  std::vector<std::shared_ptr<TensorFile>> files_;
  std::map<std::string, Located> tensors_;
  std::map<std::string, std::string> skipped_;
};

std::string read_text_file(const std::filesystem::path& path);

}  // namespace surf
