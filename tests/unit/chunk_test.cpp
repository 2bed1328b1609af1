#include <gtest/gtest.h>

#include <cstring>
#include <numeric>

#include "../test_util.h"
#include "surf/storage/chunk.h"
#include "surf/storage/manifest.h"

using namespace surf;

namespace {

struct Sample {
  std::vector<float> f32 = std::vector<float>(1000);
  std::vector<uint16_t> bf16 = std::vector<uint16_t>(77);
  std::vector<int64_t> i64 = {5, -1, 7};
  Sample() {
    std::iota(f32.begin(), f32.end(), 0.5f);
    std::iota(bf16.begin(), bf16.end(), 0x3f00);
  }
  std::vector<ChunkTensorIn> tensors() const {
    return {{"w", DType::F32, {10, 100}, f32.data(), f32.size() * 4},
            {"norm", DType::BF16, {77}, bf16.data(), bf16.size() * 2},
            {"ids", DType::I64, {3}, i64.data(), 24}};
  }
};

void expect_round_trip(Compression c) {
  Sample s;
  ByteBuffer chunk, scratch;
  encode_chunk("layers.3", s.tensors(), c, 3, chunk);
  DecodedChunk d = decode_chunk(chunk.data(), chunk.size(), "layers.3", scratch);
  ASSERT_EQ(d.tensors.size(), 3u);
  EXPECT_EQ(d.component, "layers.3");
  EXPECT_EQ(d.compression, c);
  EXPECT_EQ(d.tensors[0].name, "w");
  EXPECT_EQ(d.tensors[0].shape, (Shape{10, 100}));
  EXPECT_EQ(std::memcmp(d.tensors[0].data, s.f32.data(), 4000), 0);
  EXPECT_EQ(std::memcmp(d.tensors[1].data, s.bf16.data(), 154), 0);
  EXPECT_EQ(std::memcmp(d.tensors[2].data, s.i64.data(), 24), 0);
  for (const auto& t : d.tensors) EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 64, 0u) << t.name;
  if (c == Compression::none) {
    // Decoding references the buffer: the tensor bytes live inside the chunk, not in a copy.
    EXPECT_GE(d.tensors[0].data, chunk.data());
    EXPECT_LT(d.tensors[0].data, chunk.data() + chunk.size());
  }
}

std::string decode_error(const ByteBuffer& chunk, size_t size, const std::string& expected = "layers.3") {
  ByteBuffer scratch;
  try {
    decode_chunk(chunk.data(), size, expected, scratch);
  } catch (const Error& e) {
    return std::string(error_code_name(e.code())) + ": " + e.what();
  }
  return "";
}

}  // namespace

TEST(ChunkCodec, RoundTripUncompressed) { expect_round_trip(Compression::none); }
TEST(ChunkCodec, RoundTripZstd) { expect_round_trip(Compression::zstd); }

TEST(ChunkCodec, EveryFlippedByteIsDetected) {
  Sample s;
  ByteBuffer chunk;
  encode_chunk("layers.3", s.tensors(), Compression::none, 3, chunk);
  // Flip bytes across the whole chunk (header, padding excluded as it is not data, blob, checksum).
  int detected = 0, tried = 0;
  for (size_t i = 0; i < chunk.size(); i += 7) {
    ByteBuffer copy(chunk.size());
    std::memcpy(copy.data(), chunk.data(), chunk.size());
    copy.data()[i] ^= std::byte{0x5a};
    ++tried;
    const std::string err = decode_error(copy, copy.size());
    if (!err.empty()) ++detected;
  }
  // Only the alignment padding may change undetected; it is < 64 bytes of a ~4.5 KB chunk.
  EXPECT_GE(detected, tried - 64 / 7 - 1);
  // A flip inside the tensor data is always a checksum error naming the component.
  ByteBuffer copy(chunk.size());
  std::memcpy(copy.data(), chunk.data(), chunk.size());
  copy.data()[chunk.size() - 200] ^= std::byte{1};
  const std::string err = decode_error(copy, copy.size());
  EXPECT_NE(err.find("corrupt"), std::string::npos) << err;
  EXPECT_NE(err.find("checksum mismatch"), std::string::npos) << err;
  EXPECT_NE(err.find("layers.3"), std::string::npos) << err;
}

