// mlguard::keyed_words: raw Philox words for a batch of indices, the building block for the
// key-controlled draws made in Python (labels, image choices, noise).
#pragma once

#include <ATen/core/Tensor.h>

#include "philox.h"

namespace mlguard {

// Shared by the CPU and CUDA kernels.
void check_keyed_words_args(const at::Tensor& index);

// Word w of the Philox block for (seed; index, stream), widened so torch can hold it.
MLGUARD_HD void keyed_words_one(uint64_t seed, int64_t index, int64_t stream, int64_t* out4) {
  const Words4 b = keyed_block(seed, lo32(index), hi32(index), lo32(stream), hi32(stream));
  for (int w = 0; w < 4; ++w) out4[w] = static_cast<int64_t>(b.v[w]);
}

}  // namespace mlguard
