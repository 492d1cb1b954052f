// mlguard::keyed_projection (training forward), keyed_projection_sums (the exact read) and
// _keyed_projection_backward: schemas, argument checks and CPU kernels. R is never stored.
//
// The forward kernels use lookup tables: for every 8 columns, a table of the 256 signed sums
// of their values, one per sign pattern; a row then costs one lookup per 8 columns instead
// of 8 additions, and the tables of a tile are shared by all rows and keys. Integer tables
// make keyed_projection_sums exact in any order (keyed_projection.h); float tables serve the
// training forward, which need not be exact. On CPUs with AVX-512 VPOPCNTDQ the exact read
// uses bit planes instead (projection_bitplanes.cpp). Work is split by column tiles; each thread
// accumulates its own N x K x T sums, added up at the end (extra memory O(threads N K T +
// tables), independent of M).
#include "keyed_projection.h"
#include "projection_bitplanes.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace mlguard {

void check_projection_input(const at::Tensor& w, const char* op) {
  const auto type = w.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kHalf ||
                  type == at::kBFloat16,
              op, ": w must be float32, float64, float16 or bfloat16",
              at::isFloat8Type(type) ? " (float8 is not supported: convert with w.float())" : "",
              ", got ", type);
}

void check_keyed_projection_args(const at::Tensor& w, int64_t bits, const char* op) {
  check_projection_input(w, op);
  TORCH_CHECK(bits >= 1 && bits <= (int64_t{1} << 31), op, ": bits must be in [1, 2^31], got ",
              bits);
  TORCH_CHECK(w.numel() <= kProjMaxNumel, op, ": w may hold at most 2^40 elements, got ",
              w.numel());
}

void check_keyed_projection_batched_args(const at::Tensor& w, const at::Tensor& seeds,
                                         int64_t bits, const char* op) {
  check_keyed_projection_args(w, bits, op);
  TORCH_CHECK(w.dim() == 2, op, ": w must be 2-D (models, weights), got ", w.dim(), "-D");
  TORCH_CHECK(seeds.dim() == 1 && seeds.scalar_type() == at::kLong, op,
              ": seeds must be a 1-D int64 tensor, got ", seeds.dim(), "-D ",
              seeds.scalar_type());
  TORCH_CHECK(seeds.device() == w.device(), op, ": seeds must be on w's device (", w.device(),
              "), got ", seeds.device());
}

void check_keyed_projection_backward_args(const at::Tensor& grad_y, int64_t numel) {
  TORCH_CHECK(grad_y.dim() == 1, "_keyed_projection_backward: grad_y must be 1-D, got ",
              grad_y.dim(), "-D");
  TORCH_CHECK(grad_y.scalar_type() == at::kFloat || grad_y.scalar_type() == at::kDouble,
              "_keyed_projection_backward: grad_y must be float32 or float64, got ",
              grad_y.scalar_type());
  TORCH_CHECK(numel >= 0 && numel <= kProjMaxNumel,
              "_keyed_projection_backward: numel must be in [0, 2^40], got ", numel);
}

at::Tensor projection_shifts(const at::Tensor& w2d) {
  const int64_t N = w2d.size(0);
  auto opts = w2d.options().dtype(at::kLong);
  if (w2d.size(1) == 0) return at::zeros({N}, opts);
  // max |w| per model, exact in any precision (NaN propagates); then the exponent of it.
  const auto amax = at::linalg_vector_norm(w2d, INFINITY, {1}).to(at::kDouble);
  const auto exponent = std::get<1>(at::frexp(amax)).to(at::kLong) - kProjFractionBits;
  auto shift = at::where(amax == 0, at::zeros_like(exponent), exponent);
  return at::where(at::isfinite(amax), shift, at::full_like(shift, kProjNonFinite));
}

