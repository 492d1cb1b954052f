// The launcher the .cu files hand to their op's shared host code (run_<op> in
// <op>_kernel.cuh): kernel<<<grid, block, 0, current stream>>>(args...) and the launch check.
// The emulated kernel tests hand the same code emu::launch instead (tests/emulated/), so the
// grid, block and tile choices and the argument packing they check are the ones nvcc builds.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>

namespace mlguard {

struct CudaLaunch {
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), unsigned int grid, unsigned int block,
                  Args&&... args) const {
    kernel<<<grid, block, 0, c10::cuda::getCurrentCUDAStream()>>>(std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace mlguard
