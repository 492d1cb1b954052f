// mlguard::keyed_words on CUDA: the kernel and its host launch code (run_keyed_words), in a
// header so that the same source is compiled by nvcc for the extension (keyed_words.cu, with
// CudaLaunch) and as host C++ under the CUDA emulator for the kernel tests (tests/emulated/,
// with emu::launch).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "keyed_words.h"
#include "launch.cuh"

namespace mlguard {
namespace {

__global__ void keyed_words_kernel(const int64_t* index, int64_t n, uint64_t seed,
                                   int64_t stream, int64_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keyed_words_one(seed, index[i], stream, out + 4 * i);
  }
}

// The whole op after the device guard.
template <typename Launch>
at::Tensor run_keyed_words(const Launch& launch, const at::Tensor& index, int64_t seed,
                           int64_t stream) {
  check_keyed_words_args(index);
  const auto idx = index.contiguous();
  auto out = at::empty({idx.size(0), 4}, idx.options());
  const int64_t n = idx.size(0);
  if (n == 0) return out;
  launch(keyed_words_kernel, blocks_for(n), kThreads, idx.data_ptr<int64_t>(), n,
         static_cast<uint64_t>(seed), stream, out.data_ptr<int64_t>());
  return out;
}

}  // namespace
}  // namespace mlguard
