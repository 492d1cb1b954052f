// mlguard::abstract_triggers: CUDA kernel (same images as the CPU kernel, bit for bit).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "abstract_triggers.h"
#include "abstract_triggers_kernel.cuh"
#include "launch.cuh"

namespace mlguard {
namespace {

at::Tensor abstract_triggers_cuda(const at::Tensor& indices, int64_t seed, int64_t channels,
                                  int64_t height, int64_t width) {
  check_abstract_triggers_args(indices, channels, height, width);
  const c10::cuda::CUDAGuard guard(indices.device());
  const auto idx = indices.contiguous();
  auto out = at::empty({idx.size(0), channels, height, width}, idx.options().dtype(at::kFloat));
  const int64_t planes = idx.size(0) * channels;
  if (planes == 0) return out;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(planes, 65536));
  abstract_triggers_kernel<<<blocks, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      idx.data_ptr<int64_t>(), planes, channels, height, width, static_cast<uint64_t>(seed),
      out.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("abstract_triggers", &abstract_triggers_cuda); }

}  // namespace mlguard
