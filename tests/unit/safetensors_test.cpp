#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "../test_util.h"
#include "surf/storage/safetensors.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

// A safetensors file with a hand-written header.
void write_raw(const fs::path& p, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::ofstream out(p, std::ios::binary);
  uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
  out << header << std::string(data_bytes, '\0');
}

std::string open_error(const fs::path& p) {
  try {
    SafetensorsFile::open(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, WriteReadRoundTrip) {
  test::TempDir d;
  TensorMap m;
  m["a"] = Tensor::from_f32({2, 2}, {1, 2, 3, 4});
  m["ids"] = Tensor::from_i64({3}, {7, 8, 9});
  write_safetensors(d.str("x.safetensors"), m);
  TensorMap back = read_safetensors(d.str("x.safetensors"));
  EXPECT_TRUE(test::bitwise_equal(back["a"], m["a"]));
  EXPECT_TRUE(test::bitwise_equal(back["ids"], m["ids"]));
}

TEST(Safetensors, BadHeaderLength) {
  test::TempDir d;
  write_raw(d.path() / "f.safetensors", "{}", 0, 1 << 20);
  EXPECT_NE(open_error(d.path() / "f.safetensors").find("header length 1048576 exceeds the file size"),
            std::string::npos);
  std::ofstream(d.path() / "short.safetensors") << "abc";
  EXPECT_NE(open_error(d.path() / "short.safetensors").find("too short"), std::string::npos);
}

TEST(Safetensors, OffsetsOutOfRange) {
  test::TempDir d;
  write_raw(d.path() / "f.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  const std::string err = open_error(d.path() / "f.safetensors");
  EXPECT_NE(err.find("tensor 'w' data_offsets [0, 16] out of range"), std::string::npos) << err;
}

TEST(Safetensors, SizeMustMatchShape) {
  test::TempDir d;
  write_raw(d.path() / "f.safetensors", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", 16);
  EXPECT_NE(open_error(d.path() / "f.safetensors").find("holds 16 bytes but F32[3] needs 12"), std::string::npos);
}

TEST(Safetensors, UnknownDtypeNamesTensorAndDtype) {
  test::TempDir d;
  write_raw(d.path() / "f.safetensors", R"({"w":{"dtype":"Q9_Z","shape":[4],"data_offsets":[0,4]}})", 4);
  const std::string err = open_error(d.path() / "f.safetensors");
  EXPECT_NE(err.find("tensor 'w'"), std::string::npos) << err;
  EXPECT_NE(err.find("Q9_Z"), std::string::npos) << err;
}

// Buffers in dtypes tensors cannot hold (old GPT-NeoX's BOOL attention.bias) are listed as skipped,
// still checked for size, so that plans can ignore them.
TEST(Safetensors, OtherSafetensorsDtypesAreSkippedNotFatal) {
  test::TempDir d;
  write_raw(
      d.path() / "f.safetensors",
      R"({"mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,4]},"f8":{"dtype":"F8_E5M2","shape":[4],"data_offsets":[4,8]},)"
      R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
      16);
  auto f = SafetensorsFile::open(d.path() / "f.safetensors");
  EXPECT_EQ(f->skipped(), (std::map<std::string, std::string>{{"f8", "F8_E5M2"}, {"mask", "BOOL"}}));
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].name, "w");
  EXPECT_EQ(f->find("mask"), nullptr);
  write_raw(d.path() / "g.safetensors", R"({"mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,5]}})", 5);
  EXPECT_NE(open_error(d.path() / "g.safetensors").find("holds 5 bytes but BOOL[2, 2] needs 4"), std::string::npos);
}

TEST(HfCheckpointTest, SkippedBuffersAreNamedButNotFound) {
  auto ck = HfCheckpoint::open(test::fixtures_dir() / "gpt-neox-tiny-sequential-buffers");
  EXPECT_EQ(ck->skipped().at("gpt_neox.layers.0.attention.bias"), "BOOL");
  EXPECT_EQ(ck->find("gpt_neox.layers.0.attention.bias").file, nullptr);
  const auto names = ck->tensor_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "gpt_neox.layers.1.attention.bias"), names.end());
  ASSERT_NE(ck->find("gpt_neox.layers.0.attention.masked_bias").file, nullptr);  // F32 buffer: loadable
}

TEST(Safetensors, BlockFormatsAreRefusedBothWays) {
  test::TempDir d;
  TensorMap m;
  m["w"] = Tensor::zeros(DType::Q8_0, {2, 32});
  try {
    write_safetensors(d.str("q.safetensors"), m);
    FAIL() << "a Q8_0 tensor was written to safetensors";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'w' of dtype Q8_0"), std::string::npos) << e.what();
  }
  write_raw(d.path() / "f.safetensors", R"({"w":{"dtype":"Q4_0","shape":[32],"data_offsets":[0,18]}})", 18);
  const std::string err = open_error(d.path() / "f.safetensors");
  EXPECT_NE(err.find("tensor 'w' has dtype Q4_0"), std::string::npos) << err;
}

TEST(Safetensors, NotJson) {
  test::TempDir d;
  write_raw(d.path() / "f.safetensors", "{oops", 0);
  EXPECT_NE(open_error(d.path() / "f.safetensors").find("not valid JSON"), std::string::npos);
}

TEST(HfCheckpointTest, ShardedIndexSpansFiles) {
  test::TempDir d;
  std::ofstream(d.path() / "config.json") << R"({"model_type":"x"})";
  TensorMap a, b;
  a["t1"] = Tensor::from_f32({1}, {1});
  b["t2"] = Tensor::from_f32({1}, {2});
  write_safetensors(d.path() / "model-00001-of-00002.safetensors", a);
  write_safetensors(d.path() / "model-00002-of-00002.safetensors", b);
  std::ofstream(d.path() / "model.safetensors.index.json")
      << R"({"metadata":{"total_size":8},"weight_map":{"t1":"model-00001-of-00002.safetensors","t2":"model-00002-of-00002.safetensors"}})";
  auto ck = HfCheckpoint::open(d.path());
  EXPECT_EQ(ck->tensor_names(), (std::vector<std::string>{"t1", "t2"}));
  auto loc = ck->find("t2");
  ASSERT_NE(loc.file, nullptr);
  EXPECT_EQ(loc.file->load("t2").f32()[0], 2.0f);
  EXPECT_EQ(ck->find("t3").file, nullptr);
}

TEST(HfCheckpointTest, IndexCannotPointOutsideTheDirectory) {
  test::TempDir d;
  std::ofstream(d.path() / "config.json") << R"({"model_type":"x"})";
  std::ofstream(d.path() / "model.safetensors.index.json") << R"({"weight_map":{"t1":"../evil.safetensors"}})";
  EXPECT_THROW(HfCheckpoint::open(d.path()), Error);
}
