// mlguard::keyed_projection (training forward), keyed_projection_sums (the exact read) and
// _keyed_projection_backward: CUDA kernels. R is generated from the key in registers and
// never written to memory.
//
// Forward: a block takes a tile of up to 8 chunks x 128 columns (of up to 8 models), reads it
// from global memory once (quantized for the exact read, keyed_projection.h) and turns every
// 4 columns into a 16-entry table of their signed sums in shared memory; each thread then owns
// a row t, draws its Philox signs and adds one table entry per 4 columns, for every key.
// A row's tile sum is added to the output with one atomic: int64 for the exact read (integer
// addition is associative, so the result does not depend on the order), float for the
// training path (which need not be exact). No buffer proportional to M is allocated.
// The exact read of many models at once (the scan) runs as an int8 tensor-core GEMM instead
// (keyed_projection_mma_kernel.cuh; MLGUARD_PROJECTION_MMA=0 / 1 / auto chooses).
// Backward: signs staged in shared memory, tables over 4 rows of grad_y
// (keyed_projection_kernel.cuh). Kernels and launch code live in keyed_projection_kernel.cuh,
// shared with the emulated kernel tests.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <atomic>
#include <vector>

#include "cuda_launcher.cuh"
#include "keyed_projection_kernel.cuh"

namespace mlguard {
namespace {

// Multiprocessors of the current device, asked once per device (the tile choice needs it
// on every call).
int sm_count() {
  static std::vector<std::atomic<int>> counts(c10::cuda::device_count());
  const c10::DeviceIndex device = c10::cuda::current_device();
  int count = counts.at(device).load(std::memory_order_relaxed);
  if (count == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    counts[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

// Compute capability x 10 of the current device, asked once per device.
int sm_version() {
  static std::vector<std::atomic<int>> versions(c10::cuda::device_count());
  const c10::DeviceIndex device = c10::cuda::current_device();
  int version = versions.at(device).load(std::memory_order_relaxed);
  if (version == 0) {
    int major = 0, minor = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    version = 10 * major + minor;
    versions[device].store(version, std::memory_order_relaxed);
  }
  return version;
}

std::tuple<at::Tensor, at::Tensor> keyed_projection_sums_cuda(const at::Tensor& w2d,
                                                              const at::Tensor& seeds,
                                                              int64_t bits) {
  const c10::cuda::CUDAGuard guard(w2d.device());
  return run_keyed_projection_sums(CudaLaunch{}, w2d, seeds, bits, sm_count(), sm_version(),
                                   sums_kernel_from_env());
}

at::Tensor keyed_projection_cuda(const at::Tensor& w_in, int64_t seed, int64_t bits) {
  // Float atomic additions in whatever order the blocks finish: run-to-run differences in the
  // last bits. (The exact read, keyed_projection_sums, adds integers and is deterministic.)
  at::globalContext().alertNotDeterministic("mlguard::keyed_projection on CUDA (training forward)");
  const c10::cuda::CUDAGuard guard(w_in.device());
  return run_keyed_projection(CudaLaunch{}, w_in, seed, bits, sm_count());
}

at::Tensor keyed_projection_backward_cuda(const at::Tensor& grad_y, int64_t seed, int64_t numel) {
  const c10::cuda::CUDAGuard guard(grad_y.device());
  return run_keyed_projection_backward(CudaLaunch{}, grad_y, seed, numel);
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) {
  m.impl("keyed_projection", &keyed_projection_cuda);
  m.impl("keyed_projection_sums", &keyed_projection_sums_cuda);
  m.impl("_keyed_projection_backward", &keyed_projection_backward_cuda);
}

}  // namespace mlguard
