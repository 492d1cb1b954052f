// mlguard::keyed_words: CUDA kernel (same words as the CPU kernel, bit for bit).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "keyed_words.h"
#include "keyed_words_kernel.cuh"
#include "launch.cuh"

namespace mlguard {
namespace {

at::Tensor keyed_words_cuda(const at::Tensor& index, int64_t seed, int64_t stream) {
  check_keyed_words_args(index);
  const c10::cuda::CUDAGuard guard(index.device());
  const auto idx = index.contiguous();
  auto out = at::empty({idx.size(0), 4}, idx.options());
  const int64_t n = idx.size(0);
  if (n == 0) return out;
  keyed_words_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      idx.data_ptr<int64_t>(), n, static_cast<uint64_t>(seed), stream, out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("keyed_words", &keyed_words_cuda); }

}  // namespace mlguard
