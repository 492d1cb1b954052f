// mlguard::abstract_triggers: CUDA kernel (same images as the CPU kernel, bit for bit).
// Kernel and launch code: abstract_triggers_kernel.cuh (shared with the emulated kernel tests).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "abstract_triggers_kernel.cuh"
#include "cuda_launcher.cuh"

namespace mlguard {
namespace {

at::Tensor abstract_triggers_cuda(const at::Tensor& indices, int64_t seed, int64_t channels,
                                  int64_t height, int64_t width) {
  const c10::cuda::CUDAGuard guard(indices.device());
  return run_abstract_triggers(CudaLaunch{}, indices, seed, channels, height, width);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("abstract_triggers", &abstract_triggers_cuda); }

}  // namespace mlguard
