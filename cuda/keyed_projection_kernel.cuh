// mlguard's keyed projection kernels and their host launch code (run_keyed_projection_sums,
// run_keyed_projection, run_keyed_projection_backward), in a header so that the same source is
// compiled by nvcc for the extension (keyed_projection.cu, with CudaLaunch) and as host C++
// under the CUDA emulator for the kernel tests (tests/emulated/, with emu::launch).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "keyed_projection.h"
#include "keyed_projection_mma_kernel.cuh"
#include "launch.cuh"

namespace mlguard {
namespace {

constexpr int kBlock = 256;
constexpr int kTileChunks = 8;  // chunks in shared memory per block (models x chunks)
constexpr int kNibbles = static_cast<int>(kProjChunk / 4);  // groups of 4 columns per chunk

// The 16 signed sums of four values, tab[m] = sum_i (bit i of m ? -v_i : v_i): a row's sum
// over the 4 columns is then one lookup indexed by its 4 sign bits. Pair sums first, in a
// fixed order (exact for the integers of the exact read).
template <typename V>
__device__ __forceinline__ void nibble_table(V v0, V v1, V v2, V v3, V* tab) {
  const V lo[4] = {v0 + v1, -v0 + v1, v0 - v1, -v0 - v1};
  const V hi[4] = {v2 + v3, -v2 + v3, v2 - v3, -v2 - v3};
#pragma unroll
  for (int m = 0; m < 16; ++m) tab[m] = lo[m & 3] + hi[m >> 2];
}

// sum_j sign(R[t, 128 c + j]) v[j] over one chunk: 32 lookups in the chunk's nibble tables
// (nibble k of the signs, bits 4k .. 4k+3 of the 128, covers columns 4k .. 4k+3), which start
// `base` bytes into `tables`. base is a multiple of the tables' size, so OR-ing the entry's
// byte offset into it is an addition (one LOP3 with the mask). Two partial sums for
// instruction-level parallelism; |sum| <= 2^23 for the exact read.
template <typename V>
__device__ __forceinline__ V chunk_sum(const V* tables, uint32_t base, const Words4& s) {
  constexpr int kLog = sizeof(V) == 8 ? 3 : 2;
  const char* bytes = reinterpret_cast<const char*>(tables);
  V even = 0, odd = 0;
#pragma unroll
  for (int k = 0; k < kNibbles; k += 2) {
    const uint32_t word = s.v[k / 8];
    const int bit = 4 * (k % 8);
    const uint32_t e0 = base | (((word >> bit) << kLog) & (15u << kLog));
    const uint32_t e1 = base | (((word >> (bit + 4)) << kLog) & (15u << kLog));
    even += *reinterpret_cast<const V*>(bytes + e0 + 16 * sizeof(V) * k);
    odd += *reinterpret_cast<const V*>(bytes + e1 + 16 * sizeof(V) * (k + 1));
  }
  return even + odd;
}

__device__ __forceinline__ void emit(int64_t* out, int32_t v, int64_t) {
  atomicAdd(reinterpret_cast<unsigned long long*>(out),
            static_cast<unsigned long long>(static_cast<long long>(v)));  // two's complement
}
__device__ __forceinline__ void emit(float* out, float v, float scale) { atomicAdd(out, v * scale); }
__device__ __forceinline__ void emit(double* out, double v, double scale) {
  atomicAdd(out, v * scale);
}

// Work item = (group of nb models, tile of tc chunks), nb * tc <= kTileChunks. The tile is read
// from global memory once and turned into nibble tables in shared memory (one thread per group
// of 4 columns: 8 chunks x 32 groups = the 256 threads). Rows are spread over `rows` threads
// (a multiple of 32); with T < 256 the remaining threads split the tile's chunks between
// them (`lanes`). A warp's lanes read the same 16-entry table at once: no bank conflicts.
// Three blocks per SM: 80 registers without spills (at 4, ptxas spills; sm_90, nvcc 13.0).
template <typename scalar_t, typename V, typename Out, bool kExact>
__global__ void __launch_bounds__(kBlock, 3)
projection_kernel(const scalar_t* __restrict__ w, int64_t N, int64_t M, int64_t chunks,
                  const int64_t* __restrict__ seeds, int64_t seed0, int64_t K, int64_t T,
                  const int64_t* __restrict__ shifts, int nb, int tc, Out scale,
                  Out* __restrict__ out) {
  static_assert(kTileChunks * kNibbles == kBlock, "one thread per group of 4 columns");
  __shared__ __align__(16) V tables[kTileChunks * kNibbles * 16];
  const int64_t tiles = (chunks + tc - 1) / tc, groups = (N + nb - 1) / nb;
  const int rows = T < kBlock ? static_cast<int>((T + 31) / 32 * 32) : kBlock;
  const int lanes = kBlock / rows;
  const int r = threadIdx.x % rows, lane = threadIdx.x / rows;
  for (int64_t item = blockIdx.x; item < groups * tiles; item += gridDim.x) {
    const int64_t g = item / tiles, c0 = (item % tiles) * tc;
    __syncthreads();  // the previous item's tables are no longer read
    if (static_cast<int>(threadIdx.x) < nb * tc * kNibbles) {
      const int tile_chunk = threadIdx.x / kNibbles;  // n * tc + c
      const int64_t model = g * nb + tile_chunk / tc;
      const int64_t col0 = (c0 + tile_chunk % tc) * kProjChunk + 4 * (threadIdx.x % kNibbles);
      V v[4] = {0, 0, 0, 0};
      if (model < N) {
        if constexpr (kExact) {
          const int64_t shift = shifts[model];
          if (shift != kProjNonFinite) {  // the caller raises for such a model
            const double factor = projection_factor(shift);
#pragma unroll
            for (int j = 0; j < 4; ++j)
              if (col0 + j < M)
                v[j] = projection_quantize(static_cast<double>(w[model * M + col0 + j]), shift,
                                           factor);
          }
        } else {
#pragma unroll
          for (int j = 0; j < 4; ++j)
            if (col0 + j < M) v[j] = static_cast<V>(w[model * M + col0 + j]);
        }
      }
      nibble_table(v[0], v[1], v[2], v[3], tables + 16 * threadIdx.x);
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
            const V v = chunk_sum(tables, (n * tc + c) * kNibbles * 16 * sizeof(V), s);
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

// ---- backward: grad_w[m] = scale * sum_t sign(R[t, m]) grad_y[t] ----------------------------
//
// A block takes 64 chunks; thread (chunk, word q) owns the chunk's 32 columns 32q .. 32q+31.
// Rows go in slabs of 32: the block draws the slab's Philox blocks once each (8 per thread)
// and stages their words in shared memory, and builds for every 4 rows the 16 signed sums
// of their grad_y (tab[m] = sum_i (bit i of m ? -g_i : g_i)). A thread then reads the four
// rows' words of its column word with one 16-byte load, gathers each column's 4 sign bits
// into a nibble (row_nibbles: 3 shifts and 3 bit-selects per 8 columns) and adds one table
// entry per column and 4 rows. All lanes of a warp read the same table: no bank conflicts.
constexpr int kBwdChunks = 64;                  // chunks per work item (4 threads each)
constexpr int kBwdSlab = 32;                    // rows staged at once
constexpr int kBwdGroups = kBwdSlab / 4 + 1;    // 16-byte groups per (chunk, word), one padding:
                                                // a warp's 32 loads spread over all 32 banks

struct alignas(16) RowWords {  // word q of 4 consecutive rows
  uint32_t v[4];
};

// Nibble k of the result = the sign bits of column 4k + r in rows a, b, c, d (bit 0 = a).
template <int r>
__device__ __forceinline__ uint32_t row_nibbles(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  const uint32_t a1 = a >> r;
  const uint32_t b1 = r >= 1 ? b >> (r - 1) : b << 1;
  const uint32_t c1 = r >= 2 ? c >> (r - 2) : c << (2 - r);
  const uint32_t d1 = d << (3 - r);
  const uint32_t ab = (a1 & 0x11111111u) | (b1 & ~0x11111111u);  // bits 4k, 4k+1 right
  const uint32_t cd = (c1 & 0x44444444u) | (d1 & ~0x44444444u);  // bits 4k+2, 4k+3 right
  return (ab & 0x33333333u) | (cd & ~0x33333333u);
}

template <typename acc_t>
__global__ void __launch_bounds__(kBlock)
projection_backward_kernel(const acc_t* __restrict__ grad, int64_t T, int64_t numel,
                           int64_t chunks, uint64_t seed, acc_t scale, acc_t* __restrict__ out) {
  static_assert(kBwdChunks * 4 == kBlock, "one thread per (chunk, 32-column word)");
  __shared__ RowWords signs[kBwdChunks * 4 * kBwdGroups];
  __shared__ acc_t tabs[kBwdSlab / 4][16];
  const int cb = threadIdx.x / 4, q = threadIdx.x % 4;
  const int64_t items = (chunks + kBwdChunks - 1) / kBwdChunks;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t chunk = item * kBwdChunks + cb;
    acc_t acc[32];
#pragma unroll
    for (int j = 0; j < 32; ++j) acc[j] = 0;
    for (int64_t t0 = 0; t0 < T; t0 += kBwdSlab) {
      __syncthreads();  // the previous slab's signs and tables are no longer read
      // A warp draws 32 rows of one chunk: its stores of a word go to 32 consecutive banks.
      for (int j = threadIdx.x; j < kBwdChunks * kBwdSlab; j += kBlock) {
        const int jc = j / kBwdSlab, row = j % kBwdSlab;
        const int64_t c = item * kBwdChunks + jc, t = t0 + row;
        const Words4 s = c < chunks && t < T ? projection_signs(seed, t, c) : Words4{{0, 0, 0, 0}};
#pragma unroll
        for (int w = 0; w < 4; ++w) signs[(jc * 4 + w) * kBwdGroups + row / 4].v[row % 4] = s.v[w];
      }
      if (threadIdx.x < kBwdSlab / 4 * 16) {  // rows past T add 0
        const int u = threadIdx.x / 16, m = threadIdx.x % 16;
        acc_t v = 0;
        for (int i = 0; i < 4; ++i) {
          const acc_t g = t0 + 4 * u + i < T ? grad[t0 + 4 * u + i] : acc_t(0);
          v += (m >> i) & 1 ? -g : g;
        }
        tabs[u][m] = v;
      }
      __syncthreads();
      if (chunk < chunks) {
#pragma unroll
        for (int u = 0; u < kBwdSlab / 4; ++u) {
          const RowWords w = signs[(cb * 4 + q) * kBwdGroups + u];
          const uint32_t x[4] = {row_nibbles<0>(w.v[0], w.v[1], w.v[2], w.v[3]),
                                 row_nibbles<1>(w.v[0], w.v[1], w.v[2], w.v[3]),
                                 row_nibbles<2>(w.v[0], w.v[1], w.v[2], w.v[3]),
                                 row_nibbles<3>(w.v[0], w.v[1], w.v[2], w.v[3])};
#pragma unroll
          for (int k = 0; k < 8; ++k) {
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[4 * k + r] += tabs[u][(x[r] >> (4 * k)) & 15u];
          }
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int64_t col = chunk * kProjChunk + 32 * q + j;
      if (chunk < chunks && col < numel) out[col] = acc[j] * scale;
    }
  }
}

// out (N, K, bits), zeroed, then the kernel on a GPU with `sms` multiprocessors; shifts only
// for the exact read.
template <bool kExact, typename Launch>
void run_projection(const Launch& launch, const at::Tensor& w, const int64_t* seeds,
                    int64_t seed0, int64_t K, int64_t bits, const at::Tensor& shifts,
                    at::Tensor& out, int sms) {
  const int64_t N = w.size(0), M = w.size(1);
  if (out.numel() == 0 || M == 0) return;
  const int64_t chunks = (M + kProjChunk - 1) / kProjChunk;
  const ProjectionLaunch l = projection_launch(N, chunks, sms);
  const double scale = 1.0 / std::sqrt(static_cast<double>(M));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection", [&] {
    if constexpr (kExact) {
      launch(projection_kernel<scalar_t, int32_t, int64_t, true>, l.grid, kBlock,
             w.data_ptr<scalar_t>(), N, M, chunks, seeds, seed0, K, bits,
             shifts.data_ptr<int64_t>(), l.nb, l.tc, int64_t{1}, out.data_ptr<int64_t>());
    } else {
      using V = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      launch(projection_kernel<scalar_t, V, V, false>, l.grid, kBlock, w.data_ptr<scalar_t>(),
             N, M, chunks, seeds, seed0, K, bits, static_cast<const int64_t*>(nullptr), l.nb,
             l.tc, static_cast<V>(scale), out.data_ptr<V>());
    }
  });
}

// keyed_projection_sums after the device guard: sums (N, K, bits) and shifts (N), on a GPU
// with `sms` multiprocessors and compute capability `sm` (x 10). The kernel: the int8 MMA one
// (keyed_projection_mma_kernel.cuh) for many models (sums_use_mma), else the table kernel;
// the same bits either way.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> run_keyed_projection_sums(const Launch& launch,
                                                             const at::Tensor& w2d,
                                                             const at::Tensor& seeds,
                                                             int64_t bits, int sms, int sm,
                                                             SumsKernel choice) {
  check_keyed_projection_batched_args(w2d, seeds, bits, "keyed_projection_sums");
  const auto w = w2d.contiguous();
  const auto s = seeds.contiguous();
  auto shifts = projection_shifts(w);  // NaN/inf: kProjNonFinite, raised by the wrapper
  auto sums = at::zeros({w.size(0), s.size(0), bits}, w.options().dtype(at::kLong));
  if (sums_use_mma(choice, w.size(0), sm)) {
    run_projection_mma(launch, w, s.data_ptr<int64_t>(), s.size(0), bits, shifts, sums, sms);
  } else {
    run_projection<true>(launch, w, s.data_ptr<int64_t>(), 0, s.size(0), bits, shifts, sums, sms);
  }
  return {sums, shifts};
}

// keyed_projection (the training forward) after the device guard.
template <typename Launch>
at::Tensor run_keyed_projection(const Launch& launch, const at::Tensor& w_in, int64_t seed,
                                int64_t bits, int sms) {
  check_keyed_projection_args(w_in, bits, "keyed_projection");
  const auto w = w_in.contiguous().reshape({1, -1});
  const auto acc_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::zeros({1, 1, bits}, w.options().dtype(acc_type));
  run_projection<false>(launch, w, nullptr, seed, 1, bits, at::Tensor(), out, sms);
  return out.reshape({bits});
}

// _keyed_projection_backward after the device guard.
template <typename Launch>
at::Tensor run_keyed_projection_backward(const Launch& launch, const at::Tensor& grad_y,
                                         int64_t seed, int64_t numel) {
  check_keyed_projection_backward_args(grad_y, numel);
  const auto g = grad_y.contiguous();
  auto out = at::empty({numel}, g.options());
  const int64_t chunks = (numel + kProjChunk - 1) / kProjChunk;
  if (numel == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "_keyed_projection_backward", [&] {
    const scalar_t scale =
        static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(numel, 1))));
    const int64_t items = (chunks + kBwdChunks - 1) / kBwdChunks;
    launch(projection_backward_kernel<scalar_t>,
           static_cast<unsigned int>(std::min<int64_t>(items, 65536)), kBlock,
           g.data_ptr<scalar_t>(), g.size(0), numel, chunks, static_cast<uint64_t>(seed), scale,
           out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace
}  // namespace mlguard
