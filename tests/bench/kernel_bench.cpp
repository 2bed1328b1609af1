// Matmul kernels on TinyLlama-1.1B's shapes, every weight dtype: decode (1 activation row) as
// weight bytes read per second, prefill (128 rows) as GFLOP/s, against OpenBLAS on f32 weights
// (2 threads) and the machine's 2-thread read bandwidth, measured in the same run. Rounds are
// interleaved so noise from other processes hits every variant alike; medians (min-max).
//
//   build/tests/bench/kernel_bench [--rounds 7] [--m 128] [--rounding quantized|none]
#include <cblas.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <string>

#include "bench_util.h"
#include "surf/ops.h"

using namespace surf;

namespace {

std::string arg(int argc, char** argv, const std::string& name, const std::string& fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return fallback;
}

std::vector<float> random_values(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-0.05f, 0.05f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = std::stoi(arg(argc, argv, "rounds", "7"));
  ops::set_kernel_isa(arg(argc, argv, "isa", "native"));
  // --repeat D:N:K:M:COUNT runs one matmul COUNT times and exits (for perf stat: FLOP per cycle).
  const std::string repeat = arg(argc, argv, "repeat", "");
  if (!repeat.empty()) {
    std::stringstream ss(repeat);
    std::string part;
    std::vector<std::string> f;
    while (std::getline(ss, part, ':')) f.push_back(part);
    const DType d = dtype_from_name(f.at(0));
    const int64_t n = std::stoll(f.at(1)), k = std::stoll(f.at(2)), mm = std::stoll(f.at(3));
    const int count = std::stoi(f.at(4));
    const std::vector<float> wv = random_values(n * k, 1);
    // Copies of the weights, cycled, so that they come from memory as a model's would (> 512 MB).
    std::vector<Tensor> copies;
    size_t total = 0;
    do {
      Tensor w = Tensor::empty(d, {n, k});
      convert_from_f32(d, wv.data(), w.raw_mutable(), wv.size());
      total += w.nbytes();
      copies.push_back(w);
    } while (total < (size_t{512} << 20));
    const Tensor& w = copies[0];
    const Tensor x = Tensor::from_f32({mm, k}, random_values(mm * k, 2));
    std::vector<double> t;
    for (int i = 0; i < count; ++i) {
      const double t0 = bench::now_s();
      ops::linear(x, copies[static_cast<size_t>(i) % copies.size()]);
      t.push_back(bench::now_s() - t0);
    }
    const auto sp = bench::spread(t);  // the best run: least disturbed by other processes
    if (mm <= 4) {
      std::printf("read bandwidth now: %.1f GB/s (%d threads)\n",
                  bench::read_bandwidth(size_t{1} << 30, ops::kernel_threads(), 3) / 1e9, ops::kernel_threads());
    }
    const double flop = 2.0 * static_cast<double>(n * k * mm);
    std::printf("%s n=%lld k=%lld m=%lld: best %.3f ms %.1f GFLOP/s %.1f GB/s, median %.3f ms %.1f GFLOP/s\n",
                dtype_name(d), static_cast<long long>(n), static_cast<long long>(k), static_cast<long long>(mm),
                sp.min * 1e3, flop / sp.min / 1e9, w.nbytes() / sp.min / 1e9, sp.median * 1e3, flop / sp.median / 1e9);
    return 0;
  }
  const int64_t m = std::stoll(arg(argc, argv, "m", "128"));
  ops::set_activation_rounding(ops::activation_rounding_from_name(arg(argc, argv, "rounding", "quantized")));
  struct Shape2 {
    int64_t n, k;
    const char* what;
  };
  const Shape2 shapes[] = {{2048, 2048, "q/o_proj"},
                           {256, 2048, "k/v_proj"},
                           {5632, 2048, "gate/up"},
                           {2048, 5632, "down_proj"},
                           {32000, 2048, "lm_head"}};
  const DType dtypes[] = {DType::F32, DType::BF16, DType::F16, DType::Q8_0, DType::Q4_0};
  std::printf("kernels: %s, %d threads; rounding %s; medians (min-max) of %d interleaved rounds\n", ops::kernel_isa(),
              ops::kernel_threads(), arg(argc, argv, "rounding", "quantized").c_str(), rounds);
  const double bw = bench::read_bandwidth(size_t{1} << 30, 2, 5);
  std::printf("memory read bandwidth, 2 threads: %.1f GB/s\n\n", bw / 1e9);
  for (const auto& sh : shapes) {
    const std::vector<float> wv = random_values(sh.n * sh.k, 1);
    std::vector<Tensor> ws;
    for (DType d : dtypes) {
      Tensor t = Tensor::empty(d, {sh.n, sh.k});
      convert_from_f32(d, wv.data(), t.raw_mutable(), wv.size());
      ws.push_back(t);
    }
    const Tensor x1 = Tensor::from_f32({1, sh.k}, random_values(sh.k, 2));
    const Tensor xm = Tensor::from_f32({m, sh.k}, random_values(m * sh.k, 3));
    Tensor y = Tensor::empty(DType::F32, {m, sh.n});
    std::vector<std::vector<double>> dec(ws.size() + 1), pre(ws.size() + 1);
    for (int r = 0; r < rounds + 1; ++r) {
      for (size_t i = 0; i < ws.size(); ++i) {
        double t0 = bench::now_s();
        ops::linear(x1, ws[i]);
        const double a = bench::now_s() - t0;
        t0 = bench::now_s();
        ops::linear(xm, ws[i]);
        const double b = bench::now_s() - t0;
        if (r > 0) {
          dec[i].push_back(a);
          pre[i].push_back(b);
        }
      }
      // OpenBLAS on its own 2 threads, as the SDK used it before.
      ops::set_blas_threads(2);
      double t0 = bench::now_s();
      cblas_sgemv(CblasRowMajor, CblasNoTrans, sh.n, sh.k, 1.0f, ws[0].f32(), sh.k, x1.f32(), 1, 0.0f, y.f32(), 1);
      const double a = bench::now_s() - t0;
      t0 = bench::now_s();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, sh.n, sh.k, 1.0f, xm.f32(), sh.k, ws[0].f32(), sh.k, 0.0f,
                  y.f32(), sh.n);
      const double b = bench::now_s() - t0;
      ops::set_blas_threads(1);
      if (r > 0) {
        dec.back().push_back(a);
        pre.back().push_back(b);
      }
    }
    std::printf("%-10s N=%-5lld K=%-5lld\n", sh.what, static_cast<long long>(sh.n), static_cast<long long>(sh.k));
    const double flop = 2.0 * static_cast<double>(m * sh.n * sh.k);
    for (size_t i = 0; i <= ws.size(); ++i) {
      const bool blas = i == ws.size();
      const size_t bytes = blas ? ws[0].nbytes() : ws[i].nbytes();
      const auto d = bench::spread(dec[i]), p = bench::spread(pre[i]);
      std::printf(
          "  %-14s decode %7.3f ms %5.1f GB/s (%4.1f-%4.1f) = %.2f of bw | prefill m=%lld %7.2f ms %6.1f GFLOP/s "
          "(%5.1f-%5.1f)\n",
          blas ? "openblas f32" : dtype_name(ws[i].dtype()), d.median * 1e3, bytes / d.median / 1e9,
          bytes / d.max / 1e9, bytes / d.min / 1e9, bytes / d.median / bw, static_cast<long long>(m), p.median * 1e3,
          flop / p.median / 1e9, flop / p.max / 1e9, flop / p.min / 1e9);
    }
  }
  return 0;
}
