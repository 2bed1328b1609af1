// Tokenizer files from a weight server: get_file through wire.{h,cpp}, the server's handler
// (only names the manifest lists), and a ws:// SOURCE that tokenizes and generates text with
// nothing local.
#include <gtest/gtest.h>

#include <fstream>

#include "surf/runtime.h"
#include "surf/storage/manifest.h"
#include "test_util.h"
#include "text/text_test_util.h"
#include "transport/wire.h"
#include "transport/ws_connection.h"

using namespace surf;
namespace fs = std::filesystem;

namespace {

fs::path text_store(const test::TempDir& d) {
  const fs::path hf = d.path() / "hf";
  fs::create_directories(hf);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(test::fixtures_dir() / "llama-tiny-random" / f, hf / f);
  std::ofstream(hf / "tokenizer.json") << test::tokenizer_json("tiny-bpe-512");
  std::ofstream(hf / "generation_config.json") << R"({"eos_token_id": [511, 7]})";
  ChunkOptions co;
  co.plugin_dirs = {test::plugin_dir()};
  chunk_checkpoint(hf.string(), d.str("store"), co);
  return hf;
}

TEST(WsFiles, WireRoundTrip) {
  ByteBuffer b;
  wire::encode_request(b, {7, wire::GetFile{"m", "tokenizer.json"}});
  const auto decoded = wire::decode_request(b.data(), b.size());
  const auto& r = std::get<wire::Request>(decoded);
  EXPECT_EQ(r.id, 7u);
  EXPECT_STREQ(wire::op_name(r.body), "get_file");
  EXPECT_EQ(std::get<wire::GetFile>(r.body).name, "tokenizer.json");
  const std::string bytes = "{\"model\": {}}";
  wire::encode_answer(b, 7,
                      wire::FileAnswer{"m", "tokenizer.json", "xxh3:0123456789abcdef",
                                       reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()});
  const wire::Answer a = wire::decode_answer(b.data(), b.size());
  const auto& f = std::get<wire::FileAnswer>(a.body);
  EXPECT_EQ(f.name, "tokenizer.json");
  EXPECT_EQ(f.checksum, "xxh3:0123456789abcdef");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data), f.size), bytes);
}

TEST(WsFiles, WeightServerServesListedFilesOnly) {
  test::TempDir d;
  const fs::path hf = text_store(d);
  ServeOptions so;
  so.stores = {{"tiny", d.str("store")}};
  so.port = 0;
  WeightServer server(so);
  const std::string url = "ws://127.0.0.1:" + std::to_string(server.port()) + "/tiny";

  const std::string text = "Tokens over the wire, weights too.";
  EXPECT_EQ(load_tokenizer(url)->encode(text), Tokenizer::from_directory(hf.string())->encode(text));
  OpenOptions o;
  o.plugin_dirs = {test::plugin_dir()};
  auto remote = Session::open(url, o);
  auto local = Session::open(hf.string(), o);
  EXPECT_EQ(remote->eos_token_ids(), (std::vector<int64_t>{511, 7}));
  GenerateOptions g;
  g.max_new_tokens = 10;
  g.stop_at_eos = false;
  EXPECT_EQ(remote->generate_text({"Once upon"}, g).texts, local->generate_text({"Once upon"}, g).texts);
  auto cli = test::run_command({test::surf_exe(), "tokenize", url, "--text", text});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out, test::run_command({test::surf_exe(), "tokenize", hf.string(), "--text", text}).out);

  // Names the manifest does not list, and names that are not names, are refused with an answer.
  WsConnection conn(parse_ws_url(url), "", std::make_shared<BufferPool>(1));
  conn.connect(5000);
  for (auto [name, code] : {std::pair<std::string, ErrorCode>{"config.json", ErrorCode::not_found},
                            {"model.safetensors", ErrorCode::not_found},
                            {"../manifest.json", ErrorCode::invalid_argument},
                            {"files/tokenizer.json", ErrorCode::invalid_argument}}) {
    const ReplyPtr r = conn.request(wire::GetFile{"tiny", name}, 0).get();
    const auto* e = std::get_if<wire::ErrorAnswer>(&r->answer.body);
    ASSERT_NE(e, nullptr) << name;
    EXPECT_EQ(e->code, code) << name << ": " << e->message;
  }
  const ReplyPtr ok = conn.request(wire::GetFile{"tiny", "generation_config.json"}, 0).get();
  const auto& f = std::get<wire::FileAnswer>(ok->answer.body);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f.data), f.size), R"({"eos_token_id": [511, 7]})");
}

}  // namespace
