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
  EXPECT_EQ(bad("\xc1").message, "not a msgpack request: it holds an ext value or the invalid byte 0xc1");
  EXPECT_EQ(bad("\x01").message, "a request must be a msgpack map");
  // {"id": 3, "op": 4}: op is not a string.
  const auto wrong_type = bad("\x82\xa2id\x03\xa2op\x04");
  EXPECT_EQ(wrong_type.id, 3u);
  EXPECT_EQ(wrong_type.message, "field 'op' must be a string (msgpack str)");
  // {"id": 4, "op": "drop"}
  const auto unknown =
      bad("\x82\xa2id\x04\xa2op\xa4"
          "drop");
  EXPECT_EQ(unknown.id, 4u);
  EXPECT_EQ(unknown.message, "unknown op 'drop'");
  // hello without a version is a bad request, not an unsupported version.
  const auto no_version = bad("\x82\xa2id\x01\xa2op\xa5hello");
  EXPECT_EQ(no_version.id, 1u);
  EXPECT_EQ(no_version.message, "hello needs 'version' (an integer: the client's protocol version)");
  // {"id": 2, "op": "hello", "version": "1"}
  EXPECT_EQ(bad("\x83\xa2id\x02\xa2op\xa5hello\xa7version\xa1"
                "1")
                .message,
            "field 'version' must be an integer");
  // {"id": -1, "op": "list_models"}: ids are unsigned.
  EXPECT_EQ(bad("\x82\xa2id\xff\xa2op\xablist_models").message, "field 'id' must be an unsigned integer");
  // A map followed by more bytes is not one request.
  EXPECT_EQ(bad(std::string("\x81\xa2id\x01\x00", 6)).message, "not a msgpack request: bytes follow the map");
}

// op, model, component, name and token are msgpack str: the same bytes as bin are refused (a
// client from another language must not get away with sending bytes where text is meant).
TEST(Wire, BinaryWhereTextIsMeantIsRefused) {
  // {"id": 5, "op": bin "get_manifest"}
  EXPECT_EQ(bad(std::string("\x82\xa2id\x05\xa2op\xc4\x0c") + "get_manifest").message,
            "field 'op' must be a string (msgpack str)");
  // {"id": 6, "op": "get_manifest", "model": bin "m"}
  EXPECT_EQ(bad(std::string("\x83\xa2id\x06\xa2op\xacget_manifest\xa5model\xc4\x01m")).message,
            "field 'model' must be a string (msgpack str)");
  // {"id": 7, "op": "hello", "version": 1, "token": bin "t"}
  EXPECT_EQ(bad(std::string("\x84\xa2id\x07\xa2op\xa5hello\xa7version\x01\xa5token\xc4\x01t")).message,
            "field 'token' must be a string (msgpack str)");
}

// Nesting and element counts are refused by a walk over the bytes, before msgpack-c allocates:
// 4 million nested arrays in 4 MiB, or a map of 60,000 entries, never become objects.
TEST(Wire, RequestShapeLimitsHoldBeforeUnpacking) {
  std::string nested(4u << 20, '\x91');
  nested.back() = '\xc0';
  EXPECT_EQ(bad(nested).message, "not a msgpack request: it nests deeper than 4 levels");
  std::string wide = "\xdf\x00\x00\xea\x60";  // map32 of 60,000 entries
  for (int i = 0; i < 60000; ++i) wide += std::string("\xc0\xc0");
  EXPECT_EQ(bad(wide).message, "not a msgpack request: it holds more than 256 values");
  // A declared count far beyond the bytes present is refused as it is declared.
  EXPECT_EQ(bad("\xdd\xff\xff\xff\xff").message, "not a msgpack request: it holds more than 256 values");
  EXPECT_EQ(bad("\x82\xa2id\x01\xa2op\xdb\xff\xff\xff\xff").message, "not a msgpack request: it is cut short");
  // Within the limits: 4 levels and extra fields are fine.
  ByteBuffer ok;
  wire::encode_request(ok, {9, wire::ListModels{}});
  std::string extra(reinterpret_cast<const char*>(ok.data()), ok.size());
  extra[0] = '\x83';
  extra += "\xa1x\x91\x91\x91\xc0";  // "x": [[[nil]]]
  auto decoded = wire::decode_request(reinterpret_cast<const std::byte*>(extra.data()), extra.size());
  ASSERT_TRUE(std::holds_alternative<wire::Request>(decoded));
  EXPECT_EQ(std::get<wire::Request>(decoded).id, 9u);
}

