// Wire protocol v1 (docs/protocol.md): msgpack maps in binary WebSocket messages. This header and
// wire.cpp are the only code that reads or writes protocol messages: the client and the server
// exchange the typed requests and answers below, never bytes they lay out or look into.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "surf/error.h"
#include "surf/storage/buffer.h"

namespace surf::wire {

inline constexpr int kProtocolVersion = 1;

// Error codes on the wire ("not_found", "bad_request", ...) and their ErrorCode.
const char* code_for(ErrorCode code);
ErrorCode error_from_code(std::string_view wire_code);

// --- requests: {id, op, fields of the op} ---

struct Hello {
  int version = kProtocolVersion;  // a hello without one is a BadRequest
  std::string token;               // empty: none sent
};
struct ListModels {};
struct GetManifest {
  std::string model;
};
struct GetChunk {
  std::string model;
  std::string component;
};
// A file the manifest lists under `files` (tokenizer files, generation_config.json).
struct GetFile {
  std::string model;
  std::string name;
};
using RequestBody = std::variant<Hello, ListModels, GetManifest, GetChunk, GetFile>;

struct Request {
  uint64_t id = 0;
  RequestBody body;
};

// The op's name on the wire: "hello", "list_models", "get_manifest", "get_chunk", "get_file".
const char* op_name(const RequestBody& body);

void encode_request(ByteBuffer& out, const Request& request);

// A request is one msgpack map of at most this many nested containers and values (keys
// included): anything else is refused before it is unpacked (docs/protocol.md, "Limits").
inline constexpr size_t kMaxRequestDepth = 4;
inline constexpr size_t kMaxRequestValues = 256;
// An error answer's message is cut to this many bytes.
inline constexpr size_t kMaxErrorMessage = 1024;

// Text from a request, for an error message: single-quoted, at most `max_bytes` of it, every byte
// outside printable ASCII as \xHH (so the result is ASCII, valid UTF-8, whatever came in), and
// how long it was if cut.
std::string quote(std::string_view text, size_t max_bytes = 64);
// `text` with every byte that is not part of well-formed UTF-8 written as \xHH, cut after about
// `max_bytes`: what an error answer's message is made of.
std::string valid_utf8(std::string_view text, size_t max_bytes);

// A message that is not a valid request: answered with bad_request (id 0 if it had none).
struct BadRequest {
  uint64_t id = 0;
  std::string message;
};
// Missing string fields decode as empty strings (the handlers reject empty names).
std::variant<Request, BadRequest> decode_request(const std::byte* data, size_t size);

// --- answers: {id, ok, fields} or {id, ok: false, error: {code, message}} ---

struct ErrorAnswer {
  ErrorCode code = ErrorCode::internal;  // an unknown wire code decodes as internal
  std::string message;
};
struct HelloAnswer {
  int version = kProtocolVersion;
  std::string server;
  uint64_t max_request_bytes = 0;
};
struct ModelSummary {
  std::string name;
  std::string model_type;
  uint64_t components = 0;
  uint64_t bytes = 0;
};
struct ListModelsAnswer {
  std::vector<ModelSummary> models;
};
struct ManifestAnswer {
  std::string model;
  std::string manifest;  // the store's manifest.json, verbatim
};
// The chunk as stored travels as the last field, `data`, 64-byte aligned in the message.
struct ChunkAnswer {
  std::string model;
  std::string component;
  std::string checksum;
  const std::byte* data = nullptr;  // decoded: points into the received message
  size_t size = 0;
};
// A model file: `data` (last field) holds its bytes; `checksum` is the manifest's.
struct FileAnswer {
  std::string model;
  std::string name;
  std::string checksum;
  const std::byte* data = nullptr;  // encode: read from here; decoded: points into the message
  size_t size = 0;
};
using AnswerBody = std::variant<ErrorAnswer, HelloAnswer, ListModelsAnswer, ManifestAnswer, ChunkAnswer, FileAnswer>;

struct Answer {
  uint64_t id = 0;
  AnswerBody body;
};

void encode_answer(ByteBuffer& out, uint64_t id, const ErrorAnswer& answer);
void encode_answer(ByteBuffer& out, uint64_t id, const HelloAnswer& answer);
void encode_answer(ByteBuffer& out, uint64_t id, const ListModelsAnswer& answer);
void encode_answer(ByteBuffer& out, uint64_t id, const ManifestAnswer& answer);
void encode_answer(ByteBuffer& out, uint64_t id, const FileAnswer& answer);  // copies the file bytes
// A chunk answer is sent as this head and then `answer.size` bytes of chunk (the `data` bin's
// body, sent from the server's buffer without a copy; answer.data is not read here). The head ends
// with the bin32 header, padded (`pad`) so that the chunk starts 64-byte aligned.
void encode_chunk_answer_head(ByteBuffer& out, uint64_t id, const ChunkAnswer& answer);

// Which answer it is follows from its fields (error, data with name: a file, data: a chunk,
// manifest, models, version). Bin fields
// are referenced, not copied: the answer points into `data`, which must outlive it.
// Error(network) naming the problem if the message is not a well-formed answer.
Answer decode_answer(const std::byte* data, size_t size);

// Where a chunk answer's data lies, read from the head of a message still arriving (its map
// decoded field by field up to `data`), so the chunk can be checksummed while it streams in.
struct DataProbe {
  enum Status { need_more, found, not_a_chunk } status = need_more;
  size_t offset = 0;  // of the data bytes in the message
  size_t size = 0;
};
DataProbe probe_chunk_data(const std::byte* received, size_t size);

}  // namespace surf::wire
