#include "inputs.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "surf/error.h"

namespace surf::cli {

TensorMap read_input_tensors(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::not_found, "cannot read '" + path.string() + "'");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string where = path.string();  // quoted (built in place: GCC 12 warns falsely on "'" + s)
  where.insert(where.begin(), '\'');
  where.push_back('\'');
  if (bytes.size() < 8) fail(ErrorCode::corrupt, where + " is not a safetensors file (too short)");
  uint64_t header_len = 0;
  for (int k = 7; k >= 0; --k)
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes[static_cast<size_t>(k)]);
  if (header_len > bytes.size() - 8) fail(ErrorCode::corrupt, where + ": header length beyond the file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, header_len));
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::corrupt, where + ": header is not JSON: " + e.what());
  }
  const size_t data = 8 + header_len;
  TensorMap out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& t = it.value();
    const std::string dt = t.at("dtype").get<std::string>();
    const Shape shape = t.at("shape").get<Shape>();
    const auto offsets = t.at("data_offsets").get<std::vector<uint64_t>>();
    if (offsets.size() != 2 || offsets[0] > offsets[1] || data + offsets[1] > bytes.size()) {
      fail(ErrorCode::corrupt, where + ": tensor '" + it.key() + "' lies outside the file");
    }
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const char* src = bytes.data() + data + offsets[0];
    const uint64_t len = offsets[1] - offsets[0];
    if (dt == "I32") {
      if (len != static_cast<uint64_t>(n) * 4)
        fail(ErrorCode::corrupt, where + ": tensor '" + it.key() + "' size does not match its shape");
      Tensor x = Tensor::empty(DType::I64, shape);
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, src + i * 4, 4);
        x.i64()[i] = v;
      }
      out[it.key()] = x;
      continue;
    }
    const DType dtype = dtype_from_name(dt);
    if (len != static_cast<uint64_t>(n) * dtype_size(dtype)) {
      fail(ErrorCode::corrupt, where + ": tensor '" + it.key() + "' size does not match its shape");
    }
    Tensor x = Tensor::empty(dtype, shape);
    std::memcpy(x.raw_mutable(), src, len);
    out[it.key()] = x;
  }
  if (out.empty()) fail(ErrorCode::invalid_argument, where + " holds no tensors");
  return out;
}

}  // namespace surf::cli
