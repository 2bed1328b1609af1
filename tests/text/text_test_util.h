// Test data of the tokenizer tests: tests/data/tokenizers (tokenizer files gzip-compressed, the
// reference's expected ids), read without network.
#pragma once

#include <filesystem>
#include <string>

namespace surf::test {

std::filesystem::path tokenizer_data_dir();
// The decompressed bytes of a .gz file.
std::string gunzip_file(const std::filesystem::path& path);
std::string read_file(const std::filesystem::path& path);
// tests/data/tokenizers/NAME.tokenizer.json.gz, decompressed.
std::string tokenizer_json(const std::string& name);

}  // namespace surf::test
