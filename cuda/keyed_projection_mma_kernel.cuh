// The exact read (keyed_projection_sums) for many models at once as an int8 tensor-core GEMM:
// per key, S[n, t] = sum_m sign(R[t, m]) q_n[m] is a (T x M) sign matrix times an (M x N)
// matrix of integers (keyed_projection.h: |q| <= 2^16). The same int64 sums as the CPU op
// and the table kernel (projection_kernel), bit for bit, by construction:
//  - q = q2 2^14 + q1 2^7 + q0 with q0, q1 in [0, 127] and q2 = q >> 14 in [-4, 4] (arithmetic
//    shift of |q| <= 2^16): three int8 slices, exact.
//  - signs as int8 +1 / -1; one int8 MMA (m16n16k16, int32 accumulation) per slice adds 16
//    columns: |partial of a slice| <= 127 x 128 < 2^14 over the 128 columns of a chunk.
//  - per chunk the three partials combine into the chunk's exact sum in int32
//    (|sum| <= 2^16 x 128 = 2^23; each term |2^7 p1| < 2^21, |2^14 p2| <= 2^23), added to a
//    running int32 total over at most kMmaMaxChunks chunks = 2^13 columns:
//    |total| <= 2^16 x 2^13 = 2^29 < 2^31. Then one int64 atomic per (model, key, row, item).
// Integer addition is associative, so the order of MMAs and atomics does not matter.
//
// Portable nvcuda::wmma (sm_72+; the build's architectures start at sm_75, and the host code
// dispatches here only on sm >= 7.5): the emulated kernel tests (tests/emulated/cuda_emu.h)
// implement the same API on the CPU. The fragment-to-lane layout is never relied on: the only
// element-wise use of fragments combines accumulators of one type, which share their layout.
//
// Work item = (group of up to 32 models, tile of up to 64 chunks). Per key and slab of 256
// rows, for every chunk of the tile: the block quantizes the models' 128 columns into the
// three slices in shared memory, each thread draws its row's Philox block and expands its
// 128 sign bits to 128 int8 +-1 in shared memory; each warp then multiplies its (16 rows x
// 16 models) tiles. Column order inside a 16-column k-block is permuted (the same for signs
// and q: a dot product does not care) so that 4 sign bytes cost a shift, an AND and an IMAD.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__CUDACC__)
#include <mma.h>
#endif

#include "keyed_projection.h"

