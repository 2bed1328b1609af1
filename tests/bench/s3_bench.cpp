// GET of a 100 MB object from the local S3 server (moto) through the S3 backend against curl's
// GET of the same object in the same run (goal >= 0.9 of curl's MB/s); chunking throughput with
// and without zstd and the compression ratio on a bf16 synthetic checkpoint.
//
//   build/tests/bench/s3_bench [--runs 5] [--preset small]
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "../moto_process.h"
#include "../test_util.h"
#include "bench_util.h"
#include "surf/runtime.h"
#include "synth.h"
#include "surf/storage/s3.h"

using namespace surf;
namespace fs = std::filesystem;

int main(int argc, char** argv) {
  int runs = 5;
  std::string preset = "small";
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--runs") runs = std::stoi(argv[i + 1]);
    if (std::string(argv[i]) == "--preset") preset = argv[i + 1];
  }
  ::setenv("SURF_TEST_FIXTURES", SURF_FIXTURES_PATH, 0);
  test::MotoProcess moto({"bench"});
  if (!moto.available()) {
    std::fprintf(stderr, "local S3 server unavailable: %s\n", moto.why_unavailable().c_str());
    return 1;
  }
  S3Config c;
  c.endpoint = moto.endpoint();
  c.access_key_id = moto.access_key();
  c.secret_access_key = moto.secret_key();
  auto s3 = open_s3_backend("s3://bench", c);
  const size_t size = 100u * 1000 * 1000;
  std::vector<char> data(size);
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i * 2654435761u >> 13);
  double t0 = bench::now_s();
  s3->put("object.bin", data.data(), size);
  std::printf("PUT 100 MB (multipart, 16 MiB parts): %.0f MB/s\n", size / (bench::now_s() - t0) / 1e6);
  ByteBuffer buf;
  const double ours = bench::median_seconds(runs, 1, [&] { s3->get("object.bin", buf); });
  const std::string curl = "curl -s -f -o /dev/null --aws-sigv4 aws:amz:us-east-1:s3 --user " + moto.access_key() +
                           ":" + moto.secret_key() + " -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' " + moto.endpoint() +
                           "/bench/object.bin";
  const double theirs = bench::median_seconds(runs, 1, [&] {
    if (std::system(curl.c_str()) != 0) std::fprintf(stderr, "curl failed\n");
  });
  std::printf("GET 100 MB: surf %.0f MB/s, curl %.0f MB/s, ratio %.2f (goal >= 0.90; median of %d)\n",
              size / ours / 1e6, size / theirs / 1e6, theirs / ours, runs);

  // Chunking a bf16 synthetic checkpoint to a local store, plain and zstd.
  test::TempDir d;
  SynthOptions so;
  so.preset = preset;
  synth_checkpoint(d.str("hf"), so);
  uint64_t raw = 0;
  for (const auto& e : fs::directory_iterator(d.path() / "hf")) {
    if (e.path().extension() == ".safetensors" && e.path().filename() != "inputs.safetensors")
      raw += fs::file_size(e.path());
  }
  for (const std::string compression : {"none", "zstd"}) {
    ChunkOptions co;
    co.compression = compression;
    const std::string out = d.str("store-" + compression);
    t0 = bench::now_s();
    chunk_checkpoint(d.str("hf"), out, co);
    const double t = bench::now_s() - t0;
    uint64_t stored = 0;
    for (const auto& e : fs::recursive_directory_iterator(out)) {
      if (e.is_regular_file()) stored += e.file_size();
    }
    std::printf("chunk %s (%s, %.0f MB bf16): %.0f MB/s, stored/raw %.3f\n", preset.c_str(), compression.c_str(),
                raw / 1e6, raw / t / 1e6, static_cast<double>(stored) / static_cast<double>(raw));
  }
  return 0;
}
