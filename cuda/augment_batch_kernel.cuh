// mlguard::augment_batch on CUDA: the kernel and its host launch code (run_augment_batch), in
// a header so that the same source is compiled by nvcc for the extension (augment_batch.cu,
// with CudaLaunch) and as host C++ under the CUDA emulator for the kernel tests
// (tests/emulated/, with emu::launch).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstdint>

#include "augment_batch.h"
#include "launch.cuh"

namespace mlguard {
namespace {

struct AugmentShape {
  int64_t N, B, C, H, W, pad;
};

template <typename scalar_t>
__global__ void augment_batch_kernel(const uint8_t* images, const int64_t* index,
                                     const int64_t* offsets, const bool* flip, scalar_t* out,
                                     const __grid_constant__ AugmentShape s,
                                     const __grid_constant__ Normalize norm) {
  const int64_t total = s.B * s.H * s.W * s.C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % s.C, x = (i / s.C) % s.W, y = (i / (s.C * s.W)) % s.H;
    const int64_t b = i / (s.C * s.W * s.H);
    const int64_t n = index[b];
    CUDA_KERNEL_ASSERT(n >= 0 && n < s.N);
    const int64_t sy = y + offsets[2 * b] - s.pad;
    const int64_t sx = (flip[b] ? s.W - 1 - x : x) + offsets[2 * b + 1] - s.pad;
    const bool inside = sy >= 0 && sy < s.H && sx >= 0 && sx < s.W;
    const uint8_t v = inside ? images[((n * s.H + sy) * s.W + sx) * s.C + c] : 0;
    out[i] = static_cast<scalar_t>(augment_value(v, c, norm));
  }
}

// The whole op after the device guard: value checks (as the CPU op makes them), output, one
// launch through `launch` (CudaLaunch or the emulator's).
template <typename Launch>
at::Tensor run_augment_batch(const Launch& launch, const at::Tensor& images,
                             const at::Tensor& index, const at::Tensor& offsets,
                             const at::Tensor& flip, int64_t pad, c10::ArrayRef<double> mean,
                             c10::ArrayRef<double> std, at::ScalarType dtype) {
  const Normalize norm =
      check_augment_batch_args(images, index, offsets, flip, pad, mean, std, dtype);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "augment_batch", [&] {
    launch(augment_batch_kernel<scalar_t>, blocks_for(total), kThreads, img.data_ptr<uint8_t>(),
           idx.data_ptr<int64_t>(), off.data_ptr<int64_t>(), flp.data_ptr<bool>(),
           out.data_ptr<scalar_t>(), s, norm);
  });
  return out;
}

}  // namespace
}  // namespace mlguard