TEST(ChunkCodec, TruncationIsDetectedAtAnyLength) {
  Sample s;
  ByteBuffer chunk;
  encode_chunk("layers.3", s.tensors(), Compression::zstd, 3, chunk);
  for (size_t n : {size_t{0}, size_t{1}, size_t{20}, chunk.size() / 2, chunk.size() - 1}) {
    const std::string err = decode_error(chunk, n);
    EXPECT_NE(err.find("corrupt"), std::string::npos) << n << ": " << err;
  }
}

TEST(ChunkCodec, WrongComponentAndTrailingBytesAreErrors) {
  Sample s;
  ByteBuffer chunk;
  encode_chunk("layers.3", s.tensors(), Compression::none, 3, chunk);
  EXPECT_NE(decode_error(chunk, chunk.size(), "layers.4").find("holds component 'layers.3'"), std::string::npos);
  chunk.append("x", 1);
  EXPECT_NE(decode_error(chunk, chunk.size()).find("trailing"), std::string::npos);
}

TEST(ChunkCodec, LayoutComesFromTheDecodedHeader) {
  Sample s;
  for (Compression c : {Compression::none, Compression::zstd}) {
    ByteBuffer chunk;
    // A tensor name that spells the compression field must not fool anyone: the map is decoded.
    auto tensors = s.tensors();
    tensors[2].name = std::string(
        "\xab"
        "compression"
        "\xa4"
        "zstd");
    encode_chunk("layers.3", tensors, c, 3, chunk);
    const ChunkLayout l = read_chunk_layout(chunk.data(), chunk.size(), "layers.3");
    EXPECT_EQ(l.compression, c);
    EXPECT_EQ(l.component, "layers.3");
    ASSERT_EQ(l.tensors.size(), 3u);
    EXPECT_EQ(l.tensors[2].name, tensors[2].name);
    EXPECT_EQ(l.raw_size, l.tensors[2].offset + l.tensors[2].length);
    EXPECT_EQ(l.checksum, checksum_of(l.stored, l.stored_size));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(l.stored) % 64, reinterpret_cast<uintptr_t>(chunk.data()) % 64);
    EXPECT_EQ(c == Compression::none, l.stored_size == l.raw_size);
    ByteBuffer scratch;
    const DecodedChunk d = decode_chunk(l, scratch);
    EXPECT_EQ(std::memcmp(d.tensors[0].data, s.f32.data(), 4000), 0);
  }
}

TEST(ChunkCodec, LengthMustMatchShape) {
  std::vector<float> v(4);
  ByteBuffer chunk;
  EXPECT_THROW(encode_chunk("c", {{"w", DType::F32, {5}, v.data(), 16}}, Compression::none, 3, chunk), Error);
}

TEST(Manifest, RoundTripAndNewerVersionNamesBoth) {
  Manifest m;
  m.architecture = "llama";
  m.model_type = "llama";
  m.config_json = R"({"model_type":"llama"})";
  m.execution_order = {"embed"};
  ManifestComponent c;
  c.id = "embed";
  c.role = ComponentRole::resident;
  c.key = chunk_key("embed");
  c.bytes = 10;
  c.checksum = "xxh3:0";
  c.tensors.push_back({"weight", "model.embed_tokens.weight", DType::BF16, {4, 2}});
  m.components.push_back(c);
  Manifest back = Manifest::from_json(m.to_json());
  ASSERT_NE(back.find("embed"), nullptr);
  EXPECT_EQ(back.find("embed")->tensors[0].dtype, DType::BF16);
  EXPECT_EQ(back.find("embed")->role, ComponentRole::resident);
  std::string newer = m.to_json();
  newer.replace(newer.find("\"format_version\": 1"), 19, "\"format_version\": 9");
  test::expect_error([&] { Manifest::from_json(newer); }, ErrorCode::unsupported,
                     "version 9 is newer than this runtime's " + std::to_string(kManifestFormatVersion));
}

