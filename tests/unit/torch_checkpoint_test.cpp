// pytorch_model.bin: the restricted unpickler (what it accepts, what it refuses by name), the zip
// container (in-place reads, deflated entries, truncation, CRC) and HfCheckpoint's .bin support.
// tests/data/torch/ was written by tests/data/make_torch_bins.py with torch.save.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "../test_util.h"
#include "surf/storage/safetensors.h"
#include "surf/storage/torch_checkpoint.h"

using namespace surf;
using namespace std::string_literals;
namespace fs = std::filesystem;

namespace {

const char* kMarker = "/tmp/surf-malicious-pickle-ran";  // what malicious.bin would create

fs::path torch_data(const std::string& name) { return test::data_dir() / "torch" / name; }

struct Failure {
  ErrorCode code = ErrorCode::internal;
  std::string message;
};

template <class Fn>
Failure failure_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return {e.code(), e.what()};
  }
  ADD_FAILURE() << "no error";
  return {};
}

Failure parse_failure(const std::string& pickle) {
  return failure_of([&] { parse_torch_state_dict(pickle, "test.pkl"); });
}

std::string bytes_of(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

std::vector<float> floats(const TensorFile& f, const std::string& name) {
  Tensor t = f.load(name);
  std::vector<float> out(static_cast<size_t>(t.numel()));
  convert_to_f32(t.dtype(), t.raw(), out.data(), out.size());
  return out;
}

// A pickle of {"a": _rebuild_tensor_v2(FloatStorage "0" of 4 elements, offset, (4,), (1,), False, {})}.
std::string one_tensor_pickle(int offset) {
  return "\x80\x02}X\x01\x00\x00\x00"s + "a" + "ctorch._utils\n_rebuild_tensor_v2\n" + "((X\x07\x00\x00\x00"s +
         "storage" + "ctorch\nFloatStorage\n" + "X\x01\x00\x00\x00"s + "0" + "X\x03\x00\x00\x00"s + "cpu" + "K\x04tQK" +
         static_cast<char>(offset) + "K\x04\x85K\x01\x85\x89}tRs.";
}

}  // namespace

TEST(TorchPickle, ReadsAStateDictOfTensors) {
  const auto records = parse_torch_state_dict(one_tensor_pickle(0), "test.pkl");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].name, "a");
  EXPECT_EQ(records[0].dtype, "F32");
  EXPECT_EQ(records[0].shape, (Shape{4}));
  EXPECT_EQ(records[0].storage_key, "0");
  EXPECT_EQ(records[0].storage_offset, 0u);
  EXPECT_EQ(records[0].storage_numel, 4u);
  const Failure past = parse_failure(one_tensor_pickle(2));
  EXPECT_EQ(past.code, ErrorCode::corrupt);
  EXPECT_NE(past.message.find("tensor 'a' (4 elements at offset 2) runs past its storage of 4 elements"),
            std::string::npos)
      << past.message;
}

TEST(TorchPickle, RefusesEveryOtherGlobalAndOpcodeByName) {
  const std::pair<std::string, std::string> cases[] = {
      {"\x80\x02"
       "cbuiltins\neval\nq\x00.",
       "refused global 'builtins.eval'"},
      {"\x80\x02"
       "cposix\nsystem\nX\x02\x00\x00\x00id\x85R."s,
       "refused global 'posix.system'"},
      {"\x80\x04\x8c\x05posix\x8c\x06system\x93.", "refused global 'posix.system'"},  // STACK_GLOBAL
      {"\x80\x02"
       "ctorch\nload\n.",
       "refused global 'torch.load'"},
      {"\x80\x02"
       "ctorch._utils\n_rebuild_device_tensor_from_numpy\n.",
       "refused global 'torch._utils._rebuild_device_tensor_from_numpy'"},
      {"(iposix\nsystem\n.", "refused pickle opcode INST (0x69)"},
      {"\x80\x02(cposix\nsystem\no.", "refused global 'posix.system'"},
      {"\x80\x02})\x81.", "refused pickle opcode NEWOBJ (0x81)"},
      {"\x80\x02\x82\x01.", "refused pickle opcode EXT1 (0x82)"},
      {"\x80\x02"
       "ctorch\nFloatStorage\n)R.",
       "refused calling 'torch.FloatStorage'"},
      {"\x80\x02"
       "ccollections\nOrderedDict\nK\x01\x85R.",
       "refused collections.OrderedDict with arguments"},
      {"\x80\x02X\x03\x00\x00\x00"
       "abc\x85Q."s,
       "refused persistent id other than a tensor storage"},
      {"\x80\x02K\x01K\x02"
       "b.",
       "refused BUILD on a int"},
  };
  for (const auto& [pickle, want] : cases) {
    const Failure f = parse_failure(pickle);
    EXPECT_EQ(f.code, ErrorCode::unsupported) << want;
    EXPECT_NE(f.message.find(want), std::string::npos) << f.message;
    EXPECT_NE(f.message.find("nothing from the file was run"), std::string::npos) << f.message;
  }
}

