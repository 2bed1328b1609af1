#include "transport/wire.h"

#include "surf/storage/msgpack_util.h"

namespace surf::wire {

namespace {
using Packer = msgpack::packer<mp::BufferWriter>;

void begin(ByteBuffer& out, Packer& pk, uint32_t fields, uint64_t id, std::string_view op) {
  out.clear();
  pk.pack_map(fields);
  pk.pack(std::string_view("id"));
  pk.pack(id);
  pk.pack(std::string_view("op"));
  pk.pack(op);
}
}  // namespace

const char* code_for(ErrorCode code) {
  switch (code) {
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::invalid_argument: return "bad_request";
    case ErrorCode::unauthorized: return "unauthorized";
    case ErrorCode::too_large: return "too_large";
    case ErrorCode::unsupported: return "unsupported_version";
    default: return "internal";
  }
}

ErrorCode error_from_code(std::string_view c) {
  if (c == "not_found") return ErrorCode::not_found;
  if (c == "bad_request") return ErrorCode::invalid_argument;
  if (c == "unauthorized") return ErrorCode::unauthorized;
  if (c == "too_large") return ErrorCode::too_large;
  if (c == "unsupported_version") return ErrorCode::unsupported;
  return ErrorCode::internal;
}

void encode_hello(ByteBuffer& out, uint64_t id, std::string_view token) {
  mp::BufferWriter w{out};
  Packer pk(w);
  begin(out, pk, token.empty() ? 3 : 4, id, "hello");
  pk.pack(std::string_view("version"));
  pk.pack(kProtocolVersion);
  if (!token.empty()) {
    pk.pack(std::string_view("token"));
    pk.pack(token);
  }
}

void encode_list_models(ByteBuffer& out, uint64_t id) {
  mp::BufferWriter w{out};
  Packer pk(w);
  begin(out, pk, 2, id, "list_models");
}

void encode_get_manifest(ByteBuffer& out, uint64_t id, std::string_view model) {
  mp::BufferWriter w{out};
  Packer pk(w);
  begin(out, pk, 3, id, "get_manifest");
  pk.pack(std::string_view("model"));
  pk.pack(model);
}

void encode_get_chunk(ByteBuffer& out, uint64_t id, std::string_view model, std::string_view component) {
  mp::BufferWriter w{out};
  Packer pk(w);
  begin(out, pk, 4, id, "get_chunk");
  pk.pack(std::string_view("model"));
  pk.pack(model);
  pk.pack(std::string_view("component"));
  pk.pack(component);
}

void encode_error(ByteBuffer& out, uint64_t id, std::string_view code, std::string_view message) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  pk.pack_map(3);
  pk.pack(std::string_view("id"));
  pk.pack(id);
  pk.pack(std::string_view("ok"));
  pk.pack(false);
  pk.pack(std::string_view("error"));
  pk.pack_map(2);
  pk.pack(std::string_view("code"));
  pk.pack(code);
  pk.pack(std::string_view("message"));
  pk.pack(message);
}

void encode_chunk_header(ByteBuffer& out, uint64_t id, std::string_view model, std::string_view component,
                         std::string_view checksum, uint32_t chunk_size) {
  out.clear();
  mp::BufferWriter w{out};
  Packer pk(w);
  pk.pack_map(7);
  pk.pack(std::string_view("id"));
  pk.pack(id);
  pk.pack(std::string_view("ok"));
  pk.pack(true);
  pk.pack(std::string_view("model"));
  pk.pack(model);
  pk.pack(std::string_view("component"));
  pk.pack(component);
  pk.pack(std::string_view("checksum"));
  pk.pack(checksum);
  mp::pack_alignment_pad(pk, out, 5 + 5);  // "data" fixstr + bin32 header
  pk.pack(std::string_view("data"));
  mp::append_bin32_header(out, chunk_size);
}

}  // namespace surf::wire
