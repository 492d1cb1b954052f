// mlguard::keyed_projection: y = R w with a secret R in {+1, -1}^{T x M} / sqrt(M) that is
// regenerated from the key inside the kernels and never stored (Uchida et al. store it,
// which caps M; regenerating it lets a message spread over a whole layer or model).
//
// The sum has one fixed order, the same in the CPU and CUDA kernels, so y is bit-identical
// on every device (a verdict must not depend on where it was computed):
//   1. chunk sums: columns are cut into chunks of 128 (one Philox block = 128 sign bits per
//      row); each chunk is summed sequentially from 0, adding +w or -w;
//   2. a tree: chunk sums are reduced in groups of 128 with the shared-memory pattern
//      a[i] += a[i + s] for s = 64, 32, ..., 1 (missing entries are 0), level by level
//      until one value is left;
//   3. the total is multiplied by 1/sqrt(M) (rounded once to the accumulation type).
// Accumulation is in float32 (float64 for float64 input); signs flip exactly.
#pragma once

#include <ATen/core/Tensor.h>

#include "philox.h"

namespace mlguard {

constexpr int64_t kProjChunk = 128;  // columns per Philox block
constexpr int64_t kProjGroup = 128;  // values per tree node
constexpr uint32_t kProjStream = 0x70726a31u;  // "prj1": keeps these draws apart from others

// The 128 signs of row t over chunk c: bit j set means column 128 c + j gets -1.
MLGUARD_HD Words4 projection_signs(uint64_t seed, int64_t t, int64_t chunk) {
  return keyed_block(seed, lo32(chunk), hi32(chunk), static_cast<uint32_t>(t), kProjStream);
}

MLGUARD_HD bool projection_negative(const Words4& signs, int64_t j) {
  return (signs.v[j >> 5] >> (j & 31)) & 1u;
}

// Step 1 for one chunk starting at `w`, with len <= 128 columns.
template <typename acc_t, typename scalar_t>
MLGUARD_HD acc_t projection_chunk_sum(const scalar_t* w, int64_t len, const Words4& signs) {
  acc_t acc = 0;
  for (int64_t j = 0; j < len; ++j) {
    const acc_t v = static_cast<acc_t>(w[j]);
    acc += projection_negative(signs, j) ? -v : v;
  }
  return acc;
}

inline int64_t projection_nodes(int64_t n) { return (n + kProjGroup - 1) / kProjGroup; }

// Shared by the CPU and CUDA kernels.
void check_keyed_projection_args(const at::Tensor& w, int64_t bits, const char* op);
void check_keyed_projection_batched_args(const at::Tensor& w, const at::Tensor& seeds,
                                         int64_t bits);
void check_keyed_projection_backward_args(const at::Tensor& grad_y, int64_t numel);

}  // namespace mlguard
