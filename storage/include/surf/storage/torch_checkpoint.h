// PyTorch checkpoints (pytorch_model.bin: torch.save's zip format since torch 1.6), read without
// Python and without running anything from the file. data.pkl is parsed by a restricted
// unpickler that knows only what a state dict of tensors needs: the opcodes of pickle protocols
// 2-4 that build dicts, tuples, strings and numbers, the persistent ids of tensor storages, and
// these globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2,
// torch._utils._rebuild_parameter and the storage types torch.{Float,Half,BFloat16,Long}Storage
// (plus torch.{Bool,Byte}Storage, whose tensors are listed as skipped: mask buffers of old
// checkpoints). Any other global or opcode is refused with an error naming it, before anything is
// built from it. Tensor bytes are read in place from the zip entries (libzip).
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "surf/storage/safetensors.h"

struct zip;

namespace surf {

// One tensor of a state dict as data.pkl describes it.
struct TorchTensorRecord {
  std::string name;
  std::string dtype;  // safetensors spelling: F32, F16, BF16, I64, BOOL, U8
  Shape shape;
  std::string storage_key;      // its storage is the zip entry "<archive>/data/<storage_key>"
  uint64_t storage_offset = 0;  // in elements
  uint64_t storage_numel = 0;   // elements of the whole storage
};

// Parses a state dict pickle (`what` names it in errors). Refusals are Error(unsupported)
// ("refused global 'posix.system'", "refused pickle opcode INST (0x69)"); malformed input is
// Error(corrupt). Non-contiguous tensors are refused (unsupported) with their strides.
std::vector<TorchTensorRecord> parse_torch_state_dict(std::string_view pickle, const std::string& what);

class TorchCheckpointFile final : public TensorFile {
 public:
  static std::shared_ptr<TorchCheckpointFile> open(const std::filesystem::path& path);
  ~TorchCheckpointFile() override;
  void read(const TensorInfo& info, void* dst) const override;

 private:
  TorchCheckpointFile() = default;
  ::zip* zip_ = nullptr;
  std::vector<uint64_t> entries_;      // zip entry of each tensor in tensors_
  std::vector<uint64_t> entry_sizes_;  // its uncompressed size
  mutable std::mutex mutex_;           // a libzip archive is not safe for concurrent reads
};

}  // namespace surf
