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
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>

#include "keyed_projection.h"
#include "launch.cuh"

namespace mlguard {
namespace {

constexpr int kBlock = 256;
constexpr int kTileChunks = 8;  // chunks in shared memory per block (models x chunks)

// sum_j sign(R[t, 128 c + j]) v[j] over one chunk = total - 2 * (sum of v under set bits).
template <typename V>
__device__ __forceinline__ V chunk_sum(const V* v, V total, const Words4& s) {
  V neg = 0;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
#pragma unroll
    for (int j = 0; j < 32; ++j) neg += ((s.v[q] >> j) & 1u) ? v[32 * q + j] : V(0);
  }
  return total - V(2) * neg;
}

__device__ __forceinline__ void emit(int64_t* out, int32_t v, int64_t) {
  atomicAdd(reinterpret_cast<unsigned long long*>(out),
            static_cast<unsigned long long>(static_cast<long long>(v)));  // two's complement
}
__device__ __forceinline__ void emit(float* out, float v, float scale) { atomicAdd(out, v * scale); }
__device__ __forceinline__ void emit(double* out, double v, double scale) {
  atomicAdd(out, v * scale);
}

// Work item = (group of nb models, tile of tc chunks), nb * tc <= kTileChunks. Rows are
// spread over `rows` threads (a multiple of 32); with T < 256 the remaining threads split
// the tile's chunks between them (`lanes`).
template <typename scalar_t, typename V, typename Out, bool kExact>
__global__ void __launch_bounds__(kBlock)
projection_kernel(const scalar_t* __restrict__ w, int64_t N, int64_t M, int64_t chunks,
                  const int64_t* __restrict__ seeds, int64_t seed0, int64_t K, int64_t T,
                  const int64_t* __restrict__ shifts, int nb, int tc, Out scale,
                  Out* __restrict__ out) {
  __shared__ __align__(16) V vals[kTileChunks * kProjChunk];
  __shared__ V totals[kTileChunks];
  const int64_t tiles = (chunks + tc - 1) / tc, groups = (N + nb - 1) / nb;
  const int rows = T < kBlock ? static_cast<int>((T + 31) / 32 * 32) : kBlock;
  const int lanes = kBlock / rows;
  const int r = threadIdx.x % rows, lane = threadIdx.x / rows;
  const int warp = threadIdx.x / 32, lid = threadIdx.x % 32;
  const int per_tile = tc * static_cast<int>(kProjChunk);
  for (int64_t item = blockIdx.x; item < groups * tiles; item += gridDim.x) {
    const int64_t g = item / tiles, c0 = (item % tiles) * tc;
    __syncthreads();  // the previous item's values are no longer read
    for (int i = threadIdx.x; i < nb * per_tile; i += kBlock) {
      const int64_t model = g * nb + i / per_tile, col = c0 * kProjChunk + i % per_tile;
      V v = 0;
      if (model < N && col < M) {
        if constexpr (kExact) {
          const int64_t shift = shifts[model];
          if (shift != kProjNonFinite)  // the caller raises for such a model
            v = projection_quantize(static_cast<double>(w[model * M + col]), shift,
                                    projection_factor(shift));
        } else {
          v = static_cast<V>(w[model * M + col]);
        }
      }
      vals[i] = v;
    }
    __syncthreads();
    if (warp < nb * tc) {  // chunk totals, one warp each
      const V* cv = vals + warp * kProjChunk;
      V s = cv[lid] + cv[lid + 32] + cv[lid + 64] + cv[lid + 96];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
      if (lid == 0) totals[warp] = s;
    }
    __syncthreads();
    for (int64_t k = 0; k < K; ++k) {
      const uint64_t seed = static_cast<uint64_t>(seeds != nullptr ? seeds[k] : seed0);
      for (int64_t t = r; t < T; t += rows) {
        V acc = 0;  // nb == 1: up to 8 chunks, |acc| <= 2^26 for the exact read
        bool any = false;
        for (int c = lane; c < tc && c0 + c < chunks; c += lanes) {
          const Words4 s = projection_signs(seed, t, c0 + c);
          for (int n = 0; n < nb && g * nb + n < N; ++n) {
            const V v = chunk_sum(vals + (n * tc + c) * kProjChunk, totals[n * tc + c], s);
            if (nb == 1) {
              acc += v;
              any = true;
            } else {
              emit(out + ((g * nb + n) * K + k) * T + t, v, scale);
            }
          }
        }
        if (any) emit(out + (g * K + k) * T + t, acc, scale);
      }
    }
  }
}

int sm_count() {
  int count = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount,
                                        c10::cuda::current_device()));
  return count;
}

// out (N, K, bits), zeroed, then the kernel; shifts only for the exact read.
template <bool kExact>
void project_cuda(const at::Tensor& w, const int64_t* seeds, int64_t seed0, int64_t K,
                  int64_t bits, const at::Tensor& shifts, at::Tensor& out) {
  const int64_t N = w.size(0), M = w.size(1);
  if (out.numel() == 0 || M == 0) return;
  const int64_t chunks = (M + kProjChunk - 1) / kProjChunk;
  const int nb = static_cast<int>(std::min<int64_t>(N, kTileChunks));
  int tc = kTileChunks / nb;
  const int64_t groups = (N + nb - 1) / nb;
  // Small layers: smaller tiles, so that every SM gets blocks.
  while (tc > 1 && groups * ((chunks + tc - 1) / tc) < 4 * sm_count()) tc /= 2;
  const int64_t items = groups * ((chunks + tc - 1) / tc);
  const unsigned int grid = static_cast<unsigned int>(std::min<int64_t>(items, 1 << 20));
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const double scale = 1.0 / std::sqrt(static_cast<double>(M));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection", [&] {
    if constexpr (kExact) {
      projection_kernel<scalar_t, int32_t, int64_t, true><<<grid, kBlock, 0, stream>>>(
          w.data_ptr<scalar_t>(), N, M, chunks, seeds, seed0, K, bits,
          shifts.data_ptr<int64_t>(), nb, tc, int64_t{1}, out.data_ptr<int64_t>());
    } else {
      using V = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      projection_kernel<scalar_t, V, V, false><<<grid, kBlock, 0, stream>>>(
          w.data_ptr<scalar_t>(), N, M, chunks, seeds, seed0, K, bits, nullptr, nb, tc,
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
  const c10::cuda::CUDAGuard guard(w_in.device());
  const auto w = w_in.contiguous().reshape({1, -1});
  const auto acc_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::zeros({1, 1, bits}, w.options().dtype(acc_type));
  project_cuda<false>(w, nullptr, seed, 1, bits, at::Tensor(), out);
  return out.reshape({bits});
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
  m.impl("keyed_projection_sums", &keyed_projection_sums_cuda);
  m.impl("_keyed_projection_backward", &keyed_projection_backward_cuda);
}

}  // namespace mlguard
