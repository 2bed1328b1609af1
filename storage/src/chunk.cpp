#include "surf/storage/chunk.h"

#include <xxhash.h>
#include <zstd.h>

#include <cstring>
#include "surf/storage/msgpack_util.h"

namespace surf::avx2 {
uint64_t xxh3_64(const void* data, size_t size);
void* xxh3_create();
void xxh3_free(void* state);
void xxh3_reset(void* state);
void xxh3_update(void* state, const void* data, size_t size);
uint64_t xxh3_digest(const void* state);
}  // namespace surf::avx2

namespace surf {

namespace {

constexpr const char* kMagic = "SURFCHNK";
constexpr size_t kAlign = 64;
constexpr uint64_t kMaxRawBytes = uint64_t{64} << 30;  // 16 x the largest (4 GiB) data blob

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

[[noreturn]] void corrupt(std::string_view component, const std::string& what) {
  fail(ErrorCode::corrupt,
       "chunk" + (component.empty() ? std::string() : " '" + std::string(component) + "'") + ": " + what);
}

}  // namespace

namespace {
std::string format_checksum(uint64_t h) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return std::string("xxh3:") + hex;
}
}  // namespace

const char* compression_name(Compression c) { return c == Compression::zstd ? "zstd" : "none"; }

Compression compression_from_name(std::string_view name) {
  if (name == "none" || name.empty()) return Compression::none;
  if (name == "zstd") return Compression::zstd;
  fail(ErrorCode::unsupported, "unsupported compression '" + std::string(name) + "' (none, zstd)");
}

namespace {
// The AVX2 build of XXH3 when the CPU has it, else the library's; same values either way.
struct Hasher {
  uint64_t (*hash)(const void*, size_t);
  void* (*create)();
  void (*destroy)(void*);
  void (*reset)(void*);
  void (*update)(void*, const void*, size_t);
  uint64_t (*digest)(const void*);
};

const Hasher& hasher() {
  static const Hasher h =
      __builtin_cpu_supports("avx2")
          ? Hasher{avx2::xxh3_64,    avx2::xxh3_create, avx2::xxh3_free,
                   avx2::xxh3_reset, avx2::xxh3_update, avx2::xxh3_digest}
          : Hasher{[](const void* d, size_t n) -> uint64_t { return XXH3_64bits(d, n); },
                   []() -> void* { return XXH3_createState(); },
                   [](void* s) { XXH3_freeState(static_cast<XXH3_state_t*>(s)); },
                   [](void* s) { XXH3_64bits_reset(static_cast<XXH3_state_t*>(s)); },
                   [](void* s, const void* d, size_t n) { XXH3_64bits_update(static_cast<XXH3_state_t*>(s), d, n); },
                   [](const void* s) -> uint64_t { return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(s)); }};
  return h;
}
}  // namespace

std::string checksum_of(const void* data, size_t size) { return format_checksum(hasher().hash(data, size)); }

StreamingChecksum::StreamingChecksum() : state_(hasher().create()) {
  if (state_ == nullptr) throw std::bad_alloc();
  hasher().reset(state_);
}
StreamingChecksum::~StreamingChecksum() { hasher().destroy(state_); }
void StreamingChecksum::update(const void* data, size_t size) { hasher().update(state_, data, size); }
std::string StreamingChecksum::hex() const { return format_checksum(hasher().digest(state_)); }

