// Device code of mlguard::keyed_words (keyed_words.cu), in a header so that the same source is
// compiled by nvcc for the extension and as host C++ under the CUDA emulator for the kernel
// tests (tests/emulated/).
#pragma once

#include <cstdint>

#include "keyed_words.h"

namespace mlguard {
namespace {

__global__ void keyed_words_kernel(const int64_t* index, int64_t n, uint64_t seed,
                                   int64_t stream, int64_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keyed_words_one(seed, index[i], stream, out + 4 * i);
  }
}

}  // namespace
}  // namespace mlguard