TEST(TorchPickle, MalformedPicklesAreCorruptNotCrashes) {
  const std::pair<std::string, std::string> cases[] = {
      {"\x80\x02}q\x00"s, "ends without STOP"},
      {"\x80\x02h\x05.", "memo index 5 was never set"},
      {"\x80\x02X\xff\xff\x00\x00"
       "ab."s,
       "runs past its end"},
      {"\x80\x02t.", "no MARK"},
      {"\x80\x02(R.", "stack underflow"},
      {"\x80\x02}}.", "2 values on its stack"},
      {"\x80\x09}.", "pickle protocol 9"},
  };
  for (const auto& [pickle, want] : cases) {
    const Failure f = parse_failure(pickle);
    EXPECT_EQ(f.code, ErrorCode::corrupt) << want;
    EXPECT_NE(f.message.find(want), std::string::npos) << f.message;
  }
  EXPECT_NE(parse_failure("\x80\x02K\x01.").message.find("holds a int, not a state dict"), std::string::npos);
  EXPECT_NE(parse_failure("\x80\x02}X\x01\x00\x00\x00"
                          "aK\x01s."s)
                .message.find("entry 'a' is a int, not a tensor"),
            std::string::npos);
}

// A smoke test in the spirit of the fuzz target (tests/fuzz, torch_pickle): every mutation of a
// valid pickle is either read or refused with a surf::Error, never anything else.
TEST(TorchPickle, MutatedPicklesAreReadOrRefusedCleanly) {
  const std::string valid = one_tensor_pickle(0);
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int i = 0; i < 20000; ++i) {
    std::string p = valid;
    for (uint32_t n = 1 + next() % 4; n > 0; --n) {
      const uint32_t r = next();
      const size_t at = (r >> 8) % p.size();
      switch (r % 3) {
        case 0:
          p[at] = static_cast<char>(next() >> 24);
          break;
        case 1:
          p.erase(at, 1 + (r >> 4) % 3);
          break;
        default:
          p.insert(at, 1, static_cast<char>(next() >> 24));
          break;
      }
      if (p.empty()) p.push_back('x');
    }
    try {
      parse_torch_state_dict(p, "mutated.pkl");
    } catch (const Error&) {
    } catch (const std::exception& e) {
      FAIL() << "mutation " << i << " threw a non-surf exception: " << e.what();
    }
  }
}