// Answers get the same walk before unpacking (a hostile server must not make the client build
// millions of objects), with room for a list of many models.
TEST(Wire, AnswerShapeLimitsHoldBeforeUnpacking) {
  std::string nested(1u << 20, '\x91');
  nested.back() = '\xc0';
  test::expect_error([&] { wire::decode_answer(reinterpret_cast<const std::byte*>(nested.data()), nested.size()); },
                     ErrorCode::network, "nests deeper than 4 levels");
  std::string wide("\xdd\x00\x10\x00\x00", 5);  // array32 of 1M nils
  wide.append(1u << 20, '\xc0');
  test::expect_error([&] { wire::decode_answer(reinterpret_cast<const std::byte*>(wide.data()), wide.size()); },
                     ErrorCode::network, "holds more than 65536 values");
  wire::ListModelsAnswer many;
  for (int i = 0; i < 1000; ++i) {
    std::string name = std::to_string(i);
    name.insert(name.begin(), 'm');
    many.models.push_back({name, "llama", 3, 100});
  }
  ByteBuffer b;
  wire::encode_answer(b, 1, many);
  EXPECT_EQ(std::get<wire::ListModelsAnswer>(wire::decode_answer(b.data(), b.size()).body).models.size(), 1000u);
}

// Error messages quote what they refuse short and escaped, and are valid UTF-8 whatever they
// were made from.
TEST(Wire, ErrorTextIsShortEscapedAndValidUtf8) {
  EXPECT_EQ(wire::quote("a'b\\c"), "'a\\'b\\\\c'");
  EXPECT_EQ(wire::quote("\xff\xfe\xfd"), "'\\xff\\xfe\\xfd'");
  EXPECT_EQ(wire::quote(std::string(1000000, 'a')), "'" + std::string(64, 'a') + "' (1000000 bytes, first 64 shown)");
  EXPECT_EQ(wire::valid_utf8("caf\xc3\xa9 \xff \xed\xa0\x80 \xf0\x9f\x98\x80", 100),
            "caf\xc3\xa9 \\xff \\xed\\xa0\\x80 \xf0\x9f\x98\x80");
  EXPECT_EQ(wire::valid_utf8(std::string(5000, 'x'), 1024), std::string(1024, 'x') + "... (5000 bytes)");
  ByteBuffer b;
  wire::encode_answer(b, 1, wire::ErrorAnswer{ErrorCode::internal, "bad \xc0\x80 bytes"});
  EXPECT_EQ(std::get<wire::ErrorAnswer>(wire::decode_answer(b.data(), b.size()).body).message, "bad \\xc0\\x80 bytes");
  // An op of b"\xff\xfe\xfd" (as str) comes back escaped.
  EXPECT_EQ(bad("\x82\xa2id\x01\xa2op\xa3\xff\xfe\xfd").message, "unknown op '\\xff\\xfe\\xfd'");
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
  EXPECT_EQ(c.data + c.size, m.data() + m.size());             // the last field, in the message itself
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
  const std::string text_data =
      "\x83\xa2id\x01\xa2ok\xc3\xa4"
      "data\xa4text";
  test::expect_error(
      [&] { wire::decode_answer(reinterpret_cast<const std::byte*>(text_data.data()), text_data.size()); },
      ErrorCode::network, "chunk data is not a bin field");
}