void encode_chunk(const std::string& component, const std::vector<ChunkTensorIn>& tensors, Compression compression,
                  int zstd_level, ByteBuffer& out) {
  // Tensor offsets inside the blob are 64-byte aligned so decoded f32 data is aligned too.
  std::vector<size_t> offsets;
  size_t raw_size = 0;
  bool quantized = false;
  for (const auto& t : tensors) {
    size_t want = 0;
    try {
      want = shape_bytes(t.shape, t.dtype);
    } catch (const Error& e) {
      fail(ErrorCode::invalid_argument, "chunk '" + component + "': tensor '" + t.name + "': " + e.what());
    }
    quantized = quantized || is_quantized(t.dtype);
    if (want != t.length) {
      fail(ErrorCode::invalid_argument, "chunk '" + component + "': tensor '" + t.name + "' has " +
                                            std::to_string(t.length) + " bytes, shape needs " + std::to_string(want));
    }
    raw_size = align_up(raw_size);
    offsets.push_back(raw_size);
    raw_size += t.length;
  }
  out.clear();
  mp::BufferWriter w{out};
  msgpack::packer<mp::BufferWriter> pk(w);
  pk.pack_map(9);
  pk.pack(std::string("magic"));
  pk.pack(std::string(kMagic));
  pk.pack(std::string("format_version"));
  pk.pack(quantized ? kChunkFormatVersion : kChunkFormatVersionUnquantized);
  pk.pack(std::string("component"));
  pk.pack(component);
  pk.pack(std::string("compression"));
  pk.pack(std::string(compression_name(compression)));
  pk.pack(std::string("raw_size"));
  pk.pack(static_cast<uint64_t>(raw_size));
  pk.pack(std::string("tensors"));
  pk.pack_array(static_cast<uint32_t>(tensors.size()));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    pk.pack_map(5);
    pk.pack(std::string("name"));
    pk.pack(t.name);
    pk.pack(std::string("dtype"));
    pk.pack(std::string(dtype_name(t.dtype)));
    pk.pack(std::string("shape"));
    pk.pack(t.shape);
    pk.pack(std::string("offset"));
    pk.pack(static_cast<uint64_t>(offsets[i]));
    pk.pack(std::string("length"));
    pk.pack(static_cast<uint64_t>(t.length));
  }
  // Pad so the tensor bytes (after "data" (fixstr 5) and a bin32 header (5)) start 64-aligned.
  mp::pack_alignment_pad(pk, out, 5 + 5);
  pk.pack(std::string("data"));
  const size_t header_at = out.size();
  mp::append_bin32_header(out, 0);  // length patched once known
  const size_t blob_at = out.size();
  size_t blob_size = 0;
  auto fill_raw = [&](std::byte* dst) {
    size_t at = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (offsets[i] > at) std::memset(dst + at, 0, offsets[i] - at);
      std::memcpy(dst + offsets[i], tensors[i].data, tensors[i].length);
      at = offsets[i] + tensors[i].length;
    }
  };
  if (compression == Compression::none) {
    out.resize(blob_at + raw_size);
    fill_raw(out.data() + blob_at);
    blob_size = raw_size;
  } else {
    ByteBuffer raw(raw_size);
    fill_raw(raw.data());
    const size_t bound = ZSTD_compressBound(raw_size);
    out.resize(blob_at + bound);
    const size_t n = ZSTD_compress(out.data() + blob_at, bound, raw.data(), raw_size, zstd_level);
    if (ZSTD_isError(n)) fail(ErrorCode::internal, std::string("zstd: ") + ZSTD_getErrorName(n));
    blob_size = n;
    out.resize(blob_at + n);
  }
  if (blob_size > 0xffffffffu) {
    fail(ErrorCode::too_large, "chunk '" + component + "' is over 4 GiB; split the component");
  }
  mp::set_bin32_length(out.data() + header_at, static_cast<uint32_t>(blob_size));
  const std::string sum = checksum_of(out.data() + blob_at, blob_size);
  pk.pack(std::string("checksum"));
  pk.pack(sum);
}

