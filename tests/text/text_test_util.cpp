#include "text/text_test_util.h"

#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace surf::test {

std::filesystem::path tokenizer_data_dir() {
  const char* d = std::getenv("SURF_TEST_TOKENIZERS");
  if (d == nullptr) throw std::runtime_error("SURF_TEST_TOKENIZERS is not set (run the tests through meson)");
  return d;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string gunzip_file(const std::filesystem::path& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot open " + path.string());
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(f);
  if (n < 0) throw std::runtime_error("corrupt gzip " + path.string());
  return out;
}

std::string tokenizer_json(const std::string& name) {
  return gunzip_file(tokenizer_data_dir() / (name + ".tokenizer.json.gz"));
}

}  // namespace surf::test