namespace {

constexpr int64_t kByteTablesFrom = 224;  // rows (K T) from which 8-column tables pay off
constexpr int64_t kRowBlock = 64;    // rows whose signs are drawn together
constexpr int64_t kTileChunks = 8;   // chunks per tile for one model (128 KiB of int tables)

// The signs of rows t0 .. t0 + rows - 1 over chunk c, row r's 4 words at out + r * stride:
// csrc/philox.h's rounds for eight rows side by side, in AVX2 registers where the CPU has
// them (Philox is most of the cost otherwise).
void draw_signs_scalar(uint64_t seed, int64_t t0, int64_t rows, int64_t c, uint32_t* out,
                       int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const Words4 w = projection_signs(seed, t0 + r, c);
    for (int q = 0; q < 4; ++q) out[r * stride + q] = w.v[q];
  }
}

__attribute__((target("avx2")))
inline void mulhilo8(__m256i x, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(x, m);                         // lanes 0, 2, 4, 6
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);   // lanes 1, 3, 5, 7
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

__attribute__((target("avx2")))
void draw_signs_avx2(uint64_t seed, int64_t t0, int64_t rows, int64_t c, uint32_t* out,
                     int64_t stride) {
  const __m256i m0 = _mm256_set1_epi64x(philox_detail::kMul0);
  const __m256i m1 = _mm256_set1_epi64x(philox_detail::kMul1);
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    __m256i x0 = _mm256_set1_epi32(static_cast<int>(lo32(c)));
    __m256i x1 = _mm256_set1_epi32(static_cast<int>(hi32(c)));
    __m256i x2 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(t0 + r0)), lanes);
    __m256i x3 = _mm256_set1_epi32(static_cast<int>(kProjStream));
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      if (round > 0) {
        k0 += philox_detail::kWeyl0;
        k1 += philox_detail::kWeyl1;
      }
      __m256i hi0, lo0, hi1, lo1;
      mulhilo8(x0, m0, hi0, lo0);
      mulhilo8(x2, m1, hi1, lo1);
      x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32(static_cast<int>(k0)));
      x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32(static_cast<int>(k1)));
      x1 = lo1;
      x3 = lo0;
    }
    alignas(32) uint32_t v[4][8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(v[0]), x0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(v[1]), x1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(v[2]), x2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(v[3]), x3);
    const int64_t n = std::min<int64_t>(8, rows - r0);
    for (int64_t i = 0; i < n; ++i)
      for (int q = 0; q < 4; ++q) out[(r0 + i) * stride + q] = v[q][i];
  }
}

const bool kHasAvx2 = [] {
  __builtin_cpu_init();  // may run before libgcc's own constructor
  return __builtin_cpu_supports("avx2") != 0;
}();

inline void draw_signs(uint64_t seed, int64_t t0, int64_t rows, int64_t c, uint32_t* out,
                       int64_t stride) {
  if (kHasAvx2) {
    draw_signs_avx2(seed, t0, rows, c, out, stride);
  } else {
    draw_signs_scalar(seed, t0, rows, c, out, stride);
  }
}

// The tables of one chunk for groups of G columns (G = 4 or 8): 128 / G tables of 2^G
// entries, tab[g][b] = sum over j < G of (bit j of b ? -v : +v)[G g + j]. Bytes halve the
// lookups; nibbles cost 8x less to build, which wins when few rows share the tables.
template <int G, typename V>
inline void build_tables_impl(const V* v, V* tab) {
  constexpr int E = 1 << G;
  for (int g = 0; g < static_cast<int>(kProjChunk) / G; ++g) {
    const V* x = v + G * g;
    if constexpr (G == 4) {  // t[b] = t[b without its lowest set bit j] - 2 x[j]
      V* t = tab + E * g;
      const V twice[4] = {x[0] + x[0], x[1] + x[1], x[2] + x[2], x[3] + x[3]};
      t[0] = x[0] + x[1] + x[2] + x[3];
      for (int b = 1; b < 16; ++b) t[b] = t[b & (b - 1)] - twice[__builtin_ctz(b)];
      continue;
    }
    V lo[16], hi[16];
    for (int b = 0; b < 16; ++b) {
      V a = 0, h = 0;
      for (int j = 0; j < 4; ++j) {
        a += ((b >> j) & 1) ? -x[j] : x[j];
        h += ((b >> j) & 1) ? -x[4 + j] : x[4 + j];
      }
      lo[b] = a;
      hi[b] = h;
    }
    V* t = tab + E * g;
    for (int h = 0; h < 16; ++h)
      for (int l = 0; l < 16; ++l) t[16 * h + l] = hi[h] + lo[l];
  }
}

