// Tokenizer encode throughput (MB of UTF-8 text per second) on a long text, ours beside the
// reference (@lenml/tokenizers under node) on the same paragraphs, and whether the ids agree.
//   tokenizer_bench [MB]            (default 4 MB of text: prose.txt plus mixed-script lines, repeated)
// The reference runs when node finds @lenml/tokenizers (NODE_PATH, default /tmp/tokref/node_modules);
// otherwise only our figures are printed.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>
#include <zlib.h>

#include "bench_util.h"
#include "surf/tokenizer.h"

namespace fs = std::filesystem;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string gunzip(const fs::path& p) {
  gzFile f = gzopen(p.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + p.string());
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  return out;
}

std::vector<std::string> paragraphs(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t k = text.find("\n\n", start);
    out.push_back(text.substr(start, k == std::string::npos ? std::string::npos : k - start));
    if (k == std::string::npos) break;
    start = k + 2;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const double mb = argc > 1 ? std::atof(argv[1]) : 4.0;
  const fs::path data = fs::path(SURF_TOKENIZER_DATA);
  const std::string prose = read_file(data / "prose.txt");
  const std::string mixed =
      "Привет, мир! Как дела? 你好，世界。我们在测试分词器。 مرحبا بالعالم 日本語のテキスト 😀🚀 don't 3.14159\n\n";
  std::string text;
  while (text.size() < mb * 1e6) text += prose + "\n\n" + mixed;
  const fs::path text_path = fs::path(surf::bench::work_dir()) / "tokenizer_bench.txt";
  fs::create_directories(text_path.parent_path());
  std::ofstream(text_path, std::ios::binary) << text;
  const auto paras = paragraphs(text);
  const char* node_path = std::getenv("NODE_PATH");
  const std::string nm = node_path ? node_path : "/tmp/tokref/node_modules";
  const bool have_reference = fs::exists(fs::path(nm) / "@lenml/tokenizers/dist/main.mjs") &&
                              std::system("node --version >/dev/null 2>&1") == 0;

  std::printf("text: %.2f MB in %zu paragraphs (%s)\n", static_cast<double>(text.size()) / 1e6, paras.size(),
              text_path.c_str());
  std::printf("%-20s %12s %12s %10s %12s  %s\n", "tokenizer", "ours MB/s", "ref MB/s", "ours/ref", "ids", "ids agree");
  for (const char* name : {"llama3", "qwen3", "llama2", "bert-base-uncased", "t5-unigram"}) {
    const fs::path tok_path = data / (std::string(name) + ".tokenizer.json.gz");
    const auto tok = surf::Tokenizer::from_json(gunzip(tok_path));
    size_t ids = 0;
    uint64_t checksum = 0;
    const double seconds = surf::bench::median_seconds(3, 1, [&] {
      ids = 0;
      checksum = 0;
      for (const auto& p : paras) {
        const auto e = tok->encode(p, false);
        ids += e.size();
        for (int64_t id : e) checksum = (checksum * 31 + static_cast<uint64_t>(id)) % 1000000007ull;
      }
    });
    const double ours = static_cast<double>(text.size()) / seconds / 1e6;
    double ref = 0;
    std::string agree = "-";
    if (have_reference) {
      const std::string cmd = "NODE_PATH='" + nm + "' node '" + std::string(SURF_BENCH_SOURCE) +
                              "/tokenizer_bench_reference.mjs' '" + tok_path.string() + "' '" + text_path.string() +
                              "' 3";
      FILE* p = popen(cmd.c_str(), "r");
      std::string out;
      char buf[4096];
      while (p && fgets(buf, sizeof buf, p)) out += buf;
      if (p) pclose(p);
      try {
        const auto j = nlohmann::json::parse(out);
        ref = j["mbps"].get<double>();
        agree = j["ids"].get<size_t>() == ids && j["checksum"].get<uint64_t>() == checksum ? "yes" : "NO";
      } catch (const std::exception&) {
        agree = "reference failed";
      }
    }
    std::printf("%-20s %12.2f %12.2f %10.2f %12zu  %s\n", name, ours, ref, ref > 0 ? ours / ref : 0.0, ids,
                agree.c_str());
    std::fflush(stdout);
  }
  if (!have_reference)
    std::printf(
        "reference not run: npm install @lenml/tokenizers into a directory and set NODE_PATH to its node_modules\n");
  return 0;
}
