// mlguard::mix_triggers: the whole step (gather, augment, normalize, append, labels) in one
// kernel writing one new buffer, with no host synchronization. Kernel and launch code:
// mix_triggers_kernel.cuh (shared with the emulated kernel tests).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda_launcher.cuh"
#include "mix_triggers_kernel.cuh"

namespace mlguard {
namespace {

std::tuple<at::Tensor, at::Tensor> mix_triggers_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& bank,
    const at::Tensor& bank_labels, int64_t step, int64_t per_batch, int64_t seed, int64_t pad,
    bool flip, c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  const c10::cuda::CUDAGuard guard(x.device());
  return run_mix_triggers(CudaLaunch{}, x, y, bank, bank_labels, step, per_batch, seed, pad,
                          flip, mean, std);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("mix_triggers", &mix_triggers_cuda); }

}  // namespace mlguard