TEST(TorchCheckpoint, ReadsEveryDtypeViewsParametersAndSkipsMasks) {
  auto f = TorchCheckpointFile::open(torch_data("tiny.bin"));
  EXPECT_EQ(floats(*f, "f32"), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f->find("f32")->shape, (Shape{2, 3}));
  EXPECT_EQ(f->find("f16")->dtype, DType::F16);
  EXPECT_EQ(floats(*f, "f16"), (std::vector<float>{0.5f, -1.5f, 2.25f}));
  EXPECT_EQ(f->find("bf16")->dtype, DType::BF16);
  EXPECT_EQ(floats(*f, "bf16"), (std::vector<float>{1.0f, -2.0f, 3.5f, 0.25f}));
  const Tensor ids = f->load("i64");
  EXPECT_EQ(std::vector<int64_t>(ids.i64(), ids.i64() + 3), (std::vector<int64_t>{7, -3, int64_t{1} << 40}));
  EXPECT_EQ(f->find("scalar")->shape, Shape{});
  EXPECT_EQ(floats(*f, "scalar"), (std::vector<float>{-1e4f}));
  EXPECT_EQ(floats(*f, "whole"), (std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f, 3, 3.5f, 4, 4.5f, 5, 5.5f}));
  EXPECT_EQ(f->find("rows_1_2")->shape, (Shape{2, 4}));  // a view 4 elements into the same storage
  EXPECT_EQ(f->find("rows_1_2")->offset, 16u);
  EXPECT_EQ(floats(*f, "rows_1_2"), (std::vector<float>{2, 2.5f, 3, 3.5f, 4, 4.5f, 5, 5.5f}));
  EXPECT_EQ(floats(*f, "param"), (std::vector<float>{9, 8}));  // nn.Parameter
  EXPECT_EQ(f->find("empty")->shape, (Shape{0, 3}));
  EXPECT_EQ(f->find("empty")->length, 0u);
  EXPECT_EQ(f->skipped(), (std::map<std::string, std::string>{{"mask", "BOOL"}}));
  EXPECT_EQ(f->find("mask"), nullptr);
}

TEST(TorchCheckpoint, RefusesNonContiguousTensorsNamingTheStrides) {
  const Failure f = failure_of([] { TorchCheckpointFile::open(torch_data("noncontiguous.bin")); });
  EXPECT_EQ(f.code, ErrorCode::unsupported);
  EXPECT_NE(f.message.find("tensor 't' of size [3, 2] has strides [1, 3]: not contiguous"), std::string::npos)
      << f.message;
}

TEST(TorchCheckpoint, RefusesAMaliciousGlobalAndRunsNothing) {
  fs::remove(kMarker);
  const Failure f = failure_of([] { TorchCheckpointFile::open(torch_data("malicious.bin")); });
  EXPECT_EQ(f.code, ErrorCode::unsupported);
  EXPECT_NE(f.message.find("refused global 'posix.system'"), std::string::npos) << f.message;
  EXPECT_FALSE(fs::exists(kMarker));
  // The same through a checkpoint directory.
  test::TempDir d;
  fs::copy_file(test::fixtures_dir() / "llama-tiny-random" / "config.json", d.path() / "config.json");
  fs::copy_file(torch_data("malicious.bin"), d.path() / "pytorch_model.bin");
  const Failure g = failure_of([&] { HfCheckpoint::open(d.path()); });
  EXPECT_NE(g.message.find("refused global 'posix.system'"), std::string::npos) << g.message;
  EXPECT_FALSE(fs::exists(kMarker));
}

