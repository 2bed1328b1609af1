// The wire protocol's one codec: requests and answers round-trip, the bytes on the wire stay as
// docs/protocol.md describes them, and a chunk's data is found from the answer's decoded head.
#include <gtest/gtest.h>

#include <cstring>

#include "../test_util.h"
#include "transport/wire.h"

using namespace surf;

namespace {

wire::Request round_trip(const wire::Request& r) {
  ByteBuffer b;
  wire::encode_request(b, r);
  auto decoded = wire::decode_request(b.data(), b.size());
  EXPECT_TRUE(std::holds_alternative<wire::Request>(decoded));
  return std::get<wire::Request>(decoded);
}

wire::BadRequest bad(const std::string& bytes) {
  auto decoded = wire::decode_request(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
  EXPECT_TRUE(std::holds_alternative<wire::BadRequest>(decoded));
  return std::holds_alternative<wire::BadRequest>(decoded) ? std::get<wire::BadRequest>(decoded) : wire::BadRequest{};
}

std::string hex(const ByteBuffer& b) {
  std::string s;
  char two[3];
  for (size_t i = 0; i < b.size(); ++i) {
    std::snprintf(two, sizeof two, "%02x", static_cast<unsigned>(b.data()[i]));
    s += two;
  }
  return s;
}

// A chunk answer as the server sends it: the head, then the chunk bytes.
ByteBuffer chunk_message(uint64_t id, size_t chunk_size) {
  ByteBuffer m;
  wire::encode_chunk_answer_head(m, id, {"llama", "layers.0", "xxh3:0123456789abcdef", nullptr, chunk_size});
  std::vector<unsigned char> chunk(chunk_size);
  for (size_t i = 0; i < chunk_size; ++i) chunk[i] = static_cast<unsigned char>(i * 7);
  m.append(chunk.data(), chunk.size());
  return m;
}

}  // namespace

TEST(Wire, RequestsRoundTrip) {
  auto hello = round_trip({7, wire::Hello{wire::kProtocolVersion, "tok"}});
  EXPECT_EQ(hello.id, 7u);
  EXPECT_EQ(std::get<wire::Hello>(hello.body).token, "tok");
  EXPECT_EQ(std::get<wire::Hello>(hello.body).version, wire::kProtocolVersion);
  EXPECT_TRUE(std::holds_alternative<wire::ListModels>(round_trip({8, wire::ListModels{}}).body));
  EXPECT_EQ(std::get<wire::GetManifest>(round_trip({9, wire::GetManifest{"m"}}).body).model, "m");
  const auto chunk = std::get<wire::GetChunk>(round_trip({10, wire::GetChunk{"m", "layers.1"}}).body);
  EXPECT_EQ(chunk.model, "m");
  EXPECT_EQ(chunk.component, "layers.1");
  EXPECT_STREQ(wire::op_name(wire::RequestBody{wire::GetChunk{}}), "get_chunk");
}

TEST(Wire, RequestBytesAreTheDocumentedMaps) {
  ByteBuffer b;
  // {"id": 5, "op": "get_chunk", "model": "m", "component": "c"}
  wire::encode_request(b, {5, wire::GetChunk{"m", "c"}});
  EXPECT_EQ(hex(b), "84a2696405a26f70a96765745f6368756e6ba56d6f64656ca16da9636f6d706f6e656e74a163");
  // {"id": 1, "op": "hello", "version": 1}: no token key when there is none.
  wire::encode_request(b, {1, wire::Hello{}});
  EXPECT_EQ(hex(b), "83a2696401a26f70a568656c6c6fa776657273696f6e01");
}

TEST(Wire, MalformedRequestsAreBadRequestsWithTheirId) {
  EXPECT_EQ(bad("\xc1").message, "not a msgpack message");
  EXPECT_EQ(bad("\x01").message, "request must be a map with id, op and string fields");
  // {"id": 3, "op": 4}: op is not a string.
  const auto wrong_type = bad("\x82\xa2id\x03\xa2op\x04");
  EXPECT_EQ(wrong_type.id, 3u);
  // {"id": 4, "op": "drop"}
  const auto unknown = bad("\x82\xa2id\x04\xa2op\xa4" "drop");
  EXPECT_EQ(unknown.id, 4u);
  EXPECT_EQ(unknown.message, "unknown op 'drop'");
  // hello without a version decodes as version -1 (the server answers unsupported_version).
  auto decoded = wire::decode_request(reinterpret_cast<const std::byte*>("\x82\xa2id\x01\xa2op\xa5hello"), 15);
  EXPECT_EQ(std::get<wire::Hello>(std::get<wire::Request>(decoded).body).version, -1);
}

TEST(Wire, AnswersRoundTrip) {
  ByteBuffer b;
  wire::encode_answer(b, 3, wire::ErrorAnswer{ErrorCode::not_found, "no model 'x'"});
  auto a = wire::decode_answer(b.data(), b.size());
  EXPECT_EQ(a.id, 3u);
  EXPECT_EQ(std::get<wire::ErrorAnswer>(a.body).code, ErrorCode::not_found);
  EXPECT_EQ(std::get<wire::ErrorAnswer>(a.body).message, "no model 'x'");
  wire::encode_answer(b, 4, wire::HelloAnswer{1, "surf/x", 4096});
  a = wire::decode_answer(b.data(), b.size());
  EXPECT_EQ(std::get<wire::HelloAnswer>(a.body).max_request_bytes, 4096u);
  EXPECT_EQ(std::get<wire::HelloAnswer>(a.body).server, "surf/x");
  wire::encode_answer(b, 5, wire::ListModelsAnswer{{{"a", "llama", 7, 1000}, {"b", "t5", 9, 2000}}});
  a = wire::decode_answer(b.data(), b.size());
  const auto& models = std::get<wire::ListModelsAnswer>(a.body).models;
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[1].name, "b");
  EXPECT_EQ(models[1].model_type, "t5");
  EXPECT_EQ(models[1].components, 9u);
  EXPECT_EQ(models[1].bytes, 2000u);
  wire::encode_answer(b, 6, wire::ManifestAnswer{"a", "{\"x\": 1}"});
  a = wire::decode_answer(b.data(), b.size());
  EXPECT_EQ(std::get<wire::ManifestAnswer>(a.body).manifest, "{\"x\": 1}");
  // Every error code survives the trip; an unknown one is internal.
  for (ErrorCode c : {ErrorCode::invalid_argument, ErrorCode::unauthorized, ErrorCode::not_found, ErrorCode::too_large,
                      ErrorCode::unsupported, ErrorCode::internal}) {
    EXPECT_EQ(wire::error_from_code(wire::code_for(c)), c);
  }
  EXPECT_EQ(wire::error_from_code("gremlins"), ErrorCode::internal);
}

