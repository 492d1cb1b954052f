// keyed_projection_sums by bit planes (projection_bitplanes.h): AVX-512F + VPOPCNTDQ only,
// picked at run time; other CPUs use the lookup tables of keyed_projection.cpp.
#include "projection_bitplanes.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

// GCC 12 warns inside its own AVX-512 headers (_mm512_undefined_*, GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#include "keyed_projection.h"

#define MLGUARD_AVX512 __attribute__((target("avx512f,avx512vpopcntdq")))

namespace mlguard {
namespace {

constexpr int kPlanes = 18;                   // |q| <= 2^16: 18-bit two's complement
constexpr int kWords = 4;                     // 32-column words per chunk
constexpr int64_t kLanes = 16;                // rows per zmm register
constexpr int64_t kPlaneWords = kWords * kPlanes;  // uint32 planes per (model, chunk)
// Chunks per tile: a lane's count per plane stays <= 32 * 4 * 32 = 2^12, so the weighted sum
// of a tile, |sum 2^b count_b| < 2^29, fits int32 before it is added to the int64 sums.
constexpr int64_t kMaxTileChunks = 32;
constexpr int64_t kTileBytes = 32 << 10;      // planes of a tile for all models: in L1
// Below this many row-columns (N K T M: about 0.2 ms on one core) one thread does it all, so
// small reads (36,864 x 64 takes 55 us) pay no thread wake-up and leave the other core free.
constexpr int64_t kSerialBelow = int64_t{1} << 23;

// q of one chunk (zero beyond len) and its sum: projection_quantize, written so the common
// case (a finite factor) vectorizes.
template <typename scalar_t>
MLGUARD_AVX512 int64_t quantize_chunk(const scalar_t* w, int64_t len, int64_t shift,
                                      double factor, int32_t* q) {
  int64_t sum = 0;
  if (factor != 0.0) {
    for (int64_t j = 0; j < len; ++j) {
      q[j] = projection_quantize(static_cast<double>(static_cast<float>(w[j])), shift, factor);
      sum += q[j];
    }
  } else {
    for (int64_t j = 0; j < len; ++j) {
      q[j] = projection_quantize(static_cast<double>(w[j]), shift, factor);
      sum += q[j];
    }
  }
  for (int64_t j = len; j < kProjChunk; ++j) q[j] = 0;
  return sum;
}

template <>
MLGUARD_AVX512 int64_t quantize_chunk<double>(const double* w, int64_t len, int64_t shift,
                                              double factor, int32_t* q) {
  int64_t sum = 0;
  if (factor != 0.0) {
    for (int64_t j = 0; j < len; ++j) {
      q[j] = projection_quantize(w[j], shift, factor);
      sum += q[j];
    }
  } else {  // -shift > 1023: only float64 weights below 2^-1007 (the ldexp form)
    for (int64_t j = 0; j < len; ++j) {
      q[j] = projection_quantize(w[j], shift, 0.0);
      sum += q[j];
    }
  }
  for (int64_t j = len; j < kProjChunk; ++j) q[j] = 0;
  return sum;
}

// planes[word * kPlanes + b] bit j = bit b of q[32 word + j].
MLGUARD_AVX512 void planes_of(const int32_t* q, uint32_t* planes) {
  for (int word = 0; word < kWords; ++word) {
    const __m512i lo = _mm512_loadu_si512(q + 32 * word);
    const __m512i hi = _mm512_loadu_si512(q + 32 * word + 16);
#pragma GCC unroll 18
    for (int b = 0; b < kPlanes; ++b) {
      const __m512i bit = _mm512_set1_epi32(1 << b);
      planes[word * kPlanes + b] = static_cast<uint32_t>(_mm512_test_epi32_mask(lo, bit)) |
                                   static_cast<uint32_t>(_mm512_test_epi32_mask(hi, bit)) << 16;
    }
  }
}

MLGUARD_AVX512 inline void mulhilo16(__m512i x, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(x, m);                         // lanes 0, 2, ...
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);   // lanes 1, 3, ...
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

// Philox blocks of rows t0 .. t0 + 15 over chunk c (csrc/philox.h, projection_signs):
// word q of row t0 + i in lane i of out[q].
MLGUARD_AVX512 inline void draw16(uint64_t seed, uint32_t t0, int64_t c, __m512i* out) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(philox_detail::kMul0));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(philox_detail::kMul1));
  __m512i x0 = _mm512_set1_epi32(static_cast<int>(lo32(c)));
  __m512i x1 = _mm512_set1_epi32(static_cast<int>(hi32(c)));
  __m512i x2 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(t0)),
                                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
                                                  14, 15));
  __m512i x3 = _mm512_set1_epi32(static_cast<int>(kProjStream));
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += philox_detail::kWeyl0;
      k1 += philox_detail::kWeyl1;
    }
    __m512i hi0, lo0, hi1, lo1;
    mulhilo16(x0, m0, hi0, lo0);
    mulhilo16(x2, m1, hi1, lo1);
    x0 = _mm512_xor_si512(_mm512_xor_si512(hi1, x1), _mm512_set1_epi32(static_cast<int>(k0)));
    x2 = _mm512_xor_si512(_mm512_xor_si512(hi0, x3), _mm512_set1_epi32(static_cast<int>(k1)));
    x1 = lo1;
    x3 = lo0;
  }
  out[0] = x0;
  out[1] = x1;
  out[2] = x2;
  out[3] = x3;
}

