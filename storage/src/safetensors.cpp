#include "surf/storage/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "file_io.h"
#include "surf/storage/json.h"
#include "surf/storage/torch_checkpoint.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace surf {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;

[[noreturn]] void corrupt(const std::string& file, const std::string& what) {
  fail(ErrorCode::corrupt, "safetensors file '" + file + "': " + what);
}
[[noreturn]] void corrupt(const fs::path& p, const std::string& what) { corrupt(p.string(), what); }

// Element sizes of the safetensors dtypes tensors here cannot hold; 0 for names that are no dtype.
size_t other_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> sizes{{"BOOL", 1},    {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1},
                                                   {"F8_E5M2", 1}, {"I16", 2}, {"U16", 2}, {"I32", 4},
                                                   {"U32", 4},     {"F64", 8}, {"U64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

}  // namespace

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::not_found, "cannot open '" + path.string() + "'");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<TensorInfo> parse_safetensors_header(std::string_view header, uint64_t data_size, const std::string& what,
                                                 std::map<std::string, std::string>* metadata,
                                                 std::map<std::string, std::string>* skipped) {
  const json j = parse_json(header, "safetensors file '" + what + "': header");
  if (!j.is_object()) corrupt(what, "header is not a JSON object");
  std::vector<TensorInfo> tensors, others;  // others: the skipped ones, still checked for overlaps
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object()) {
        for (auto m = it->begin(); m != it->end(); ++m) {
          if (m->is_string() && metadata) (*metadata)[m.key()] = m->get<std::string>();
        }
      }
      continue;
    }
    const json& e = *it;
    const std::string& name = it.key();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets")) {
      corrupt(what, "tensor '" + name + "' lacks dtype, shape or data_offsets");
    }
    TensorInfo info;
    info.name = name;
    if (!e["dtype"].is_string()) corrupt(what, "tensor '" + name + "' has a non-string dtype");
    const std::string dtype = e["dtype"].get<std::string>();
    size_t other_size = 0;  // set for dtypes tensors here cannot hold
    try {
      info.dtype = dtype_from_name(dtype);
    } catch (const Error& err) {
      // Other safetensors dtypes are listed as skipped so that plans can ignore such buffers.
      other_size = skipped ? other_dtype_size(dtype) : 0;
      if (other_size == 0) {
        fail(ErrorCode::unsupported, "safetensors file '" + what + "': tensor '" + name + "': " + err.what());
      }
    }
    if (other_size == 0 && is_quantized(info.dtype)) {  // GGML block formats live in chunk stores only
      fail(ErrorCode::unsupported, "safetensors file '" + what + "': tensor '" + name + "' has dtype " +
                                       dtype_name(info.dtype) + ", which safetensors does not define");
    }
    const json& shape = e["shape"];
    const json& offs = e["data_offsets"];
    if (!shape.is_array() || !offs.is_array() || offs.size() != 2) {
      corrupt(what, "tensor '" + name + "' has a malformed shape or data_offsets");
    }
    for (const auto& d : shape) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
        corrupt(what, "tensor '" + name + "' has a bad dimension (" + d.type_name() + ")");
      }
      info.shape.push_back(d.get<int64_t>());
    }
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned()) {
      corrupt(what, "tensor '" + name + "' has non-integer data_offsets");
    }
    const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      corrupt(what, "tensor '" + name + "' data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                        "] out of range (data is " + std::to_string(data_size) + " bytes)");
    }
    uint64_t want = 0;
    try {
      if (other_size == 0) {
        want = shape_bytes(info.shape, info.dtype);
      } else if (__builtin_mul_overflow(static_cast<uint64_t>(shape_numel(info.shape)), other_size, &want)) {
        fail(ErrorCode::invalid_argument, dtype + shape_string(info.shape) + " is too large");
      }
    } catch (const Error& err) {
      corrupt(what, "tensor '" + name + "': " + err.what());
    }
    if (end - begin != want) {
      corrupt(what, "tensor '" + name + "' holds " + std::to_string(end - begin) + " bytes but " + dtype +
                        shape_string(info.shape) + " needs " + std::to_string(want));
    }
    info.offset = begin;
    info.length = end - begin;
    if (other_size != 0) {
      (*skipped)[name] = dtype;
      others.push_back(std::move(info));
    } else {
      tensors.push_back(std::move(info));
    }
  }
  // Tensors may not share bytes: a writer that overlapped them made something else than it meant.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors) by_offset.push_back(&t);
  for (const auto& t : others) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    if (by_offset[i]->offset < prev.offset + prev.length) {
      corrupt(what, "tensors '" + prev.name + "' and '" + by_offset[i]->name + "' overlap in the data");
    }
  }
  return tensors;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const fs::path& path) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) {
    fail(errno == ENOENT ? ErrorCode::not_found : ErrorCode::io,
         "cannot open '" + path.string() + "': " + std::strerror(errno));
  }
  struct stat st {};
  ::fstat(f->fd_, &st);
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) corrupt(path, "file is " + std::to_string(file_size) + " bytes, too short for a header");
  uint64_t header_len = 0;
  unsigned char len_bytes[8];
  pread_all(f->fd_, len_bytes, 8, 0, path);
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8) {
    corrupt(path,
            "header length " + std::to_string(header_len) + " exceeds the file size " + std::to_string(file_size));
  }
  std::string header(header_len, '\0');
  pread_all(f->fd_, header.data(), header_len, 8, path);
  f->tensors_ =
      parse_safetensors_header(header, file_size - 8 - header_len, path.string(), &f->metadata_, &f->skipped_);
  for (size_t k = 0; k < f->tensors_.size(); ++k) {
    f->tensors_[k].offset += 8 + header_len;
    f->index_[f->tensors_[k].name] = k;
  }
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsFile::read(const TensorInfo& info, void* dst) const {
  pread_all(fd_, dst, info.length, info.offset, path_);
}

