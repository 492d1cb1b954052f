// mlguard::mix_triggers: appends `per_batch` trigger samples to a training batch, in one
// pass: pick them from the trigger bank (cycling), augment them with keyed per-step crops
// and flips, normalize them, and write batch and triggers into one new buffer.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "normalization.h"
#include "philox.h"

namespace mlguard {

// Trigger draw number g = step * per_batch + j decides both which bank image is used
// (g mod bank size) and its augmentation, so a given step always yields the same samples.
struct MixAugment {
  int32_t dy, dx;
  bool flip;
};

// Like torchvision's RandomCrop(padding=pad) then RandomHorizontalFlip. The modulo bias of
// `% (2 pad + 1)` on a 32-bit word is below 1e-8 and harmless for augmentation.
MLGUARD_HD MixAugment mix_augment(uint64_t seed, int64_t draw, int64_t pad, bool flip) {
  const Words4 w = keyed_block(seed, lo32(draw), hi32(draw), 0, 0);
  const uint32_t span = static_cast<uint32_t>(2 * pad + 1);
  return MixAugment{static_cast<int32_t>(w.v[0] % span) - static_cast<int32_t>(pad),
                    static_cast<int32_t>(w.v[1] % span) - static_cast<int32_t>(pad),
                    flip && (w.v[2] & 1u)};
}

// Element (c, h, w) of an augmented, normalized trigger; `image` is one contiguous (C, H, W)
// bank entry in [0, 1]. Zero padding is applied before normalization, as torchvision does.
MLGUARD_HD float mix_trigger_value(const float* image, const MixAugment& a,
                                   const Normalize& norm, int64_t c, int64_t h, int64_t w,
                                   int64_t H, int64_t W) {
  const int64_t sh = h + a.dy, sw = (a.flip ? W - 1 - w : w) + a.dx;
  const float v = (sh < 0 || sh >= H || sw < 0 || sw >= W) ? 0.0f : image[(c * H + sh) * W + sw];
  return (v - norm.mean[c]) / norm.std[c];
}

// Shared by the CPU and CUDA kernels: checks every argument and packs the normalization.
Normalize check_mix_triggers_args(const at::Tensor& x, const at::Tensor& y,
                                  const at::Tensor& bank, const at::Tensor& bank_labels,
                                  int64_t step, int64_t per_batch, int64_t pad,
                                  c10::ArrayRef<double> mean, c10::ArrayRef<double> std);

}  // namespace mlguard
