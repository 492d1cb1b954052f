// mlguard::mix_triggers on CUDA: the kernel and its host launch code (run_mix_triggers), in a
// header so that the same source is compiled by nvcc for the extension (mix_triggers.cu, with
// CudaLaunch) and as host C++ under the CUDA emulator for the kernel tests (tests/emulated/,
// with emu::launch).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdint>
#include <tuple>

#include "launch.cuh"
#include "mix_triggers.h"

namespace mlguard {
namespace {

struct MixShape {
  int64_t B, P, C, H, W, S;
};

// Batch and output share a dense layout with N outermost (NCHW or NHWC), so the batch part
// is a flat copy; only trigger elements need their (c, h, w) decoded.
template <typename scalar_t>
__global__ void mix_triggers_kernel(const scalar_t* x, const int64_t* y, const float* bank,
                                    const int64_t* bank_labels, scalar_t* out, int64_t* y_out,
                                    MixShape s, int64_t step, uint64_t seed, int64_t pad,
                                    bool flip, bool channels_last,
                                    const __grid_constant__ Normalize norm) {
  // norm is read in place from the kernel's parameter space (no per-thread local copy).
  const int64_t chw = s.C * s.H * s.W, batch_elems = s.B * chw, total = (s.B + s.P) * chw;
  const int64_t work = total > s.B + s.P ? total : s.B + s.P;  // labels even when chw == 0
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < work;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (i < s.B + s.P) y_out[i] = i < s.B ? y[i] : bank_labels[(step * s.P + i - s.B) % s.S];
    if (i >= total) continue;
    if (i < batch_elems) {
      out[i] = x[i];
      continue;
    }
    const int64_t r = i - batch_elems, j = r / chw, e = r % chw;
    int64_t c, h, w;
    if (channels_last) {
      c = e % s.C;
      w = (e / s.C) % s.W;
      h = e / (s.C * s.W);
    } else {
      w = e % s.W;
      h = (e / s.W) % s.H;
      c = e / (s.H * s.W);
    }
    const int64_t draw = step * s.P + j;
    const MixAugment a = mix_augment(seed, draw, pad, flip);
    out[i] = static_cast<scalar_t>(
        mix_trigger_value(bank + (draw % s.S) * chw, a, norm, c, h, w, s.H, s.W));
  }
}

// The whole op after the device guard: checks, outputs, one launch through `launch`
// (CudaLaunch or the emulator's), which is given the kernel, grid, block and arguments.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> run_mix_triggers(
    const Launch& launch, const at::Tensor& x, const at::Tensor& y, const at::Tensor& bank,
    const at::Tensor& bank_labels, int64_t step, int64_t per_batch, int64_t seed, int64_t pad,
    bool flip, c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  const Normalize norm =
      check_mix_triggers_args(x, y, bank, bank_labels, step, per_batch, pad, mean, std);
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mix_triggers", [&] {
    launch(mix_triggers_kernel<scalar_t>, blocks_for(total), kThreads, xd.data_ptr<scalar_t>(),
           yd.data_ptr<int64_t>(), bank_c.data_ptr<float>(), labels_c.data_ptr<int64_t>(),
           out.data_ptr<scalar_t>(), y_out.data_ptr<int64_t>(), s, step,
           static_cast<uint64_t>(seed), pad, flip, channels_last, norm);
  });
  return {out, y_out};
}

}  // namespace
}  // namespace mlguard
