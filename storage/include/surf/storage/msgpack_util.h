// msgpack helpers shared by the chunk codec and the wire protocol. Include only from .cpp files:
// msgpack stays out of public headers.
#pragma once

#include <algorithm>
#include <msgpack.hpp>
#include <string_view>

#include "surf/storage/buffer.h"

namespace surf::mp {

// Appends packed bytes to a ByteBuffer.
struct BufferWriter {
  ByteBuffer& out;
  void write(const char* data, size_t size) { out.append(data, size); }
};

// Unpack callback: BIN fields reference the input buffer instead of being copied (msgpack-c
// copies them by default at ~0.4 GB/s).
inline bool reference_bins(msgpack::type::object_type type, std::size_t, void*) { return type == msgpack::type::BIN; }

// Limits for parsing msgpack from files and the network: no container may declare more elements
// than the message could hold (each takes at least a byte) nor more than `max_elements`, no
// string or bin more bytes than the message has, no ext, shallow nesting. msgpack-c then refuses
// (msgpack::size_overflow) before allocating: 5 bytes `dd ff ff ff ff` must not reserve 96 GiB.
inline msgpack::unpack_limit limits(size_t message_bytes, size_t max_elements = size_t{1} << 16,
                                    size_t max_depth = 16) {
  const size_t elements = std::min(message_bytes, max_elements);
  const size_t bytes = std::min<size_t>(message_bytes, 0xffffffffu);
  return msgpack::unpack_limit(elements, elements / 2 + 1, bytes, bytes, 0, max_depth);
}

// The value of key `name` in a map object, or nullptr.
inline const msgpack::object* field(const msgpack::object& map, std::string_view name) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == name) {
      return &kv.val;
    }
  }
  return nullptr;
}

// Packs the key "pad" and a zero bin so that, after `tail` more bytes, the buffer size is a
// multiple of `align`. The pad key and bin8 header take 4 + 2 bytes.
inline void pack_alignment_pad(msgpack::packer<BufferWriter>& pk, ByteBuffer& out, size_t tail, size_t align = 64) {
  size_t pad = 0;
  while ((out.size() + 4 + 2 + pad + tail) % align != 0) ++pad;
  static const char zeros[64] = {};
  pk.pack(std::string_view("pad"));
  pk.pack_bin(static_cast<uint32_t>(pad));
  pk.pack_bin_body(zeros, static_cast<uint32_t>(pad));
}

// Writes the length of a bin32 header (0xc6 + 4 bytes big-endian) that starts at `header`.
inline void set_bin32_length(std::byte* header, uint32_t size) {
  header[1] = std::byte(size >> 24);
  header[2] = std::byte(size >> 16);
  header[3] = std::byte(size >> 8);
  header[4] = std::byte(size);
}

// Appends a bin32 header for `size` bytes that the caller sends next.
inline void append_bin32_header(ByteBuffer& out, uint32_t size) {
  std::byte h[5] = {std::byte{0xc6}};
  set_bin32_length(h, size);
  out.append(h, 5);
}

}  // namespace surf::mp