TEST(ChunkCodec, QuantizedTensorsRoundTripAndMarkTheFormatVersion) {
  // 3 rows of 64 Q8_0 elements: 3 * 2 blocks of 34 bytes; Q4_0 [2, 32]: 2 blocks of 18.
  std::vector<uint8_t> q8(3 * 2 * 34), q4(2 * 18);
  for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i * 7);
  for (size_t i = 0; i < q4.size(); ++i) q4[i] = static_cast<uint8_t>(i * 3);
  std::vector<float> norm(64, 1.0f);
  ByteBuffer chunk, scratch;
  encode_chunk("layers.0",
               {{"w", DType::Q8_0, {3, 64}, q8.data(), q8.size()},
                {"v", DType::Q4_0, {2, 32}, q4.data(), q4.size()},
                {"norm", DType::F32, {64}, norm.data(), 256}},
               Compression::none, 3, chunk);
  const std::string_view text(reinterpret_cast<const char*>(chunk.data()), 200);
  EXPECT_NE(text.find("\xae"
                      "format_version"
                      "\x02"),
            std::string::npos);  // version 2: block dtypes
  DecodedChunk d = decode_chunk(chunk.data(), chunk.size(), "layers.0", scratch);
  ASSERT_EQ(d.tensors.size(), 3u);
  EXPECT_EQ(d.tensors[0].dtype, DType::Q8_0);
  EXPECT_EQ(d.tensors[0].shape, (Shape{3, 64}));
  EXPECT_EQ(d.tensors[0].length, q8.size());
  EXPECT_EQ(std::memcmp(d.tensors[0].data, q8.data(), q8.size()), 0);
  EXPECT_EQ(d.tensors[1].dtype, DType::Q4_0);
  EXPECT_EQ(std::memcmp(d.tensors[1].data, q4.data(), q4.size()), 0);
  // A length that does not match the blocks, or a row that is not whole blocks, is refused.
  EXPECT_THROW(encode_chunk("c", {{"w", DType::Q8_0, {3, 64}, q8.data(), q8.size() - 34}}, Compression::none, 3, chunk),
               Error);
  EXPECT_THROW(encode_chunk("c", {{"w", DType::Q4_0, {1, 36}, q4.data(), 18}}, Compression::none, 3, chunk), Error);
  // Without block dtypes a chunk stays version 1, readable by runtimes that predate them.
  Sample s;
  encode_chunk("layers.3", s.tensors(), Compression::none, 3, chunk);
  EXPECT_NE(std::string_view(reinterpret_cast<const char*>(chunk.data()), 200)
                .find("\xae"
                      "format_version"
                      "\x01"),
            std::string::npos);
}

TEST(Manifest, QuantizedStoresAreFormatVersionTwo) {
  Manifest m;
  m.architecture = m.model_type = "llama";
  m.config_json = "{}";
  m.dtype = "q4_0";
  m.execution_order = {"layers.0"};
  ManifestComponent c;
  c.id = "layers.0";
  c.key = chunk_key(c.id);
  c.tensors.push_back({"q.weight", "model.layers.0.q.weight", DType::Q4_0, {64, 64}});
  m.components.push_back(c);
  const std::string text = m.to_json();
  EXPECT_NE(text.find("\"format_version\": 2"), std::string::npos) << text;
  EXPECT_NE(text.find("\"Q4_0\""), std::string::npos);
  const Manifest back = Manifest::from_json(text);
  EXPECT_EQ(back.dtype, "q4_0");
  EXPECT_EQ(back.components[0].tensors[0].dtype, DType::Q4_0);
  m.components[0].tensors[0].dtype = DType::BF16;
  EXPECT_NE(m.to_json().find("\"format_version\": 1"), std::string::npos);
}

TEST(Manifest, ComponentNamesCannotLeaveTheStore) {
  for (const char* bad : {"../etc/passwd", "a/b", "..", "", "/abs", "layers.0/..", "x\\y"}) {
    EXPECT_THROW(validate_component_id(bad), Error) << bad;
  }
  EXPECT_NO_THROW(validate_component_id("layers.12"));
  EXPECT_EQ(chunk_key("encoder.1"), "chunks/encoder.1.msgpack");
}