// Compiled for AVX2 too (picked at run time): the 256-entry rows are plain vector adds.
#define MLGUARD_TABLES(NAME, V, G)                       \
  __attribute__((target_clones("avx2", "default")))      \
  void NAME(const V* v, V* tab) { build_tables_impl<G>(v, tab); }
MLGUARD_TABLES(tables4_i32, int32_t, 4)
MLGUARD_TABLES(tables8_i32, int32_t, 8)
MLGUARD_TABLES(tables4_f32, float, 4)
MLGUARD_TABLES(tables8_f32, float, 8)
MLGUARD_TABLES(tables4_f64, double, 4)
MLGUARD_TABLES(tables8_f64, double, 8)
#undef MLGUARD_TABLES

template <int G, typename V>
inline void build_tables(const V* v, V* tab) {
  if constexpr (std::is_same_v<V, int32_t>) {
    G == 4 ? tables4_i32(v, tab) : tables8_i32(v, tab);
  } else if constexpr (std::is_same_v<V, float>) {
    G == 4 ? tables4_f32(v, tab) : tables8_f32(v, tab);
  } else {
    G == 4 ? tables4_f64(v, tab) : tables8_f64(v, tab);
  }
}

// One row's signed sum over one chunk: 128 / G lookups.
template <int G, typename V>
inline V chunk_lookup(const V* tab, const uint32_t* words) {
  constexpr int E = 1 << G, per = 32 / G;
  constexpr uint32_t mask = E - 1;
  V s = 0;
  for (int q = 0; q < 4; ++q) {
    const uint32_t x = words[q];
    const V* t = tab + per * E * q;
    for (int k = 0; k < per; ++k) s += t[k * E + ((x >> (G * k)) & mask)];
  }
  return s;
}