// Adds sum_m sign(R_k[t, m]) q_n[m] over chunks [c_begin, c_end) to out (N K T, int64).
template <typename scalar_t>
MLGUARD_AVX512 void project_chunks(const scalar_t* w, int64_t N, int64_t M,
                                   const int64_t* shifts, const double* factors,
                                   const int64_t* seeds, int64_t K, int64_t T, int64_t c_begin,
                                   int64_t c_end, int64_t tc, int64_t* out) {
  std::vector<uint32_t> planes(N * tc * kPlaneWords);
  std::vector<int64_t> qsum(N);
  __m512i words[kMaxTileChunks * kWords];  // the signs of 16 rows over the tile (8 KiB)
  alignas(64) int32_t q[kProjChunk];
  for (int64_t c0 = c_begin; c0 < c_end; c0 += tc) {
    const int64_t nc = std::min(tc, c_end - c0);
    for (int64_t n = 0; n < N; ++n) {
      qsum[n] = 0;
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t col = (c0 + c) * kProjChunk;
        qsum[n] += quantize_chunk(w + n * M + col, std::min(kProjChunk, M - col), shifts[n],
                                  factors[n], q);
        planes_of(q, planes.data() + (n * tc + c) * kPlaneWords);
      }
    }
    for (int64_t k = 0; k < K; ++k) {
      const uint64_t seed = static_cast<uint64_t>(seeds[k]);
      for (int64_t t0 = 0; t0 < T; t0 += kLanes) {
        for (int64_t c = 0; c < nc; ++c)
          draw16(seed, static_cast<uint32_t>(t0), c0 + c, words + kWords * c);
        const int64_t rows = std::min(kLanes, T - t0);
        const __mmask8 lo_rows = static_cast<__mmask8>((1u << std::min<int64_t>(rows, 8)) - 1);
        const __mmask8 hi_rows =
            static_cast<__mmask8>((1u << std::max<int64_t>(rows - 8, 0)) - 1);
        for (int64_t n = 0; n < N; ++n) {
          const uint32_t* p = planes.data() + n * tc * kPlaneWords;
          __m512i count[kPlanes];
#pragma GCC unroll 18
          for (int b = 0; b < kPlanes; ++b) count[b] = _mm512_setzero_si512();
          for (int64_t c = 0; c < nc; ++c) {
#pragma GCC unroll 4
            for (int word = 0; word < kWords; ++word) {
              const __m512i x = words[kWords * c + word];
              const uint32_t* pw = p + (kWords * c + word) * kPlanes;
#pragma GCC unroll 18
              for (int b = 0; b < kPlanes; ++b) {
                const __m512i hit = _mm512_and_si512(x, _mm512_set1_epi32(static_cast<int>(pw[b])));
                count[b] = _mm512_add_epi32(count[b], _mm512_popcnt_epi32(hit));
              }
            }
          }
          // sum over the tile of q[m] where the sign bit is set, per row (int32, see above)
          __m512i neg = count[0];
#pragma GCC unroll 16
          for (int b = 1; b < kPlanes - 1; ++b)
            neg = _mm512_add_epi32(neg, _mm512_sllv_epi32(count[b], _mm512_set1_epi32(b)));
          neg = _mm512_sub_epi32(neg, _mm512_slli_epi32(count[kPlanes - 1], kPlanes - 1));
          // S += sum q - 2 neg, in int64
          const __m512i base = _mm512_set1_epi64(qsum[n]);
          const __m512i lo = _mm512_sub_epi64(
              base, _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(neg)), 1));
          const __m512i hi = _mm512_sub_epi64(
              base, _mm512_slli_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(neg, 1)), 1));
          int64_t* o = out + (n * K + k) * T + t0;
          _mm512_mask_storeu_epi64(o, lo_rows,
                                   _mm512_add_epi64(_mm512_maskz_loadu_epi64(lo_rows, o), lo));
          _mm512_mask_storeu_epi64(o + 8, hi_rows,
                                   _mm512_add_epi64(_mm512_maskz_loadu_epi64(hi_rows, o + 8), hi));
        }
      }
    }
  }
}

const bool kCpuHasBitplanes = [] {
  __builtin_cpu_init();  // may run before libgcc's own constructor
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
}();

}  // namespace

bool bitplanes_available() {
  return kCpuHasBitplanes && std::getenv("MLGUARD_PROJECTION_TABLES") == nullptr;
}

void project_sums_bitplanes(const at::Tensor& w, const int64_t* shifts, const int64_t* seeds,
                            int64_t K, int64_t T, int64_t* out) {
  const int64_t N = w.size(0), M = w.size(1), rows_out = N * K * T;
  const int64_t chunks = (M + kProjChunk - 1) / kProjChunk;
  std::vector<double> factors(N);
  for (int64_t n = 0; n < N; ++n) factors[n] = projection_factor(shifts[n]);
  const int64_t tc = std::clamp<int64_t>(kTileBytes / (N * kPlaneWords * 4), 1, kMaxTileChunks);
  const bool serial = static_cast<double>(N) * K * T * M < kSerialBelow;  // no int64 overflow
  const int64_t parts = serial ? 1 : std::max<int64_t>(1, std::min<int64_t>(chunks, at::get_num_threads()));
  std::fill(out, out + rows_out, int64_t{0});
  std::vector<int64_t> partial((parts - 1) * rows_out, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection_sums", [&] {
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const auto run = [&](int64_t p) {
      project_chunks(wp, N, M, shifts, factors.data(), seeds, K, T, p * chunks / parts,
                     (p + 1) * chunks / parts, tc,
                     p == 0 ? out : partial.data() + (p - 1) * rows_out);
    };
    if (parts == 1) {
      run(0);
    } else {
      at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) run(p);
      });
    }
  });
  for (int64_t p = 1; p < parts; ++p)
    for (int64_t i = 0; i < rows_out; ++i) out[i] += partial[(p - 1) * rows_out + i];
}

}  // namespace mlguard