namespace mlguard {
namespace {

constexpr int kMmaBlock = 256;    // threads; while drawing signs, one row of the slab each
constexpr int kMmaWarps = kMmaBlock / 32;
constexpr int kMmaTile = 16;      // m = n = k of the int8 MMA
// Models per work item: 2 tiles of 16, so that a warp keeps 4 (16 x 16) int32 totals (64
// models, 8 totals: 183 registers or spills at 128; sm_90, nvcc 13.0).
constexpr int kMmaModels = 32;
constexpr int kMmaQThreads = kMmaBlock / kMmaModels;  // threads per model while staging q
constexpr int kMmaSlab = kMmaBlock;  // rows per slab
constexpr int kMmaKBlocks = static_cast<int>(kProjChunk) / kMmaTile;  // 8 k-blocks per chunk
constexpr int kMmaQuads = kMmaKBlocks * kMmaTile / 4;  // 4-byte words of a model's chunk
constexpr int kMmaMaxChunks = 64;  // chunks per item: int32 totals over <= 2^13 columns
constexpr int kMmaPairs = (kMmaSlab / kMmaTile) * (kMmaModels / kMmaTile);  // (row, model) tiles
constexpr int kMmaPairsPerWarp = kMmaPairs / kMmaWarps;                      // 4
static_assert(kMmaBlock % kMmaModels == 0 && kMmaQuads % kMmaQThreads == 0, "q staging");
static_assert(kMmaMaxChunks * kProjChunk <= (int64_t{1} << 13), "|int32 total| <= 2^29");
static_assert(kProjFractionBits == 16, "the three slices hold |q| <= 2^16 (q2 in [-4, 4])");

// Column (0..127 of a chunk) of byte p (0..15) of k-block kb (0..7): k-block kb holds bits
// 4 (kb % 2) .. 4 (kb % 2) + 3 of every byte of Philox word kb / 2, byte p taking bit
// 4 (kb % 2) + p / 4 of byte p % 4, i.e. column 32 (kb / 2) + 4 (kb % 2) + p / 4 + 8 (p % 4).
__host__ __device__ constexpr int mma_column(int kb, int p) {
  return 32 * (kb / 2) + 4 * (kb % 2) + p / 4 + 8 * (p % 4);
}

struct alignas(16) Bytes16 {
  uint32_t v[4];
};

// The int8 +1 / -1 of bits b, b + 8, b + 16, b + 24 of `word` (set bit: -1 = 0xff), one
// byte each: b ? 0xff : 0x01 = 0x01 + 0xfe b per byte (no carries between bytes).
__device__ __forceinline__ uint32_t sign_bytes(uint32_t word, int b) {
  return ((word >> b) & 0x01010101u) * 0xfeu + 0x01010101u;
}

// The three int8 slices of 4 values of q (|q| <= 2^16), packed little-endian into words.
__device__ __forceinline__ void slice_words(const int32_t (&q)[4], uint32_t (&out)[3]) {
  out[0] = out[1] = out[2] = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    out[0] |= static_cast<uint32_t>(q[j] & 127) << (8 * j);
    out[1] |= static_cast<uint32_t>((q[j] >> 7) & 127) << (8 * j);
    out[2] |= (static_cast<uint32_t>(q[j] >> 14) & 0xffu) << (8 * j);  // two's complement byte
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMmaBlock, 2)
projection_mma_kernel(const scalar_t* __restrict__ w, int64_t N, int64_t M, int64_t chunks,
                      const int64_t* __restrict__ seeds, int64_t K, int64_t T,
                      const int64_t* __restrict__ shifts, int tc, int64_t* __restrict__ out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 720
  __trap();  // no int8 MMA before sm_72; the host code never launches it there
#else
  namespace wmma = nvcuda::wmma;
  using Acc = wmma::fragment<wmma::accumulator, kMmaTile, kMmaTile, kMmaTile, int>;
  // signs[kb][row][16]: k-block kb of the chunk for all 256 rows (A tiles: 256 bytes each,
  // 32-byte aligned, ldm 16; a warp's 16-byte stores are consecutive: no bank conflicts).
  // qs[slice][kb][model][16]: the slices of the chunk (B tiles, column-major, ldm 16).
  // After a slab's last chunk `signs` stages each warp's int32 totals.
  __shared__ __align__(32) signed char signs[kMmaKBlocks * kMmaSlab * kMmaTile];
  __shared__ __align__(32) signed char qs[3][kMmaKBlocks * kMmaModels * kMmaTile];
  static_assert(kMmaWarps * kMmaTile * kMmaTile * sizeof(int) <= sizeof(signs), "staging");
  __shared__ int64_t model_shift[kMmaModels];  // the group's shifts (keyed_projection.h)
  __shared__ double model_factor[kMmaModels];

  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int qm = static_cast<int>(threadIdx.x) / kMmaQThreads;
  const int qc = static_cast<int>(threadIdx.x) % kMmaQThreads;
  const int64_t tiles = (chunks + tc - 1) / tc, groups = (N + kMmaModels - 1) / kMmaModels;
  for (int64_t item = blockIdx.x; item < groups * tiles; item += gridDim.x) {
    const int64_t n0 = (item / tiles) * kMmaModels, c0 = (item % tiles) * tc;
    const int models = N - n0 < kMmaModels ? static_cast<int>(N - n0) : kMmaModels;
    const int mtiles = (models + kMmaTile - 1) / kMmaTile;
    const int64_t cend = c0 + tc < chunks ? c0 + tc : chunks;
    // While staging q, thread (qm, qc) quantizes model n0 + qm: words u = qc + 8 i of the
    // chunk (bytes 4 (u % 4) .. 4 (u % 4) + 3 of k-block u / 4). A model with NaN or inf (the
    // caller raises) or past N adds 0. Shifts and factors in shared memory, not registers
    // (ptxas spilled with them live); the previous item last read them before a barrier, and
    // the first chunk's barrier comes before they are read.
    if (threadIdx.x < kMmaModels) {
      const int64_t sh = static_cast<int>(threadIdx.x) < models ? shifts[n0 + threadIdx.x]
                                                                 : kProjNonFinite;
      model_shift[threadIdx.x] = sh;
      model_factor[threadIdx.x] = sh != kProjNonFinite ? projection_factor(sh) : 0.0;
    }
    for (int64_t k = 0; k < K; ++k) {
      const uint64_t seed = static_cast<uint64_t>(seeds[k]);
      for (int64_t t0 = 0; t0 < T; t0 += kMmaSlab) {
        const int rtiles = T - t0 < kMmaSlab ? static_cast<int>((T - t0 + 15) / 16) : kMmaSlab / 16;
        const int pairs = rtiles * mtiles;  // warp w: pairs w, w + 8, ...; p = rt * mtiles + mt
        Acc total[kMmaPairsPerWarp];
#pragma unroll
        for (int j = 0; j < kMmaPairsPerWarp; ++j) wmma::fill_fragment(total[j], 0);
        for (int64_t chunk = c0; chunk < cend; ++chunk) {
          __syncthreads();  // the previous chunk's MMAs no longer read qs and signs
          const int64_t shift = model_shift[qm];
          const double factor = model_factor[qm];
          const int64_t left = M - chunk * kProjChunk;  // columns of the chunk inside w
          const scalar_t* wc = w + (n0 + qm) * M + chunk * kProjChunk;  // read only if qm < models
#pragma unroll 1
          for (int u = qc; u < kMmaQuads; u += kMmaQThreads) {
            const int kb = u / 4;
            int32_t q[4] = {0, 0, 0, 0};
            if (factor != 0.0) {  // projection_quantize's product form, written out so that
                                  // its ldexp form is not computed beside it (select)
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const int c = mma_column(kb, 4 * (u % 4) + j);
                if (c < left) q[j] = projection_quantize(static_cast<double>(wc[c]) * factor, 0, 1.0);
              }
            } else if (shift != kProjNonFinite) {  // 2^-shift not a finite double
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                const int c = mma_column(kb, 4 * (u % 4) + j);
                if (c < left) q[j] = projection_quantize(static_cast<double>(wc[c]), shift, 0.0);
              }
            }
            uint32_t sl[3];
            slice_words(q, sl);
#pragma unroll
            for (int s = 0; s < 3; ++s)
              reinterpret_cast<uint32_t*>(qs[s] + (kb * kMmaModels + qm) * kMmaTile)[u % 4] = sl[s];
          }
          const int64_t t = t0 + threadIdx.x;  // rows past T: any signs, their sums are dropped
          const Words4 bits = t < T ? projection_signs(seed, t, chunk) : Words4{{0, 0, 0, 0}};
#pragma unroll
          for (int kb = 0; kb < kMmaKBlocks; ++kb) {
            const uint32_t word = bits.v[kb / 2];
            const int bit0 = 4 * (kb % 2);
            const Bytes16 v{{sign_bytes(word, bit0), sign_bytes(word, bit0 + 1),
                             sign_bytes(word, bit0 + 2), sign_bytes(word, bit0 + 3)}};
            reinterpret_cast<Bytes16*>(signs + kb * kMmaSlab * kMmaTile)[threadIdx.x] = v;
          }
          __syncthreads();
#pragma unroll
          for (int j = 0; j < kMmaPairsPerWarp; ++j) {
            const int p = warp + kMmaWarps * j;
            if (p >= pairs) continue;  // the same for the whole warp
            const int rt = p / mtiles, mt = p % mtiles;
            Acc part[3];
#pragma unroll
            for (int s = 0; s < 3; ++s) wmma::fill_fragment(part[s], 0);
#pragma unroll 1
            for (int kb = 0; kb < kMmaKBlocks; ++kb) {
              wmma::fragment<wmma::matrix_a, kMmaTile, kMmaTile, kMmaTile, signed char,
                             wmma::row_major> a;
              wmma::load_matrix_sync(a, signs + (kb * kMmaSlab + rt * kMmaTile) * kMmaTile,
                                     kMmaTile);
#pragma unroll
              for (int s = 0; s < 3; ++s) {
                wmma::fragment<wmma::matrix_b, kMmaTile, kMmaTile, kMmaTile, signed char,
                               wmma::col_major> bq;
                wmma::load_matrix_sync(bq, qs[s] + (kb * kMmaModels + mt * kMmaTile) * kMmaTile,
                                       kMmaTile);
                wmma::mma_sync(part[s], a, bq, part[s]);
              }
            }
            // The chunk's exact sums (|.| <= 2^23), into the item's total (<= 2^29).
#pragma unroll
            for (int e = 0; e < Acc::num_elements; ++e)
              total[j].x[e] += part[0].x[e] + 128 * part[1].x[e] + 16384 * part[2].x[e];
          }
        }
        __syncthreads();  // every warp is done reading signs: it stages the totals now
        int* stage = reinterpret_cast<int*>(signs) + warp * kMmaTile * kMmaTile;
#pragma unroll
        for (int j = 0; j < kMmaPairsPerWarp; ++j) {
          const int p = warp + kMmaWarps * j;
          if (p >= pairs) continue;
          const int rt = p / mtiles, mt = p % mtiles;
          wmma::store_matrix_sync(stage, total[j], kMmaTile, wmma::mem_col_major);  // [n][r]
          __syncwarp();
          for (int e = lane; e < kMmaTile * kMmaTile; e += 32) {
            const int64_t tt = t0 + rt * kMmaTile + e % kMmaTile;
            const int n = mt * kMmaTile + e / kMmaTile;
            if (tt < T && n < models)
              atomicAdd(reinterpret_cast<unsigned long long*>(out + ((n0 + n) * K + k) * T + tt),
                        static_cast<unsigned long long>(static_cast<long long>(stage[e])));
          }
          __syncwarp();  // the stage is read before the next pair overwrites it
        }
      }
    }
  }
#endif
}