// out[(n K + k) T + t] += sum over columns of sign(R_k[t, m]) v_n[m] for all n, k, t, where
// v_n = load(n, m) (the quantized or converted weights). `out` is zeroed by the caller.
template <int G, typename V, typename Acc, typename Load>
void project_tiles(int64_t N, int64_t M, const int64_t* seeds, int64_t K, int64_t T, Acc* out,
                   Load load) {
  constexpr int64_t chunk_table = (kProjChunk / G) << G;  // table entries per chunk
  const int64_t chunks = (M + kProjChunk - 1) / kProjChunk;
  const int64_t tc = std::clamp<int64_t>(kTileChunks / std::max<int64_t>(N, 1), 1, kTileChunks);
  const int64_t tiles = (chunks + tc - 1) / tc, rows_out = N * K * T;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(tiles, at::get_num_threads()));
  std::vector<Acc> partial((parts - 1) * rows_out, Acc(0));
  at::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    std::vector<V> vals(kProjChunk);
    std::vector<V> tabs(N * tc * chunk_table);
    std::vector<uint32_t> words(kRowBlock * tc * 4);
    for (int64_t p = begin; p < end; ++p) {
      Acc* acc = p == 0 ? out : partial.data() + (p - 1) * rows_out;
      for (int64_t tile = p * tiles / parts; tile < (p + 1) * tiles / parts; ++tile) {
        const int64_t c0 = tile * tc, nc = std::min(tc, chunks - c0);
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t c = 0; c < nc; ++c) {
            const int64_t col = (c0 + c) * kProjChunk, len = std::min(kProjChunk, M - col);
            for (int64_t j = 0; j < kProjChunk; ++j) vals[j] = j < len ? load(n, col + j) : V(0);
            build_tables<G>(vals.data(), tabs.data() + (n * tc + c) * chunk_table);
          }
        }
        for (int64_t k = 0; k < K; ++k) {
          const uint64_t seed = static_cast<uint64_t>(seeds[k]);
          for (int64_t t0 = 0; t0 < T; t0 += kRowBlock) {
            const int64_t rows = std::min(kRowBlock, T - t0);
            for (int64_t c = 0; c < nc; ++c)
              draw_signs(seed, t0, rows, c0 + c, words.data() + 4 * c, 4 * tc);
            for (int64_t r = 0; r < rows; ++r) {
              const uint32_t* wr = words.data() + r * 4 * tc;
              for (int64_t n = 0; n < N; ++n) {
                const V* tn = tabs.data() + n * tc * chunk_table;
                V s = 0;  // <= 8 chunks: int32 holds 2^10 * 2^16; float error stays small
                for (int64_t c = 0; c < nc; ++c)
                  s += chunk_lookup<G>(tn + c * chunk_table, wr + 4 * c);
                acc[(n * K + k) * T + t0 + r] += static_cast<Acc>(s);
              }
            }
          }
        }
      }
    }
  });
  for (int64_t p = 1; p < parts; ++p)
    for (int64_t i = 0; i < rows_out; ++i) out[i] += partial[(p - 1) * rows_out + i];
}

// The largest |x| of n IEEE values as their bit pattern with the sign cleared: magnitudes
// order like the unsigned integers of their bits, and NaN and inf sort above every finite
// value, so an integer max (which vectorizes, unlike a float max that must keep NaN) is exact.
#define MLGUARD_MAX_BITS(NAME, U)                                   \
  __attribute__((target_clones("avx512f", "avx2", "default")))      \
  U NAME(const U* x, int64_t n) {                                   \
    constexpr U magnitude = static_cast<U>(~U(0)) >> 1;             \
    U m = 0;                                                        \
    for (int64_t j = 0; j < n; ++j) {                               \
      const U a = x[j] & magnitude;                                 \
      m = a > m ? a : m;                                            \
    }                                                               \
    return m;                                                       \
  }
MLGUARD_MAX_BITS(max_bits16, uint16_t)
MLGUARD_MAX_BITS(max_bits32, uint32_t)
MLGUARD_MAX_BITS(max_bits64, uint64_t)
#undef MLGUARD_MAX_BITS

template <typename scalar_t>
double max_magnitude(const scalar_t* x, int64_t n) {
  static_assert(sizeof(scalar_t) == 2 || sizeof(scalar_t) == 4 || sizeof(scalar_t) == 8);
  scalar_t m;
  if constexpr (sizeof(scalar_t) == 2) {
    const uint16_t b = max_bits16(reinterpret_cast<const uint16_t*>(x), n);
    std::memcpy(&m, &b, sizeof m);
  } else if constexpr (sizeof(scalar_t) == 4) {
    const uint32_t b = max_bits32(reinterpret_cast<const uint32_t*>(x), n);
    std::memcpy(&m, &b, sizeof m);
  } else {
    const uint64_t b = max_bits64(reinterpret_cast<const uint64_t*>(x), n);
    std::memcpy(&m, &b, sizeof m);
  }
  return static_cast<double>(m);  // exact; NaN and inf stay so
}

