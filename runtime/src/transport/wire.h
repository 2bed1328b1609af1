// Wire protocol v1 (docs/protocol.md): msgpack maps in binary WebSocket messages.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "surf/error.h"
#include "surf/storage/buffer.h"

namespace surf::wire {

inline constexpr int kProtocolVersion = 1;

// Error codes on the wire and their mapping to ErrorCode.
const char* code_for(ErrorCode code);
ErrorCode error_from_code(std::string_view wire_code);

// Requests.
void encode_hello(ByteBuffer& out, uint64_t id, std::string_view token);
void encode_list_models(ByteBuffer& out, uint64_t id);
void encode_get_manifest(ByteBuffer& out, uint64_t id, std::string_view model);
void encode_get_chunk(ByteBuffer& out, uint64_t id, std::string_view model, std::string_view component);

// Answers.
void encode_error(ByteBuffer& out, uint64_t id, std::string_view code, std::string_view message);
// A chunk answer is this header followed by `chunk_size` bytes of chunk (the "data" bin body):
// the header ends with the bin32 header and is padded so the chunk starts 64-byte aligned.
void encode_chunk_header(ByteBuffer& out, uint64_t id, std::string_view model, std::string_view component,
                         std::string_view checksum, uint32_t chunk_size);

}  // namespace surf::wire
