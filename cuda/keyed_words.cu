// mlguard::keyed_words: CUDA kernel (same words as the CPU kernel, bit for bit).
// Kernel and launch code: keyed_words_kernel.cuh (shared with the emulated kernel tests).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_launcher.cuh"
#include "keyed_words_kernel.cuh"

namespace mlguard {
namespace {

at::Tensor keyed_words_cuda(const at::Tensor& index, int64_t seed, int64_t stream) {
  const c10::cuda::CUDAGuard guard(index.device());
  return run_keyed_words(CudaLaunch{}, index, seed, stream);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("keyed_words", &keyed_words_cuda); }

}  // namespace mlguard
