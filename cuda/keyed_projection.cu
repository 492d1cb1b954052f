// mlguard::keyed_projection (training forward), keyed_projection_sums (the exact read) and
// _keyed_projection_backward: CUDA kernels. R is generated from the key in registers and
// never written to memory.
//
// Forward: a block takes a tile of up to 8 chunks x 128 columns (of up to 8 models) and
// reads it from global memory once, coalesced, into shared memory (quantized for the exact
// read, keyed_projection.h); each thread then owns a row t, draws its Philox signs and sums
// the tile for every key, reading shared values that all lanes of a warp share (broadcast).
// A row's tile sum is added to the output with one atomic: int64 for the exact read (integer
// addition is associative, so the result does not depend on the order), float for the
// training path (which need not be exact). No buffer proportional to M is allocated.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <vector>

#include "keyed_projection.h"
#include "keyed_projection_kernel.cuh"
#include "launch.cuh"

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

// out (N, K, bits), zeroed, then the kernel; shifts only for the exact read.
template <bool kExact>
void project_cuda(const at::Tensor& w, const int64_t* seeds, int64_t seed0, int64_t K,
                  int64_t bits, const at::Tensor& shifts, at::Tensor& out) {
  const int64_t N = w.size(0), M = w.size(1);
  if (out.numel() == 0 || M == 0) return;
  const int64_t chunks = (M + kProjChunk - 1) / kProjChunk;
  const ProjectionLaunch l = projection_launch(N, chunks, sm_count());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const double scale = 1.0 / std::sqrt(static_cast<double>(M));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection", [&] {
    if constexpr (kExact) {
      projection_kernel<scalar_t, int32_t, int64_t, true><<<l.grid, kBlock, 0, stream>>>(
          w.data_ptr<scalar_t>(), N, M, chunks, seeds, seed0, K, bits,
          shifts.data_ptr<int64_t>(), l.nb, l.tc, int64_t{1}, out.data_ptr<int64_t>());
    } else {
      using V = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      projection_kernel<scalar_t, V, V, false><<<l.grid, kBlock, 0, stream>>>(
          w.data_ptr<scalar_t>(), N, M, chunks, seeds, seed0, K, bits, nullptr, l.nb, l.tc,
          static_cast<V>(scale), out.data_ptr<V>());
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

std::tuple<at::Tensor, at::Tensor> keyed_projection_sums_cuda(const at::Tensor& w2d,
                                                              const at::Tensor& seeds,
                                                              int64_t bits) {
  check_keyed_projection_batched_args(w2d, seeds, bits, "keyed_projection_sums");
  const c10::cuda::CUDAGuard guard(w2d.device());
  const auto w = w2d.contiguous();
  const auto s = seeds.contiguous();
  auto shifts = projection_shifts(w);  // NaN/inf: kProjNonFinite, raised by the wrapper
  auto sums = at::zeros({w.size(0), s.size(0), bits}, w.options().dtype(at::kLong));
  project_cuda<true>(w, s.data_ptr<int64_t>(), 0, s.size(0), bits, shifts, sums);
  return {sums, shifts};
}

at::Tensor keyed_projection_cuda(const at::Tensor& w_in, int64_t seed, int64_t bits) {
  check_keyed_projection_args(w_in, bits, "keyed_projection");
  // Float atomic additions in whatever order the blocks finish: run-to-run differences in the
  // last bits. (The exact read, keyed_projection_sums, adds integers and is deterministic.)
  at::globalContext().alertNotDeterministic("mlguard::keyed_projection on CUDA (training forward)");
  const c10::cuda::CUDAGuard guard(w_in.device());
  const auto w = w_in.contiguous().reshape({1, -1});
  const auto acc_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::zeros({1, 1, bits}, w.options().dtype(acc_type));
  project_cuda<false>(w, nullptr, seed, 1, bits, at::Tensor(), out);
  return out.reshape({bits});
}

at::Tensor keyed_projection_backward_cuda(const at::Tensor& grad_y, int64_t seed, int64_t numel) {
  check_keyed_projection_backward_args(grad_y, numel);
  const c10::cuda::CUDAGuard guard(grad_y.device());
  const auto g = grad_y.contiguous();
  auto out = at::empty({numel}, g.options());
  const int64_t chunks = (numel + kProjChunk - 1) / kProjChunk;
  if (numel == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "_keyed_projection_backward", [&] {
    const scalar_t scale =
        static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(numel, 1))));
    projection_backward_kernel<scalar_t>
        <<<blocks_for(chunks * 32), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            g.data_ptr<scalar_t>(), g.size(0), numel, chunks, static_cast<uint64_t>(seed), scale,
            out.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(mlguard, CUDA, m) {
  m.impl("keyed_projection", &keyed_projection_cuda);
  m.impl("keyed_projection_sums", &keyed_projection_sums_cuda);
  m.impl("_keyed_projection_backward", &keyed_projection_backward_cuda);
}

}  // namespace mlguard
