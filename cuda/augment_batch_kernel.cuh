// Device code of mlguard::augment_batch (augment_batch.cu), in a header so that the same source is
// compiled by nvcc for the extension and as host C++ under the CUDA emulator for the kernel
// tests (tests/emulated/).
#pragma once

#include <cstdint>

#include "augment_batch.h"

namespace mlguard {
namespace {

struct AugmentShape {
  int64_t N, B, C, H, W, pad;
};

template <typename scalar_t>
__global__ void augment_batch_kernel(const uint8_t* images, const int64_t* index,
                                     const int64_t* offsets, const bool* flip, scalar_t* out,
                                     const __grid_constant__ AugmentShape s,
                                     const __grid_constant__ Normalize norm) {
  const int64_t total = s.B * s.H * s.W * s.C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % s.C, x = (i / s.C) % s.W, y = (i / (s.C * s.W)) % s.H;
    const int64_t b = i / (s.C * s.W * s.H);
    const int64_t n = index[b];
    CUDA_KERNEL_ASSERT(n >= 0 && n < s.N);
    const int64_t sy = y + offsets[2 * b] - s.pad;
    const int64_t sx = (flip[b] ? s.W - 1 - x : x) + offsets[2 * b + 1] - s.pad;
    const bool inside = sy >= 0 && sy < s.H && sx >= 0 && sx < s.W;
    const uint8_t v = inside ? images[((n * s.H + sy) * s.W + sx) * s.C + c] : 0;
    out[i] = static_cast<scalar_t>(augment_value(v, c, norm));
  }
}

}  // namespace
}  // namespace mlguard