TEST(TorchCheckpoint, TruncatedCorruptAndLegacyFilesAreClearErrors) {
  test::TempDir d;
  std::ifstream in(torch_data("tiny.bin"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream(d.path() / name, std::ios::binary) << content;
    return d.path() / name;
  };
  const Failure truncated =
      failure_of([&] { TorchCheckpointFile::open(write("truncated.bin", bytes.substr(0, bytes.size() / 2))); });
  EXPECT_EQ(truncated.code, ErrorCode::corrupt);
  EXPECT_NE(truncated.message.find("not a readable zip archive"), std::string::npos) << truncated.message;

  // One flipped bit inside the f32 record: the archive opens, reading that tensor fails its CRC.
  std::string flipped = bytes;
  const size_t at = flipped.find(bytes_of({1, 2, 3, 4, 5, 6}));
  ASSERT_NE(at, std::string::npos);
  flipped[at + 9] ^= 0x10;
  auto f = TorchCheckpointFile::open(write("flipped.bin", flipped));
  const Failure crc = failure_of([&] { f->load("f32"); });
  EXPECT_EQ(crc.code, ErrorCode::corrupt);
  EXPECT_NE(crc.message.find("cannot read tensor 'f32'"), std::string::npos) << crc.message;
  EXPECT_NE(crc.message.find("CRC"), std::string::npos) << crc.message;
  EXPECT_EQ(floats(*f, "f16"), (std::vector<float>{0.5f, -1.5f, 2.25f}));  // the others still read

  const Failure text = failure_of([&] { TorchCheckpointFile::open(write("text.bin", "not a checkpoint at all")); });
  EXPECT_EQ(text.code, ErrorCode::corrupt);
  const Failure legacy =
      failure_of([&] { TorchCheckpointFile::open(write("legacy.bin", "\x80\x02\x8a\x0alz\xec\x17"s)); });
  EXPECT_EQ(legacy.code, ErrorCode::unsupported);
  EXPECT_NE(legacy.message.find("legacy (torch < 1.6) format"), std::string::npos) << legacy.message;
}

// Every tensor of the .bin version has the safetensors fixture's name, dtype, shape and bytes.
TEST(HfCheckpointTest, BinCheckpointsHoldTheSameTensorsAsTheirSafetensorsTwins) {
  for (const std::string name :
       {"llama-tiny-attnbias-linear-rope", "qwen2-tiny-untied-bf16-sharded", "gpt-neox-tiny-sequential-buffers"}) {
    auto bin = HfCheckpoint::open(torch_data(name + "-bin"));
    auto st = HfCheckpoint::open(test::fixtures_dir() / name);
    EXPECT_EQ(bin->format(), "pytorch");
    EXPECT_EQ(st->format(), "safetensors");
    EXPECT_EQ(bin->tensor_names(), st->tensor_names()) << name;
    EXPECT_EQ(bin->skipped(), st->skipped()) << name;
    for (const auto& t : st->tensor_names()) {
      auto a = st->find(t), b = bin->find(t);
      if (a.file == nullptr) continue;  // skipped (BOOL) in both
      ASSERT_NE(b.file, nullptr) << t;
      EXPECT_EQ(a.info->dtype, b.info->dtype) << t;
      EXPECT_EQ(a.info->shape, b.info->shape) << t;
      ASSERT_EQ(a.info->length, b.info->length) << t;
      std::string x(a.info->length, '\0'), y(b.info->length, '\0');
      a.file->read(*a.info, x.data());
      b.file->read(*b.info, y.data());
      EXPECT_TRUE(x == y) << name << " " << t;
    }
  }
}

TEST(HfCheckpointTest, SafetensorsArePreferredWhenBothFormatsExist) {
  test::TempDir d;
  const fs::path st = test::fixtures_dir() / "llama-tiny-attnbias-linear-rope";
  fs::copy_file(st / "config.json", d.path() / "config.json");
  fs::copy_file(st / "model.safetensors", d.path() / "model.safetensors");
  fs::copy_file(torch_data("malicious.bin"), d.path() / "pytorch_model.bin");  // never opened
  EXPECT_TRUE(HfCheckpoint::looks_like(d.path()));
  EXPECT_EQ(HfCheckpoint::open(d.path())->format(), "safetensors");
}

TEST(HfCheckpointTest, NoWeightsNamesWhatTheDirectoryHolds) {
  test::TempDir d;
  std::ofstream(d.path() / "config.json") << R"({"model_type":"llama"})";
  std::ofstream(d.path() / "model.gguf") << "GGUF";
  std::ofstream(d.path() / "model.pt") << "x";
  EXPECT_FALSE(HfCheckpoint::looks_like(d.path()));
  const Failure f = failure_of([&] { HfCheckpoint::open(d.path()); });
  EXPECT_EQ(f.code, ErrorCode::not_found);
  EXPECT_NE(f.message.find("neither model.safetensors[.index.json] nor pytorch_model.bin[.index.json]"),
            std::string::npos)
      << f.message;
  EXPECT_NE(f.message.find("it holds: config.json, model.gguf, model.pt"), std::string::npos) << f.message;
}
