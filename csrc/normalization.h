// Per-channel normalization (x - mean[c]) / std[c] of the ops that normalize images
// (mix_triggers, augment_batch): one struct, passed to the CUDA kernels by value (no
// host-to-device copy), and one check, shared by their CPU and CUDA kernels.
#pragma once

#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace mlguard {

constexpr int64_t kMaxChannels = 16;

struct Normalize {
  float mean[kMaxChannels];
  float std[kMaxChannels];
};

// One finite mean and one finite, positive std per channel (C of them), packed; `op` names
// the op in the messages.
inline Normalize check_normalization(const char* op, int64_t C, c10::ArrayRef<double> mean,
                                     c10::ArrayRef<double> std) {
  TORCH_CHECK(C <= kMaxChannels, op, ": at most ", kMaxChannels,
              " channels are supported, got ", C);
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == C && static_cast<int64_t>(std.size()) == C,
              op, ": mean and std need one value per channel (", C, "), got ", mean.size(),
              " and ", std.size());
  Normalize norm{};
  for (int64_t c = 0; c < C; ++c) {
    TORCH_CHECK(std::isfinite(mean[c]) && std::isfinite(std[c]) && std[c] > 0, op,
                ": mean must be finite and std finite and > 0, got mean[", c, "] = ", mean[c],
                ", std[", c, "] = ", std[c]);
    norm.mean[c] = static_cast<float>(mean[c]);
    norm.std[c] = static_cast<float>(std[c]);
  }
  return norm;
}

}  // namespace mlguard
