// Device code of mlguard::abstract_triggers (abstract_triggers.cu), in a header so that the same source is
// compiled by nvcc for the extension and as host C++ under the CUDA emulator for the kernel
// tests (tests/emulated/).
#pragma once

#include <cstdint>

#include "abstract_triggers.h"

namespace mlguard {
namespace {

// One block per (image, channel) plane: one thread draws the plane's shapes and colours
// into shared memory, then all threads paint pixels.
__global__ void abstract_triggers_kernel(const int64_t* indices, int64_t planes,
                                         int64_t channels, int64_t height, int64_t width,
                                         uint64_t seed, float* out) {
  __shared__ AbstractPlane plane;
  const int64_t plane_size = height * width;
  for (int64_t pl = blockIdx.x; pl < planes; pl += gridDim.x) {
    if (threadIdx.x == 0) plane = abstract_plane(seed, indices[pl / channels], pl % channels);
    __syncthreads();
    for (int64_t i = threadIdx.x; i < plane_size; i += blockDim.x) {
      out[pl * plane_size + i] =
          static_cast<float>(abstract_level(plane, i / width, i % width, height, width)) /
          255.0f;
    }
    __syncthreads();  // before the next plane overwrites `plane`
  }
}

}  // namespace
}  // namespace mlguard