void TensorFile::add(TensorInfo info) {
  index_[info.name] = tensors_.size();
  tensors_.push_back(std::move(info));
}

const TensorInfo* TensorFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor TensorFile::load(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) fail(ErrorCode::not_found, "no tensor '" + name + "' in '" + path_.string() + "'");
  Tensor t = Tensor::empty(info->dtype, info->shape);
  read(*info, t.raw_mutable());
  return t;
}

TensorMap read_safetensors(const fs::path& path) {
  auto f = SafetensorsFile::open(path);
  TensorMap out;
  for (const auto& info : f->tensors()) out[info.name] = f->load(info.name);
  return out;
}

namespace {

std::string make_header(const std::vector<SafetensorsWriter::Entry>& entries,
                        const std::map<std::string, std::string>& metadata, uint64_t* total) {
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    if (is_quantized(e.dtype)) {
      fail(ErrorCode::invalid_argument, "safetensors cannot hold tensor '" + e.name + "' of dtype " +
                                            dtype_name(e.dtype) +
                                            " (a GGML block format): dequantize it first "
                                            "(Tensor::to_f32)");
    }
    const uint64_t len = shape_bytes(e.shape, e.dtype);
    h[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + len}}};
    offset += len;
  }
  *total = offset;
  std::string s = h.dump();
  while ((8 + s.size()) % 8 != 0) s.push_back(' ');  // 8-byte aligned data start, like HF
  return s;
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(const fs::path& path, std::vector<Entry> entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path) {
  std::string header = make_header(entries, metadata, &expected_);
  file_ = std::fopen(path.c_str(), "wb");
  if (file_ == nullptr) fail(ErrorCode::io, "cannot create '" + path.string() + "': " + std::strerror(errno));
  unsigned char len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
  std::fwrite(len, 1, 8, file_);
  std::fwrite(header.data(), 1, header.size(), file_);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_) std::fclose(file_);
}

void SafetensorsWriter::write(const void* data, size_t size) {
  if (std::fwrite(data, 1, size, file_) != size) {
    fail(ErrorCode::io, "cannot write '" + path_.string() + "': " + std::strerror(errno));
  }
  written_ += size;
}

void SafetensorsWriter::finish() {
  if (written_ != expected_) {
    fail(ErrorCode::internal, "safetensors writer: wrote " + std::to_string(written_) + " of " +
                                  std::to_string(expected_) + " bytes to '" + path_.string() + "'");
  }
  if (std::fclose(file_) != 0) {
    file_ = nullptr;
    fail(ErrorCode::io, "cannot close '" + path_.string() + "'");
  }
  file_ = nullptr;
}

void write_safetensors(const fs::path& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const auto& [name, t] : tensors) entries.push_back({name, t.dtype(), t.shape()});
  SafetensorsWriter w(path, entries, metadata);
  for (const auto& [name, t] : tensors) w.write(t.raw(), t.nbytes());
  w.finish();
}

