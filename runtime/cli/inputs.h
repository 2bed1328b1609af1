// Reads the input tensors of `surf run` / `surf generate`: a safetensors file whose id tensors may
// be I32 or I64 (ids become I64; float tensors load as the SDK reads them).
#pragma once

#include <filesystem>

#include "surf/tensor.h"

namespace surf::cli {

TensorMap read_input_tensors(const std::filesystem::path& path);

}  // namespace surf::cli