// The shift of each model (row) of a contiguous 2-D w (kProjNonFinite for NaN or inf).
template <typename scalar_t>
void cpu_shifts(const scalar_t* w, int64_t N, int64_t M, int64_t* out) {
  constexpr int64_t grain = int64_t{1} << 16;
  const int64_t blocks = (M + grain - 1) / grain;
  std::vector<double> part(N * blocks, 0.0);
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const int64_t col = (b % blocks) * grain;
      const double m = max_magnitude(w + (b / blocks) * M + col, std::min(grain, M - col));
      part[b] = m <= DBL_MAX ? m : INFINITY;  // NaN or inf
    }
  });
  for (int64_t n = 0; n < N; ++n) {
    double m = 0;
    for (int64_t b = 0; b < blocks; ++b) m = std::max(m, part[n * blocks + b]);
    out[n] = projection_shift(m);
  }
}

// The exact read: (sums int64 (N, K, T), shift int64 (N,)).
std::tuple<at::Tensor, at::Tensor> keyed_projection_sums_cpu(const at::Tensor& w2d,
                                                             const at::Tensor& seeds,
                                                             int64_t bits) {
  check_keyed_projection_batched_args(w2d, seeds, bits, "keyed_projection_sums");
  const auto w = w2d.contiguous();
  const auto s = seeds.contiguous();
  const int64_t N = w.size(0), M = w.size(1), K = s.size(0);
  auto shifts = at::zeros({N}, w.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "projection_shifts", [&] {
    cpu_shifts(w.data_ptr<scalar_t>(), N, M, shifts.data_ptr<int64_t>());
  });
  auto sums = at::zeros({N, K, bits}, w.options().dtype(at::kLong));
  if (sums.numel() == 0 || M == 0) return {sums, shifts};
  const int64_t* sh = shifts.data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n)
    TORCH_CHECK(sh[n] != kProjNonFinite, "keyed_projection_sums: w must be finite, got NaN or "
                "inf in model ", n);
  if (bitplanes_available()) {
    project_sums_bitplanes(w, sh, s.data_ptr<int64_t>(), K, bits, sums.data_ptr<int64_t>());
    return {sums, shifts};
  }
  std::vector<double> factor(N);
  for (int64_t n = 0; n < N; ++n) factor[n] = projection_factor(sh[n]);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection_sums", [&] {
    const scalar_t* wp = w.data_ptr<scalar_t>();
    const auto load = [&](int64_t n, int64_t m) {
      return projection_quantize(static_cast<double>(wp[n * M + m]), sh[n], factor[n]);
    };
    if (K * bits >= kByteTablesFrom) {
      project_tiles<8, int32_t>(N, M, s.data_ptr<int64_t>(), K, bits, sums.data_ptr<int64_t>(), load);
    } else {
      project_tiles<4, int32_t>(N, M, s.data_ptr<int64_t>(), K, bits, sums.data_ptr<int64_t>(), load);
    }
  });
  return {sums, shifts};
}

// The training forward: float tables, sums in double, scaled by 1/sqrt(M).
at::Tensor keyed_projection_cpu(const at::Tensor& w_in, int64_t seed, int64_t bits) {
  check_keyed_projection_args(w_in, bits, "keyed_projection");
  const auto w = w_in.contiguous();
  const int64_t M = w.numel();
  const auto acc_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<double> y(bits, 0.0);
  if (M > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection", [&] {
      using V = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      const scalar_t* wp = w.data_ptr<scalar_t>();
      const auto load = [&](int64_t, int64_t m) { return static_cast<V>(wp[m]); };
      if (bits >= kByteTablesFrom) {
        project_tiles<8, V>(1, M, &seed, 1, bits, y.data(), load);
      } else {
        project_tiles<4, V>(1, M, &seed, 1, bits, y.data(), load);
      }
    });
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(M, 1)));
  auto out = at::empty({bits}, w.options().dtype(at::kDouble));
  double* op = out.data_ptr<double>();
  for (int64_t t = 0; t < bits; ++t) op[t] = y[t] * scale;
  return out.to(acc_type);
}

