// mlguard::augment_batch: one thread per output element, written channels-last (coalesced);
// offsets, flips and indices are inputs; checking their values (as the CPU op does) costs
// one host synchronization.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "augment_batch.h"
#include "augment_batch_kernel.cuh"
#include "launch.cuh"

namespace mlguard {
namespace {

at::Tensor augment_batch_cuda(const at::Tensor& images, const at::Tensor& index,
                              const at::Tensor& offsets, const at::Tensor& flip, int64_t pad,
                              c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                              at::ScalarType dtype) {
  const Normalize norm =
      check_augment_batch_args(images, index, offsets, flip, pad, mean, std, dtype);
  const c10::cuda::CUDAGuard guard(images.device());
  const AugmentShape s{images.size(0), index.numel(), images.size(1), images.size(2),
                       images.size(3), pad};
  auto out = at::empty({s.B, s.C, s.H, s.W}, images.options().dtype(dtype),
                       at::MemoryFormat::ChannelsLast);
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto img = images.contiguous(at::MemoryFormat::ChannelsLast);
  const auto idx = index.contiguous();
  const auto off = offsets.contiguous();
  const auto flp = flip.contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "augment_batch", [&] {
    augment_batch_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        img.data_ptr<uint8_t>(), idx.data_ptr<int64_t>(), off.data_ptr<int64_t>(),
        flp.data_ptr<bool>(), out.data_ptr<scalar_t>(), s, norm);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) { m.impl("augment_batch", &augment_batch_cuda); }

}  // namespace mlguard
