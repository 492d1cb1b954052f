// mlguard::augment_batch: a training batch made from a uint8 image set in one pass: gather
// the chosen images, crop each at its offset inside a zero padding, flip it, normalize it
// (torchvision's ToTensor + Normalize arithmetic) and write it channels-last in the model's
// dtype. The offsets and flips are inputs, so the CPU and CUDA kernels give the same bits.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include "normalization.h"
#include "philox.h"  // MLGUARD_HD

namespace mlguard {

// The output value for pixel byte `v` of channel `c`: (v / 255 - mean) / std in float32,
// exactly as ToTensor then Normalize compute it. Padding is v = 0 (black), as RandomCrop.
MLGUARD_HD float augment_value(uint8_t v, int64_t c, const Normalize& norm) {
  const float x = static_cast<float>(v) / 255.0f;
  return (x - norm.mean[c]) / norm.std[c];
}

// Shared by the CPU and CUDA kernels: checks every argument and packs the normalization.
Normalize check_augment_batch_args(const at::Tensor& images, const at::Tensor& index,
                                   const at::Tensor& offsets, const at::Tensor& flip, int64_t pad,
                                   c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                                   at::ScalarType dtype);

}  // namespace mlguard
