// The public tensor-file API (surf/tensor_io.h).
#include "surf/tensor_io.h"

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "surf/storage/safetensors.h"

namespace surf {

namespace {

struct Parsed {
  std::string bytes;
  nlohmann::json header;
  size_t data = 0;  // where the tensor data starts
  std::string where;
};

Parsed parse_file(const std::string& path) {
  Parsed p;
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::not_found, "cannot read '" + path + "'");
  p.bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  p.where = path;  // quoted (built in place: GCC 12 warns falsely on "'" + s)
  p.where.insert(p.where.begin(), '\'');
  p.where.push_back('\'');
  if (p.bytes.size() < 8) fail(ErrorCode::corrupt, p.where + " is not a safetensors file (too short)");
  uint64_t header_len = 0;
  for (int k = 7; k >= 0; --k)
    header_len = (header_len << 8) | static_cast<unsigned char>(p.bytes[static_cast<size_t>(k)]);
  if (header_len > p.bytes.size() - 8) fail(ErrorCode::corrupt, p.where + ": header length beyond the file");
  try {
    p.header = nlohmann::json::parse(p.bytes.substr(8, header_len));
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::corrupt, p.where + ": header is not JSON: " + e.what());
  }
  if (!p.header.is_object()) fail(ErrorCode::corrupt, p.where + ": header is not a JSON object");
  p.data = 8 + header_len;
  return p;
}

}  // namespace

TensorMap load_safetensors(const std::string& path) {
  const Parsed p = parse_file(path);
  TensorMap out;
  for (auto it = p.header.begin(); it != p.header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string what = p.where + ": tensor '" + it.key() + "'";
    std::string dt;
    Shape shape;
    std::vector<uint64_t> offsets;
    try {
      const auto& t = it.value();
      dt = t.at("dtype").get<std::string>();
      shape = t.at("shape").get<Shape>();
      offsets = t.at("data_offsets").get<std::vector<uint64_t>>();
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorCode::corrupt, what + ": malformed entry: " + e.what());
    }
    if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > p.bytes.size() - p.data) {
      fail(ErrorCode::corrupt, what + " lies outside the file");
    }
    const char* src = p.bytes.data() + p.data + offsets[0];
    const uint64_t len = offsets[1] - offsets[0];
    const bool i32 = dt == "I32";
    DType dtype = DType::I64;
    if (!i32) {
      try {
        dtype = dtype_from_name(dt);
      } catch (const Error& e) {
        fail(ErrorCode::unsupported, what + ": " + e.what());
      }
    }
    const int64_t n = shape_numel(shape);
    if (len != (i32 ? static_cast<uint64_t>(n) * 4 : static_cast<uint64_t>(shape_bytes(shape, dtype)))) {
      fail(ErrorCode::corrupt, what + ": size does not match its shape");
    }
    Tensor x = Tensor::empty(dtype, shape);
    if (i32) {
      for (int64_t i = 0; i < n; ++i) {
        int32_t v;
        std::memcpy(&v, src + i * 4, 4);
        x.i64()[i] = v;
      }
    } else if (len > 0) {
      std::memcpy(x.raw_mutable(), src, len);
    }
    out[it.key()] = std::move(x);
  }
  return out;
}

std::map<std::string, std::string> load_safetensors_metadata(const std::string& path) {
  const Parsed p = parse_file(path);
  std::map<std::string, std::string> out;
  if (auto it = p.header.find("__metadata__"); it != p.header.end() && it->is_object()) {
    for (auto m = it->begin(); m != it->end(); ++m) {
      if (m->is_string()) out[m.key()] = m->get<std::string>();
    }
  }
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const std::map<std::string, std::string>& metadata) {
  write_safetensors(path, tensors, metadata);
}

Tensor borrow_tensor(DType dtype, Shape shape, const void* data) {
  return borrow_tensor(dtype, std::move(shape), data, nullptr);
}

Tensor borrow_tensor(DType dtype, Shape shape, const void* data, std::shared_ptr<const void> owner) {
  if (data == nullptr && shape_numel(shape) > 0) fail(ErrorCode::invalid_argument, "borrow_tensor: data is null");
  return Tensor::view(dtype, std::move(shape), data, std::move(owner));
}

void copy_tensor_to(const Tensor& t, void* dst, size_t capacity) {
  const size_t n = t.nbytes();
  if (n > capacity) {
    fail(ErrorCode::invalid_argument, "copy_tensor_to: the tensor holds " + std::to_string(n) +
                                          " bytes, the destination " + std::to_string(capacity));
  }
  if (n > 0) std::memcpy(dst, t.raw(), n);
}

}  // namespace surf
