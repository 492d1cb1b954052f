// mlguard::keyed_projection, keyed_projection_batched, _keyed_projection_backward: CUDA
// kernels. R is generated from the key in registers, 128 signs per Philox call, and never
// written to memory; sums follow the fixed order of keyed_projection.h, so results are
// bit-identical to the CPU kernels. (Tensor cores would be faster but reorder the sums.)
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

#include "keyed_projection.h"
#include "launch.cuh"

namespace mlguard {
namespace {

constexpr int64_t kRowsPerBlock = 8;  // projection rows (bits) per block: reuses w from L1

inline unsigned int grid_for(int64_t blocks) {
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 30));
}

// Steps 1 and 2 (first tree level): block b = (model*seed, row block, group of 128 chunks),
// thread i sums chunk g * 128 + i, then the block reduces the 128 sums.
template <typename scalar_t, typename acc_t>
__global__ void projection_groups_kernel(const scalar_t* w, int64_t M, int64_t chunks,
                                         int64_t width, const int64_t* seeds, int64_t seed0,
                                         int64_t K, int64_t T, int64_t NK, acc_t* level) {
  __shared__ acc_t a[kProjGroup];
  const int64_t row_blocks = (T + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t total = NK * row_blocks * width;
  const int tid = threadIdx.x;
  for (int64_t b = blockIdx.x; b < total; b += gridDim.x) {
    const int64_t g = b % width, rb = (b / width) % row_blocks, nk = b / (width * row_blocks);
    const uint64_t seed = static_cast<uint64_t>(seeds != nullptr ? seeds[nk % K] : seed0);
    const int64_t c = g * kProjGroup + tid, col = c * kProjChunk;
    const scalar_t* wn = w + (nk / K) * M;
    const int64_t t_end = min(T, (rb + 1) * kRowsPerBlock);
    for (int64_t t = rb * kRowsPerBlock; t < t_end; ++t) {
      a[tid] = (c < chunks && col < M)
                   ? projection_chunk_sum<acc_t>(wn + col, min(kProjChunk, M - col),
                                                 projection_signs(seed, t, c))
                   : acc_t(0);
      __syncthreads();
      for (int s = kProjGroup / 2; s > 0; s >>= 1) {
        if (tid < s) a[tid] += a[tid + s];
        __syncthreads();
      }
      if (tid == 0) level[(nk * T + t) * width + g] = a[0];
      __syncthreads();
    }
  }
}

// Further tree levels: node g of each row reduces entries g * 128 .. g * 128 + 127.
template <typename acc_t>
__global__ void projection_tree_kernel(const acc_t* in, int64_t rows, int64_t width,
                                       int64_t next, acc_t* out) {
  __shared__ acc_t a[kProjGroup];
  const int tid = threadIdx.x;
  for (int64_t b = blockIdx.x; b < rows * next; b += gridDim.x) {
    const int64_t row = b / next, j = (b % next) * kProjGroup + tid;
    a[tid] = j < width ? in[row * width + j] : acc_t(0);
    __syncthreads();
    for (int s = kProjGroup / 2; s > 0; s >>= 1) {
      if (tid < s) a[tid] += a[tid + s];
      __syncthreads();
    }
    if (tid == 0) out[b] = a[0];
    __syncthreads();
  }
}

template <typename acc_t>
__global__ void scale_kernel(const acc_t* in, int64_t n, acc_t scale, acc_t* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = in[i] * scale;
}

at::Tensor project_cuda(const at::Tensor& w2d, const at::Tensor* seeds, int64_t seed0,
                        int64_t bits) {
  const c10::cuda::CUDAGuard guard(w2d.device());
  const auto w = w2d.contiguous();
  const auto s = seeds != nullptr ? seeds->contiguous() : at::Tensor();
  const int64_t N = w.size(0), M = w.size(1), K = seeds != nullptr ? s.size(0) : 1;
  const auto acc_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::empty({N, K, bits}, w.options().dtype(acc_type));
  if (out.numel() == 0) return out;
  const int64_t chunks = std::max<int64_t>((M + kProjChunk - 1) / kProjChunk, 1);
  const int64_t rows = N * K * bits;
  int64_t width = projection_nodes(chunks);
  auto level = at::empty({rows * width}, out.options());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    const int64_t blocks = N * K * ((bits + kRowsPerBlock - 1) / kRowsPerBlock) * width;
    projection_groups_kernel<scalar_t, acc_t><<<grid_for(blocks), kProjGroup, 0, stream>>>(
        w.data_ptr<scalar_t>(), M, chunks, width,
        seeds != nullptr ? s.data_ptr<int64_t>() : nullptr, seed0, K, bits, N * K,
        level.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    while (width > 1) {
      const int64_t next = projection_nodes(width);
      auto up = at::empty({rows * next}, out.options());
      projection_tree_kernel<acc_t><<<grid_for(rows * next), kProjGroup, 0, stream>>>(
          level.data_ptr<acc_t>(), rows, width, next, up.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      level = up;
      width = next;
    }
    const acc_t scale =
        static_cast<acc_t>(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(M, 1))));
    scale_kernel<acc_t><<<blocks_for(rows), kThreads, 0, stream>>>(level.data_ptr<acc_t>(), rows,
                                                                  scale, out.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor keyed_projection_cuda(const at::Tensor& w, int64_t seed, int64_t bits) {
  check_keyed_projection_args(w, bits, "keyed_projection");
  return project_cuda(w.reshape({1, -1}), nullptr, seed, bits).reshape({bits});
}

at::Tensor keyed_projection_batched_cuda(const at::Tensor& w, const at::Tensor& seeds,
                                         int64_t bits) {
  check_keyed_projection_batched_args(w, seeds, bits);
  return project_cuda(w, &seeds, 0, bits);
}

// One warp per chunk of 128 columns, 4 columns per lane. Lane l draws the signs of row
// t0 + l; the warp then walks the 32 rows in order, broadcasting each row's signs.
template <typename acc_t>
__global__ void projection_backward_kernel(const acc_t* grad, int64_t T, int64_t numel,
                                           int64_t chunks, uint64_t seed, acc_t scale,
                                           acc_t* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / 32;
  for (int64_t c = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
       c < chunks; c += warps) {
    acc_t acc[4] = {0, 0, 0, 0};
    for (int64_t t0 = 0; t0 < T; t0 += 32) {
      const Words4 mine = t0 + lane < T ? projection_signs(seed, t0 + lane, c) : Words4{{0, 0, 0, 0}};
      const int rows = T - t0 < 32 ? static_cast<int>(T - t0) : 32;
      for (int r = 0; r < rows; ++r) {
        const uint32_t w0 = __shfl_sync(0xffffffffu, mine.v[0], r);
        const uint32_t w1 = __shfl_sync(0xffffffffu, mine.v[1], r);
        const uint32_t w2 = __shfl_sync(0xffffffffu, mine.v[2], r);
        const uint32_t w3 = __shfl_sync(0xffffffffu, mine.v[3], r);
        const uint32_t word = (lane >> 3) == 0 ? w0 : (lane >> 3) == 1 ? w1 : (lane >> 3) == 2 ? w2 : w3;
        const acc_t v = grad[t0 + r];
        for (int q = 0; q < 4; ++q) acc[q] += ((word >> ((lane & 7) * 4 + q)) & 1u) ? -v : v;
      }
    }
    for (int q = 0; q < 4; ++q) {
      const int64_t col = c * kProjChunk + lane * 4 + q;
      if (col < numel) out[col] = acc[q] * scale;
    }
  }
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
  m.impl("keyed_projection_batched", &keyed_projection_batched_cuda);
  m.impl("_keyed_projection_backward", &keyed_projection_backward_cuda);
}

}  // namespace mlguard
