// mlguard::mix_triggers: the whole step (gather, augment, normalize, append, labels) in one
// kernel writing one new buffer, with no host synchronization.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
#include "mix_triggers.h"
#include "mix_triggers_kernel.cuh"

namespace mlguard {
namespace {

std::tuple<at::Tensor, at::Tensor> mix_triggers_cuda(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& bank,
    const at::Tensor& bank_labels, int64_t step, int64_t per_batch, int64_t seed, int64_t pad,
    bool flip, c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  const Normalize norm =
      check_mix_triggers_args(x, y, bank, bank_labels, step, per_batch, pad, mean, std);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto fmt = x.suggest_memory_format();
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const MixShape s{x.size(0), per_batch, x.size(1), x.size(2), x.size(3), bank.size(0)};
  auto out = at::empty({s.B + s.P, s.C, s.H, s.W}, x.options(), fmt);
  auto y_out = at::empty({s.B + s.P}, y.options());
  const int64_t total = std::max((s.B + s.P) * s.C * s.H * s.W, s.B + s.P);
  if (total == 0) return {out, y_out};
  const auto xd = x.contiguous(fmt);
  const auto yd = y.contiguous();
  const auto bank_c = bank.contiguous();
  const auto labels_c = bank_labels.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mix_triggers", [&] {
    mix_triggers_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        xd.data_ptr<scalar_t>(), yd.data_ptr<int64_t>(), bank_c.data_ptr<float>(),
        labels_c.data_ptr<int64_t>(), out.data_ptr<scalar_t>(), y_out.data_ptr<int64_t>(), s,
        step, static_cast<uint64_t>(seed), pad, flip, channels_last, norm);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, y_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("mix_triggers", &mix_triggers_cuda); }

}  // namespace mlguard
