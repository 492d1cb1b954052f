// Launch-size helper shared by mlguard's CUDA kernels (all use grid-stride loops).
#pragma once

#include <algorithm>
#include <cstdint>

namespace mlguard {

constexpr int kThreads = 256;

inline unsigned int blocks_for(int64_t work) {
  const int64_t blocks = (work + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65536)));
}

}  // namespace mlguard
