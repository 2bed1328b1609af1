#include <cstring>

#include "surf/ops.h"

namespace surf::ops {

std::vector<Tensor> split_per_head(const Tensor& x, int64_t heads, int64_t parts, int64_t head_dim) {
  if (heads <= 0 || parts <= 0 || head_dim <= 0 || x.rank() != 2 || x.dim(1) != heads * parts * head_dim) {
    fail(ErrorCode::invalid_argument, "split_per_head: x" + shape_string(x.shape()) + " is not [rows, " +
                                          std::to_string(heads) + " heads * " + std::to_string(parts) + " parts * " +
                                          std::to_string(head_dim) + "]");
  }
  const int64_t rows = x.dim(0), width = heads * head_dim;
  std::vector<Tensor> out;
  for (int64_t p = 0; p < parts; ++p) out.push_back(Tensor::empty(DType::F32, {rows, width}));
  const float* src = x.f32();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t p = 0; p < parts; ++p) {
        std::memcpy(out[static_cast<size_t>(p)].f32() + r * width + h * head_dim,
                    src + (r * heads + h) * parts * head_dim + p * head_dim, static_cast<size_t>(head_dim) * 4);
      }
    }
  }
  return out;
}

}  // namespace surf::ops