TEST(Wire, ChunkDataIsReferencedAlignedAndLast) {
  const ByteBuffer m = chunk_message(9, 1000);
  const auto a = wire::decode_answer(m.data(), m.size());
  const auto& c = std::get<wire::ChunkAnswer>(a.body);
  EXPECT_EQ(a.id, 9u);
  EXPECT_EQ(c.model, "llama");
  EXPECT_EQ(c.component, "layers.0");
  EXPECT_EQ(c.checksum, "xxh3:0123456789abcdef");
  EXPECT_EQ(c.size, 1000u);
  EXPECT_EQ(c.data + c.size, m.data() + m.size());           // the last field, in the message itself
  EXPECT_EQ(static_cast<size_t>(c.data - m.data()) % 64, 0u);  // 64-byte aligned from the message start
  EXPECT_EQ(static_cast<unsigned>(c.data[3]), 21u);
}

TEST(Wire, DataIsLocatedFromTheHeadWhileTheMessageArrives) {
  const ByteBuffer m = chunk_message(9, 5000);
  const auto whole = std::get<wire::ChunkAnswer>(wire::decode_answer(m.data(), m.size()).body);
  const size_t offset = static_cast<size_t>(whole.data - m.data());
  for (size_t n = 0; n <= m.size(); ++n) {
    const wire::DataProbe p = wire::probe_chunk_data(m.data(), n);
    if (n < offset) {
      EXPECT_EQ(p.status, wire::DataProbe::need_more) << n;
    } else {
      ASSERT_EQ(p.status, wire::DataProbe::found) << n;
      EXPECT_EQ(p.offset, offset);
      EXPECT_EQ(p.size, 5000u);
    }
  }
  // Answers without data are not chunks, once their map is complete.
  ByteBuffer other;
  wire::encode_answer(other, 1, wire::ManifestAnswer{"a", "{}"});
  EXPECT_EQ(wire::probe_chunk_data(other.data(), other.size()).status, wire::DataProbe::not_a_chunk);
  wire::encode_answer(other, 1, wire::ErrorAnswer{ErrorCode::not_found, "no"});
  EXPECT_EQ(wire::probe_chunk_data(other.data(), other.size()).status, wire::DataProbe::not_a_chunk);
}

TEST(Wire, MalformedAnswersAreNetworkErrors) {
  const std::string not_msgpack = "\xc1";
  test::expect_error([&] { wire::decode_answer(reinterpret_cast<const std::byte*>(not_msgpack.data()), 1); },
                     ErrorCode::network, "malformed answer from the weight server");
  // {"id": 1, "ok": true}: no field of any answer.
  const std::string empty = "\x82\xa2id\x01\xa2ok\xc3";
  test::expect_error([&] { wire::decode_answer(reinterpret_cast<const std::byte*>(empty.data()), empty.size()); },
                     ErrorCode::network, "no field of a known answer");
  // {"id": 1, "ok": true, "data": "text"}: data is not a bin.
  const std::string text_data = "\x83\xa2id\x01\xa2ok\xc3\xa4" "data\xa4text";
  test::expect_error(
      [&] { wire::decode_answer(reinterpret_cast<const std::byte*>(text_data.data()), text_data.size()); },
      ErrorCode::network, "chunk data is not a bin field");
}
