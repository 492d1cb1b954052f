// mlguard::augment_batch: one thread per output element, written channels-last (coalesced);
// offsets, flips and indices are inputs; checking their values (as the CPU op does) costs
// one host synchronization. Kernel and launch code: augment_batch_kernel.cuh (shared with
// the emulated kernel tests).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "augment_batch_kernel.cuh"
#include "cuda_launcher.cuh"

namespace mlguard {
namespace {

at::Tensor augment_batch_cuda(const at::Tensor& images, const at::Tensor& index,
                              const at::Tensor& offsets, const at::Tensor& flip, int64_t pad,
                              c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                              at::ScalarType dtype) {
  const c10::cuda::CUDAGuard guard(images.device());
  return run_augment_batch(CudaLaunch{}, images, index, offsets, flip, pad, mean, std, dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("augment_batch", &augment_batch_cuda); }

}  // namespace mlguard
