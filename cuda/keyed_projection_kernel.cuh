// Device code of mlguard's keyed projection kernels (keyed_projection.cu), in a header so that
// the same source is compiled by nvcc for the extension and as host C++ under the CUDA
// emulator for the kernel tests (tests/emulated/). Host launch logic that the tests must
// reproduce (the tile choice) is here too.
#pragma once

#include <algorithm>
#include <cstdint>

#include "keyed_projection.h"

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
      // Threads past lanes * rows (rows = 96: 256 = 2 x 96 + 64) have no lane of their own;
      // with lane == lanes they would add chunks that lane 0 adds too.
      for (int64_t t = r; lane < lanes && t < T; t += rows) {
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

// The launch of projection_kernel for N models of `chunks` chunks on a GPU with `sms`
// multiprocessors: nb models x tc chunks per work item, grid blocks.
struct ProjectionLaunch {
  int nb, tc;
  unsigned int grid;
};

inline ProjectionLaunch projection_launch(int64_t N, int64_t chunks, int sms) {
  const int nb = static_cast<int>(std::min<int64_t>(N, kTileChunks));
  int tc = kTileChunks / nb;
  const int64_t groups = (N + nb - 1) / nb;
  // Small layers: smaller tiles, so that every SM gets blocks.
  while (tc > 1 && groups * ((chunks + tc - 1) / tc) < 4 * int64_t{sms}) tc /= 2;
  const int64_t items = groups * ((chunks + tc - 1) / tc);
  return {nb, tc, static_cast<unsigned int>(std::min<int64_t>(items, 1 << 20))};
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

}  // namespace
}  // namespace mlguard
