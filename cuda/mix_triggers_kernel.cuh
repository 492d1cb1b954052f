// Device code of mlguard::mix_triggers (mix_triggers.cu), in a header so that the same source is
// compiled by nvcc for the extension and as host C++ under the CUDA emulator for the kernel
// tests (tests/emulated/).
#pragma once

#include <cstdint>

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

}  // namespace
}  // namespace mlguard