// The launch of projection_mma_kernel: tc chunks per item (at most kMmaMaxChunks; smaller
// for small layers, so that every SM gets blocks), grid blocks.
struct MmaLaunch {
  int tc;
  unsigned int grid;
};

inline MmaLaunch projection_mma_launch(int64_t N, int64_t chunks, int sms) {
  const int64_t groups = (N + kMmaModels - 1) / kMmaModels;
  int tc = kMmaMaxChunks;
  while (tc > 1 && groups * ((chunks + tc - 1) / tc) < 4 * int64_t{sms}) tc /= 2;
  const int64_t items = groups * ((chunks + tc - 1) / tc);
  return {tc, static_cast<unsigned int>(std::min<int64_t>(items, 1 << 20))};
}

// Which kernel the exact read uses on CUDA: the table kernel (projection_kernel) or the
// int8 MMA one. Auto: MMA from kMmaMinModels models per call on sm >= 7.5, where the SASS
// instruction counts say it issues fewer instructions than the tables (benchmarks/RESULTS.md,
// "int8 tensor-core GEMM": about 8.2 against 10.4 per (element, row) at 8 models, 7.7
// against 5.8 at 4). The environment variable MLGUARD_PROJECTION_MMA=0 / 1 / auto forces
// either (tests, measurements); python/mlguard/_extension.py repeats the constants.
enum class SumsKernel { kAuto, kTables, kMma };
constexpr int64_t kMmaMinModels = 8;
constexpr int kMmaMinSm = 75;  // compute capability x 10

