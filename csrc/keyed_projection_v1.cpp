// mlguard::keyed_projection_v1 (CPU only): the fixed float summation order that weight keys
// made before keyed_projection_sums are read with (keys whose body has no "projection"
// field). Kept bit for bit as it was; CUDA callers copy w to the CPU (legacy keys only).
//
// The order: 1. columns are cut into chunks of 128 (one Philox block per row); each chunk is
// summed sequentially from 0, adding +w or -w, in float32 (float64 for float64 w);
// 2. chunk sums are reduced in groups of 128 with a[i] += a[i + s] for s = 64, 32, ..., 1
// (missing entries 0), level by level until one value is left; 3. the total is multiplied
// by 1/sqrt(M) rounded once to the accumulation type.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "keyed_projection.h"

namespace mlguard {
namespace {

constexpr int64_t kProjGroup = 128;  // values per tree node

inline int64_t projection_nodes(int64_t n) { return (n + kProjGroup - 1) / kProjGroup; }

// v or -v, without a branch (the sign bits are random, so a branch mispredicts half the
// time): flipping the IEEE sign bit is exactly negation.
template <typename acc_t>
inline acc_t negate_if(acc_t v, uint32_t bit) {
  using bits_t = std::conditional_t<sizeof(acc_t) == 8, uint64_t, uint32_t>;
  return std::bit_cast<acc_t>(std::bit_cast<bits_t>(v) ^
                              (static_cast<bits_t>(bit) << (8 * sizeof(acc_t) - 1)));
}

// One node of the tree: values g*128 .. g*128+127 of `values` (0 past n), reduced in the
// CUDA shared-memory order.
template <typename acc_t, typename Load>
acc_t tree_node(int64_t g, int64_t n, Load load) {
  acc_t a[kProjGroup];
  for (int64_t i = 0; i < kProjGroup; ++i) {
    const int64_t j = g * kProjGroup + i;
    a[i] = j < n ? load(j) : acc_t(0);
  }
  for (int64_t s = kProjGroup / 2; s > 0; s >>= 1)
    for (int64_t i = 0; i < s; ++i) a[i] += a[i + s];
  return a[0];
}

// y for N models x K seeds x T bits. A task is one (model, seed) pair and 8 rows: the 8 rows'
// chunk sums run side by side, one vector lane each, every lane in exactly the order of
// keyed_projection.h. The float kernel is also compiled for AVX2 and picked at run time.
constexpr int64_t kCpuRows = 8;

template <typename acc_t>
inline void chunk_sums_generic(const acc_t* w, int64_t len, const uint32_t (*words)[kCpuRows],
                               acc_t* out) {
  acc_t acc[kCpuRows] = {};
  for (int64_t j = 0; j < len; ++j) {
    const int bit = static_cast<int>(j & 31);
    for (int r = 0; r < kCpuRows; ++r) acc[r] += negate_if(w[j], (words[j >> 5][r] >> bit) & 1u);
  }
  for (int r = 0; r < kCpuRows; ++r) out[r] = acc[r];
}

__attribute__((target_clones("avx2", "default")))
void chunk_sums_f32(const float* w, int64_t len, const uint32_t (*words)[kCpuRows], float* out) {
  float acc[kCpuRows] = {};
  for (int64_t j = 0; j < len; ++j) {
    uint32_t v;
    std::memcpy(&v, w + j, sizeof v);
    const int up = 31 - static_cast<int>(j & 31);  // the same shift in every lane
    for (int r = 0; r < kCpuRows; ++r) {
      const uint32_t x = v ^ ((words[j >> 5][r] << up) & 0x80000000u);
      float f;
      std::memcpy(&f, &x, sizeof f);
      acc[r] += f;
    }
  }
  for (int r = 0; r < kCpuRows; ++r) out[r] = acc[r];
}

template <typename scalar_t, typename acc_t>
void project_cpu(const scalar_t* w, int64_t M, int64_t N, const int64_t* seeds, int64_t K,
                 int64_t T, acc_t* out) {
  const int64_t chunks = std::max<int64_t>((M + kProjChunk - 1) / kProjChunk, 1);
  const int64_t row_blocks = (T + kCpuRows - 1) / kCpuRows;
  const acc_t scale =
      static_cast<acc_t>(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(M, 1))));
  at::parallel_for(0, N * K * row_blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t width0 = projection_nodes(chunks);
    std::vector<acc_t> level(kCpuRows * width0);
    acc_t sums[kCpuRows][kProjGroup];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t nk = task / row_blocks, t0 = (task % row_blocks) * kCpuRows;
      const int64_t rows = std::min(kCpuRows, T - t0);
      const scalar_t* wn = w + (nk / K) * M;
      const uint64_t seed = static_cast<uint64_t>(seeds[nk % K]);
      for (int64_t g = 0; g < width0; ++g) {
        for (int64_t i = 0; i < kProjGroup; ++i) {
          const int64_t c = g * kProjGroup + i, col = c * kProjChunk;
          acc_t acc[kCpuRows] = {};
          if (c < chunks && col < M) {
            uint32_t words[4][kCpuRows] = {};
            for (int64_t r = 0; r < rows; ++r) {
              const Words4 sg = projection_signs(seed, t0 + r, c);
              for (int q = 0; q < 4; ++q) words[q][r] = sg.v[q];
            }
            const int64_t len = std::min(kProjChunk, M - col);
            acc_t chunk[kProjChunk];  // converted once, exactly as the CUDA kernel converts
            for (int64_t j = 0; j < len; ++j) chunk[j] = static_cast<acc_t>(wn[col + j]);
            if constexpr (std::is_same_v<acc_t, float>) {
              chunk_sums_f32(chunk, len, words, acc);
            } else {
              chunk_sums_generic(chunk, len, words, acc);
            }
          }
          for (int64_t r = 0; r < kCpuRows; ++r) sums[r][i] = acc[r];
        }
        for (int64_t r = 0; r < kCpuRows; ++r)
          level[r * width0 + g] = tree_node<acc_t>(0, kProjGroup, [&](int64_t j) { return sums[r][j]; });
      }
      for (int64_t r = 0; r < rows; ++r) {
        acc_t* lv = level.data() + r * width0;
        int64_t width = width0;
        while (width > 1) {  // in place: node g only reads entries >= g
          const int64_t next = projection_nodes(width);
          for (int64_t g = 0; g < next; ++g)
            lv[g] = tree_node<acc_t>(g, width, [&](int64_t j) { return lv[j]; });
          width = next;
        }
        out[nk * T + t0 + r] = lv[0] * scale;
      }
    }
  });
}

at::Tensor project(const at::Tensor& w2d, const at::Tensor& seeds, int64_t bits) {
  const auto w = w2d.contiguous();
  const auto s = seeds.contiguous();
  const int64_t N = w.size(0), M = w.size(1), K = s.size(0);
  const auto acc_type = w.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto out = at::empty({N, K, bits}, w.options().dtype(acc_type));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w.scalar_type(), "keyed_projection", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    project_cpu<scalar_t, acc_t>(w.data_ptr<scalar_t>(), M, N, s.data_ptr<int64_t>(), K, bits,
                                 out.data_ptr<acc_t>());
  });
  return out;
}

at::Tensor keyed_projection_v1_cpu(const at::Tensor& w, const at::Tensor& seeds, int64_t bits) {
  check_keyed_projection_batched_args(w, seeds, bits, "keyed_projection_v1");
  return project(w, seeds, bits);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("keyed_projection_v1(Tensor w, Tensor seeds, int bits) -> Tensor");
}

TORCH_LIBRARY_IMPL(mlguard, CPU, m) { m.impl("keyed_projection_v1", &keyed_projection_v1_cpu); }

}  // namespace mlguard