ChunkLayout read_chunk_layout(const std::byte* data, size_t size, std::string_view expected) {
  msgpack::object_handle oh;
  std::size_t off = 0;
  try {
    oh = msgpack::unpack(reinterpret_cast<const char*>(data), size, off, mp::reference_bins, nullptr, mp::limits(size));
  } catch (const msgpack::insufficient_bytes&) {
    corrupt(expected, "truncated (" + std::to_string(size) + " bytes)");
  } catch (const std::exception& e) {
    corrupt(expected, std::string("not a valid msgpack chunk: ") + e.what());
  }
  if (off != size) corrupt(expected, std::to_string(size - off) + " trailing bytes after the chunk");
  const msgpack::object& root = oh.get();
  if (root.type != msgpack::type::MAP) corrupt(expected, "not a msgpack map");
  const msgpack::object *magic = nullptr, *version = nullptr, *component = nullptr, *comp = nullptr,
                        *raw_size = nullptr, *tensors = nullptr, *blob = nullptr, *checksum = nullptr;
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) continue;
    std::string_view k(kv.key.via.str.ptr, kv.key.via.str.size);
    if (k == "magic")
      magic = &kv.val;
    else if (k == "format_version")
      version = &kv.val;
    else if (k == "component")
      component = &kv.val;
    else if (k == "compression")
      comp = &kv.val;
    else if (k == "raw_size")
      raw_size = &kv.val;
    else if (k == "tensors")
      tensors = &kv.val;
    else if (k == "data")
      blob = &kv.val;
    else if (k == "checksum")
      checksum = &kv.val;
  }
  ChunkLayout out;
  try {
    if (!magic || magic->as<std::string>() != kMagic) corrupt(expected, "bad magic (not a surf chunk)");
    if (!version) corrupt(expected, "no format_version");
    const int v = version->as<int>();
    if (v > kChunkFormatVersion) {
      fail(ErrorCode::unsupported, "chunk '" + std::string(expected) + "' has format version " + std::to_string(v) +
                                       ", newer than this runtime's " + std::to_string(kChunkFormatVersion) +
                                       ": upgrade the runtime");
    }
    if (!component || !tensors || !blob || !checksum || !raw_size) corrupt(expected, "missing fields");
    out.component = component->as<std::string>();
    if (!expected.empty() && out.component != expected) {
      corrupt(expected, "holds component '" + out.component + "'");
    }
    out.compression = compression_from_name(comp ? comp->as<std::string>() : "none");
    if (blob->type != msgpack::type::BIN) corrupt(expected, "data is not a bin field");
    out.stored = reinterpret_cast<const std::byte*>(blob->via.bin.ptr);
    out.stored_size = blob->via.bin.size;
    out.checksum = checksum->as<std::string>();
    out.raw_size = raw_size->as<uint64_t>();
    if (out.compression == Compression::zstd) {
      // The frame must state its size (2^64-1 means "unknown"), match raw_size, and fit the
      // largest chunk we make: only then may anyone size a buffer by raw_size.
      const unsigned long long frame = ZSTD_getFrameContentSize(out.stored, out.stored_size);
      if (frame == ZSTD_CONTENTSIZE_UNKNOWN || frame == ZSTD_CONTENTSIZE_ERROR || frame != out.raw_size) {
        corrupt(out.component, "compressed frame size does not match raw_size");
      }
      if (out.raw_size > kMaxRawBytes)
        corrupt(out.component, "raw_size " + std::to_string(out.raw_size) + " is too large");
    } else if (out.raw_size != out.stored_size) {
      corrupt(out.component, "raw_size does not match the data size");
    }
    if (tensors->type != msgpack::type::ARRAY) corrupt(out.component, "tensors is not an array");
    for (uint32_t i = 0; i < tensors->via.array.size; ++i) {
      const auto& e = tensors->via.array.ptr[i];
      auto m = e.as<std::map<std::string, msgpack::object>>();
      ChunkLayout::Entry t;
      t.name = m.at("name").as<std::string>();
      t.dtype = dtype_from_name(m.at("dtype").as<std::string>());
      t.shape = m.at("shape").as<std::vector<int64_t>>();
      t.offset = m.at("offset").as<uint64_t>();
      t.length = m.at("length").as<uint64_t>();
      for (auto d : t.shape) {
        if (d < 0) corrupt(out.component, "tensor '" + t.name + "' has a negative dimension");
      }
      uint64_t want = 0;
      try {
        want = shape_bytes(t.shape, t.dtype);
      } catch (const Error& e) {
        corrupt(out.component, "tensor '" + t.name + "': " + e.what());
      }
      if (t.length != want) {
        corrupt(out.component, "tensor '" + t.name + "' length does not match its shape");
      }
      if (t.offset > out.raw_size || t.length > out.raw_size - t.offset) {
        corrupt(out.component, "tensor '" + t.name + "' lies outside the data");
      }
      out.tensors.push_back(std::move(t));
    }
  } catch (const msgpack::type_error&) {
    corrupt(expected, "a field has the wrong type");
  } catch (const std::out_of_range&) {
    corrupt(expected, "a tensor entry lacks a field");
  }
  return out;
}

DecodedChunk decode_chunk(const ChunkLayout& layout, ByteBuffer& scratch, bool verify_checksum) {
  if (verify_checksum) {
    const std::string got = checksum_of(layout.stored, layout.stored_size);
    if (layout.checksum != got) {
      corrupt(layout.component, "checksum mismatch (stored " + layout.checksum + ", computed " + got + ")");
    }
  }
  const std::byte* base = layout.stored;
  if (layout.compression == Compression::zstd) {
    const unsigned long long frame = ZSTD_getFrameContentSize(layout.stored, layout.stored_size);
    if (frame != layout.raw_size) corrupt(layout.component, "compressed frame size does not match raw_size");
    scratch.resize(layout.raw_size);
    const size_t n = ZSTD_decompress(scratch.data(), layout.raw_size, layout.stored, layout.stored_size);
    if (ZSTD_isError(n) || n != layout.raw_size) corrupt(layout.component, "zstd decompression failed");
    base = scratch.data();
  }
  DecodedChunk out;
  out.component = layout.component;
  out.compression = layout.compression;
  out.tensors.reserve(layout.tensors.size());
  for (const auto& t : layout.tensors) out.tensors.push_back({t.name, t.dtype, t.shape, base + t.offset, t.length});
  return out;
}

DecodedChunk decode_chunk(const std::byte* data, size_t size, std::string_view expected, ByteBuffer& scratch,
                          bool verify_checksum) {
  return decode_chunk(read_chunk_layout(data, size, expected), scratch, verify_checksum);
}

}  // namespace surf
