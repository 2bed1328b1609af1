// Scaled dot-product attention with masks, additive bias, grouped-query heads and a KV cache.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/pool.h"
#include "kernels/vec.h"
#include "surf/ops.h"

namespace surf::ops {

void attention(const float* q, const float* k, const float* v, float* out, const AttentionArgs& a) {
  if (a.heads <= 0 || a.kv_heads <= 0 || a.heads % a.kv_heads != 0) {
    fail(ErrorCode::invalid_argument, "attention: " + std::to_string(a.heads) + " query heads cannot share " +
                                          std::to_string(a.kv_heads) + " key/value heads");
  }
  const int64_t cap = a.kv_capacity ? a.kv_capacity : a.kv_len;
  if (a.kv_len > cap || a.q_len <= 0 || a.head_dim <= 0) {
    fail(ErrorCode::invalid_argument,
         "attention: bad lengths (q_len " + std::to_string(a.q_len) + ", kv_len " + std::to_string(a.kv_len) + ")");
  }
  const int64_t hd = a.head_dim;
  const int64_t qs = a.q_stride ? a.q_stride : a.heads * hd;
  const int64_t ks = a.kv_stride ? a.kv_stride : a.kv_heads * hd;
  const int64_t os = a.heads * hd;
  const int64_t group = a.heads / a.kv_heads;
  // One task per (batch row, head): disjoint outputs, so results do not depend on the split.
  kernels::Pool::get().run(a.batch * a.heads, [&](int64_t task) {
    const int64_t b = task / a.heads, h = task % a.heads;
    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(a.q_len * std::max<int64_t>(a.kv_len, 1)));
    float* s = scores.data();
    const int64_t* mask = a.key_mask ? a.key_mask + b * a.kv_len : nullptr;
    const int64_t kvh = h / group;
    const float* qp = q + b * a.q_len * qs + h * hd;
    const float* kp = k + b * cap * ks + kvh * hd;
    const float* vp = v + b * cap * ks + kvh * hd;
    float* op = out + b * a.q_len * os + h * hd;
    if (a.kv_len == 0) {
      for (int64_t i = 0; i < a.q_len; ++i) std::memset(op + i * os, 0, hd * 4);
      return;
    }
    // Few queries (decoding): plain dot products; OpenBLAS's packing costs more than the work.
    const bool few = a.q_len <= 4;
    if (few) {
      for (int64_t i = 0; i < a.q_len; ++i) {
        for (int64_t j = 0; j < a.kv_len; ++j)
          s[i * a.kv_len + j] = a.scale * kernels::dot(qp + i * qs, kp + j * ks, hd);
      }
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, a.q_len, a.kv_len, hd, a.scale, qp, qs, kp, ks, 0.0f, s,
                  a.kv_len);
    }
    if (a.bias) {
      const float* bias = a.bias + (a.bias_per_batch ? b * a.heads : 0) * a.q_len * a.kv_len + h * a.q_len * a.kv_len;
      for (int64_t i = 0, n = a.q_len * a.kv_len; i < n; ++i) s[i] += bias[i];
    }
    for (int64_t i = 0; i < a.q_len; ++i) {
      float* row = s + i * a.kv_len;
      const int64_t last_visible = a.causal ? a.past + i : a.kv_len - 1;
      const int64_t first_visible = a.causal && a.window > 0 ? a.past + i - a.window + 1 : 0;
      for (int64_t j = 0; j < a.kv_len; ++j) {
        if (j > last_visible || j < first_visible || (mask && mask[j] == 0)) row[j] = -INFINITY;
      }
    }
    softmax_rows(s, a.q_len, a.kv_len);
    if (few) {
      for (int64_t i = 0; i < a.q_len; ++i) {
        float* o = op + i * os;
        std::memset(o, 0, hd * 4);
        for (int64_t j = 0; j < a.kv_len; ++j) {
          if (s[i * a.kv_len + j] != 0.0f) kernels::axpy(s[i * a.kv_len + j], vp + j * ks, o, hd);
        }
      }
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a.q_len, hd, a.kv_len, 1.0f, s, a.kv_len, vp, ks, 0.0f, op,
                  os);
    }
  });
}

void KVCache::reset(int64_t batch, int64_t capacity, int64_t width) {
  batch_ = batch;
  capacity_ = capacity;
  width_ = width;
  length_ = 0;
  k_ = Tensor::zeros(DType::F32, {batch, capacity, width});
  v_ = Tensor::zeros(DType::F32, {batch, capacity, width});
}

void KVCache::append(const float* k_src, const float* v_src, int64_t n, int64_t src_stride) {
  if (length_ + n > capacity_) {
    fail(ErrorCode::invalid_argument, "KV cache full: " + std::to_string(length_) + " + " + std::to_string(n) +
                                          " > capacity " + std::to_string(capacity_));
  }
  const int64_t ss = src_stride ? src_stride : width_;
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(k_.f32() + (b * capacity_ + length_ + i) * width_, k_src + (b * n + i) * ss, width_ * 4);
      std::memcpy(v_.f32() + (b * capacity_ + length_ + i) * width_, v_src + (b * n + i) * ss, width_ * 4);
    }
  }
  length_ += n;
}

}  // namespace surf::ops
