// mlguard::abstract_triggers on CUDA: the kernel and its host launch code
// (run_abstract_triggers), in a header so that the same source is compiled by nvcc for the
// extension (abstract_triggers.cu, with CudaLaunch) and as host C++ under the CUDA emulator for
// the kernel tests (tests/emulated/, with emu::launch).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>

#include "abstract_triggers.h"
#include "launch.cuh"

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

// The whole op after the device guard; one block per plane (up to 65,536, then grid-stride).
template <typename Launch>
at::Tensor run_abstract_triggers(const Launch& launch, const at::Tensor& indices, int64_t seed,
                                 int64_t channels, int64_t height, int64_t width) {
  check_abstract_triggers_args(indices, channels, height, width);
  const auto idx = indices.contiguous();
  auto out = at::empty({idx.size(0), channels, height, width}, idx.options().dtype(at::kFloat));
  const int64_t planes = idx.size(0) * channels;
  if (planes == 0) return out;
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(planes, 65536));
  launch(abstract_triggers_kernel, blocks, kThreads, idx.data_ptr<int64_t>(), planes, channels,
         height, width, static_cast<uint64_t>(seed), out.data_ptr<float>());
  return out;
}

}  // namespace
}  // namespace mlguard