inline SumsKernel sums_kernel_from_env() {
  const char* v = std::getenv("MLGUARD_PROJECTION_MMA");
  if (v == nullptr || std::strcmp(v, "") == 0 || std::strcmp(v, "auto") == 0)
    return SumsKernel::kAuto;
  if (std::strcmp(v, "0") == 0) return SumsKernel::kTables;
  if (std::strcmp(v, "1") == 0) return SumsKernel::kMma;
  TORCH_CHECK(false, "MLGUARD_PROJECTION_MMA must be 0, 1 or auto, got '", v, "'");
}

// Whether the exact read of N models runs as the MMA kernel on a device of compute
// capability sm (x 10).
inline bool sums_use_mma(SumsKernel choice, int64_t N, int sm) {
  if (choice == SumsKernel::kTables) return false;
  if (sm < kMmaMinSm) {
    TORCH_CHECK(choice != SumsKernel::kMma, "keyed_projection_sums: MLGUARD_PROJECTION_MMA=1 "
                "needs int8 tensor cores (compute capability 7.5 or newer), this GPU has ",
                sm / 10, ".", sm % 10);
    return false;
  }
  return choice == SumsKernel::kMma || N >= kMmaMinModels;
}

// out (N, K, T), zeroed: the exact sums of every model and key by the MMA kernel.
template <typename Launch>
void run_projection_mma(const Launch& launch, const at::Tensor& w, const int64_t* seeds,
                        int64_t K, int64_t T, const at::Tensor& shifts, at::Tensor& out,
                        int sms) {
  const int64_t N = w.size(0), M = w.size(1);
  if (out.numel() == 0 || M == 0) return;
  const int64_t chunks = (M + kProjChunk - 1) / kProjChunk;
  const MmaLaunch l = projection_mma_launch(N, chunks, sms);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection_sums", [&] {
    launch(projection_mma_kernel<scalar_t>, l.grid, kMmaBlock, w.data_ptr<scalar_t>(), N, M,
           chunks, seeds, K, T, shifts.data_ptr<int64_t>(), l.tc, out.data_ptr<int64_t>());
  });
}

}  // namespace
}  // namespace mlguard