namespace {

// Weight files in order of preference: safetensors first (no pickle to parse, pread in place).
struct WeightFormat {
  const char* index;   // sharded: the index naming each tensor's file
  const char* single;  // one file
  const char* format;
};
constexpr WeightFormat kFormats[] = {
    {"model.safetensors.index.json", "model.safetensors", "safetensors"},
    {"pytorch_model.bin.index.json", "pytorch_model.bin", "pytorch"},
};

std::shared_ptr<TensorFile> open_weights(const fs::path& path, const std::string& format) {
  if (format == "pytorch") return TorchCheckpointFile::open(path);
  return SafetensorsFile::open(path);
}

}  // namespace

bool HfCheckpoint::looks_like(const fs::path& dir) {
  if (!fs::is_regular_file(dir / "config.json")) return false;
  for (const auto& f : kFormats) {
    if (fs::is_regular_file(dir / f.index) || fs::is_regular_file(dir / f.single)) return true;
  }
  return false;
}

std::string HfCheckpoint::list_files(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  std::string out;
  for (size_t i = 0; i < names.size() && i < 12; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 12) out += ", ... (" + std::to_string(names.size()) + " in all)";
  return names.empty() ? "nothing" : out;
}

std::shared_ptr<HfCheckpoint> HfCheckpoint::open(const fs::path& dir) {
  auto ck = std::make_shared<HfCheckpoint>();
  ck->dir_ = dir;
  if (!fs::is_regular_file(dir / "config.json")) {
    fail(ErrorCode::not_found, "'" + dir.string() + "' has no config.json (not a HuggingFace checkpoint)");
  }
  ck->config_json_ = read_text_file(dir / "config.json");
  const WeightFormat* chosen = nullptr;
  bool sharded = false;
  for (const auto& f : kFormats) {
    if (fs::is_regular_file(dir / f.index) || fs::is_regular_file(dir / f.single)) {
      chosen = &f;
      sharded = fs::is_regular_file(dir / f.index);
      break;
    }
  }
  if (chosen == nullptr) {
    fail(ErrorCode::not_found, "'" + dir.string() +
                                   "' has config.json but no weights: neither model.safetensors[.index.json] "
                                   "nor pytorch_model.bin[.index.json] (it holds: " +
                                   list_files(dir) + ")");
  }
  ck->format_ = chosen->format;
  std::map<std::string, std::string> weight_map;  // tensor -> file
  if (sharded) {
    const std::string index = chosen->index;
    const json idx = parse_json(read_text_file(dir / index), index);
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object()) {
      fail(ErrorCode::corrupt, index + " has no weight_map object");
    }
    for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
      if (!it->is_string()) fail(ErrorCode::corrupt, "weight_map entry '" + it.key() + "' is not a file name");
      weight_map[it.key()] = it->get<std::string>();
    }
  }
  std::map<std::string, std::shared_ptr<TensorFile>> by_file;
  auto file = [&](const std::string& name) {
    if (name.find('/') != std::string::npos || name.find("..") != std::string::npos) {
      fail(ErrorCode::corrupt, "weight_map names file '" + name + "' outside the checkpoint directory");
    }
    auto& f = by_file[name];
    if (!f) {
      f = open_weights(dir / name, ck->format_);
      ck->files_.push_back(f);
    }
    return f.get();
  };
  if (weight_map.empty()) {
    TensorFile* f = file(chosen->single);
    for (const auto& info : f->tensors()) ck->tensors_[info.name] = {f, &info};
    ck->skipped_ = f->skipped();
  } else {
    for (const auto& [tensor, fname] : weight_map) {
      TensorFile* f = file(fname);
      if (auto s = f->skipped().find(tensor); s != f->skipped().end()) {
        ck->skipped_[tensor] = s->second;
        continue;
      }
      const TensorInfo* info = f->find(tensor);
      if (info == nullptr) {
        fail(ErrorCode::corrupt, "index lists tensor '" + tensor + "' in '" + fname + "' but the file lacks it");
      }
      ck->tensors_[tensor] = {f, info};
    }
  }
  return ck;
}

std::vector<std::string> HfCheckpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [n, _] : tensors_) names.push_back(n);
  for (const auto& [n, _] : skipped_) names.push_back(n);
  std::sort(names.begin(), names.end());
  return names;
}

HfCheckpoint::Located HfCheckpoint::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? Located{nullptr, nullptr} : it->second;
}

}  // namespace surf