// One chunk's 128 gradient sums over T rows whose sign words are in `words` (4 per row).
template <typename acc_t>
inline void backward_chunk(const acc_t* g, int64_t T, const uint32_t* words, acc_t* acc) {
  using bits_t = std::conditional_t<sizeof(acc_t) == 8, uint64_t, uint32_t>;
  constexpr int top = 8 * sizeof(acc_t) - 1;
  for (int64_t t = 0; t < T; ++t) {
    bits_t v;
    std::memcpy(&v, g + t, sizeof v);
    for (int q = 0; q < 4; ++q) {
      const uint32_t word = words[4 * t + q];
      for (int b = 0; b < 32; ++b) {
        // flipping the IEEE sign bit is exactly negation; no branch on random bits
        const bits_t x = v ^ (static_cast<bits_t>((word >> b) & 1u) << top);
        acc_t f;
        std::memcpy(&f, &x, sizeof f);
        acc[q * 32 + b] += f;
      }
    }
  }
}

__attribute__((target_clones("avx2", "default")))
void backward_chunk_f32(const float* g, int64_t T, const uint32_t* words, float* acc) {
  backward_chunk(g, T, words, acc);
}

__attribute__((target_clones("avx2", "default")))
void backward_chunk_f64(const double* g, int64_t T, const uint32_t* words, double* acc) {
  backward_chunk(g, T, words, acc);
}

inline void backward_chunk_any(const float* g, int64_t T, const uint32_t* w, float* acc) {
  backward_chunk_f32(g, T, w, acc);
}
inline void backward_chunk_any(const double* g, int64_t T, const uint32_t* w, double* acc) {
  backward_chunk_f64(g, T, w, acc);
}

// grad_w[m] = (1/sqrt(M)) * sum_t (+-grad_y[t]).
at::Tensor keyed_projection_backward_cpu(const at::Tensor& grad_y, int64_t seed, int64_t numel) {
  check_keyed_projection_backward_args(grad_y, numel);
  const auto g = grad_y.contiguous();
  auto out = at::empty({numel}, g.options());
  const int64_t T = g.size(0), chunks = (numel + kProjChunk - 1) / kProjChunk;
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "_keyed_projection_backward", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t scale =
        static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(numel, 1))));
    at::parallel_for(0, chunks, 16, [&](int64_t begin, int64_t end) {
      constexpr int64_t rows = 256;  // sign words of up to 256 rows at a time (4 KiB)
      std::vector<uint32_t> words(4 * rows);
      scalar_t acc[kProjChunk];
      for (int64_t c = begin; c < end; ++c) {
        std::fill(acc, acc + kProjChunk, scalar_t(0));
        for (int64_t t0 = 0; t0 < T; t0 += rows) {
          const int64_t n = std::min(rows, T - t0);
          draw_signs(static_cast<uint64_t>(seed), t0, n, c, words.data(), 4);
          backward_chunk_any(gp + t0, n, words.data(), acc);
        }
        const int64_t len = std::min(kProjChunk, numel - c * kProjChunk);
        for (int64_t j = 0; j < len; ++j) op[c * kProjChunk + j] = acc[j] * scale;
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("keyed_projection(Tensor w, int seed, int bits) -> Tensor");
  m.def("keyed_projection_sums(Tensor w, Tensor seeds, int bits) -> (Tensor, Tensor)");
  m.def("_keyed_projection_backward(Tensor grad_y, int seed, int numel) -> Tensor");
  // Which CPU kernel keyed_projection_sums uses here (for build_info and the tests).
  m.def("_projection_sums_cpu_kernel() -> str",
        [] { return std::string(bitplanes_available() ? "bitplanes" : "tables"); });
}

TORCH_LIBRARY_IMPL(mlguard, CPU, m) {
  m.impl("keyed_projection", &keyed_projection_cpu);
  m.impl("keyed_projection_sums", &keyed_projection_sums_cpu);
  m.impl("_keyed_projection_backward", &keyed_projection_backward_cpu);
}

}  // namespace mlguard
