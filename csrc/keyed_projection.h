// mlguard keyed projections: y = R w with a secret R in {+1, -1}^{T x M} / sqrt(M) that is
// regenerated from the key inside the kernels and never stored (Uchida et al. store it,
// which caps M; regenerating it lets a message spread over a whole layer or model).
//
// R: the sign of R[t, m] is bit (m mod 128) of the Philox block (seed; chunk m / 128, row t,
// stream "prj1"); bit j of the block is bit j % 32 of word j / 32; a set bit means -1.
//
// Three ops use this R:
//  - keyed_projection / _keyed_projection_backward: the training path (the loss and its
//    gradient). Float arithmetic in whatever order is fastest on the device; not exact.
//  - keyed_projection_sums: what a verdict reads, defined by EXACT integer arithmetic so any
//    kernel on any device may add in any order and still give the same bits
//    (docs/projection.md is the definition every implementation must match):
//      amax = max_m |w[m]| (exact, in double); shift = e - 16 where amax = f 2^e, f in [0.5, 1)
//      (shift = 0 when amax = 0; w with NaN or inf is refused);
//      q[m] = round-half-to-even(w[m] 2^-shift), an integer with |q| <= 2^16;
//      S[t] = sum_m sign(R[t, m]) q[m], exact in int64 (|S| <= M 2^16 < 2^63);
//      read bit t = 1 iff S[t] > 0.
//  - keyed_projection_v1 (CPU only): the fixed float32 summation order that keys made before
//    keyed_projection_sums (weight keys without a "projection" field) were read with.
#pragma once

#include <ATen/core/Tensor.h>

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "philox.h"

namespace mlguard {

constexpr int64_t kProjChunk = 128;            // columns per Philox block
constexpr uint32_t kProjStream = 0x70726a31u;  // "prj1": keeps these draws apart from others
constexpr int kProjFractionBits = 16;          // |q| <= 2^16
constexpr int64_t kProjMaxNumel = int64_t{1} << 40;  // keeps |S| < 2^57 and indices exact
constexpr int64_t kProjNonFinite = INT64_MIN;  // the shift of a model whose w has NaN or inf

// The 128 signs of row t over chunk c: bit j set means column 128 c + j gets -1.
MLGUARD_HD Words4 projection_signs(uint64_t seed, int64_t t, int64_t chunk) {
  return keyed_block(seed, lo32(chunk), hi32(chunk), static_cast<uint32_t>(t), kProjStream);
}

// The shift of the fixed-point image of a vector whose largest magnitude is `amax`.
MLGUARD_HD int64_t projection_shift(double amax) {
  if (!(amax <= DBL_MAX)) return kProjNonFinite;  // NaN or inf
  if (amax == 0) return 0;
  int e = 0;
  ::frexp(amax, &e);
  return static_cast<int64_t>(e) - kProjFractionBits;
}

// q = round-half-even(x 2^-shift). `factor` = 2^-shift when that is a finite double
// (-shift <= 1023): the product is then exact or so small that it rounds to 0 either way,
// so it equals the ldexp form of the definition, which is used otherwise.
MLGUARD_HD double projection_factor(int64_t shift) {
  return -shift <= 1023 ? ::ldexp(1.0, static_cast<int>(-shift)) : 0.0;
}

// Rounding: |scaled| <= 2^16, so adding 1.5 * 2^52 (where the spacing of doubles is 1) rounds
// it to an integer, ties to even, exactly as rint in the default rounding mode; subtracting
// is exact. Plain IEEE double additions: no libm call, the same on every device.
MLGUARD_HD int32_t projection_quantize(double x, int64_t shift, double factor) {
  constexpr double kRound = 6755399441055744.0;  // 1.5 * 2^52
  const double scaled = factor != 0.0 ? x * factor : ::ldexp(x, static_cast<int>(-shift));
  // (no -ffast-math anywhere: compilers may not reassociate this away)
  return static_cast<int32_t>((scaled + kRound) - kRound);
}

// Shared by the CPU and CUDA kernels.
void check_projection_input(const at::Tensor& w, const char* op);
void check_keyed_projection_args(const at::Tensor& w, int64_t bits, const char* op);
void check_keyed_projection_batched_args(const at::Tensor& w, const at::Tensor& seeds,
                                         int64_t bits, const char* op);
void check_keyed_projection_backward_args(const at::Tensor& grad_y, int64_t numel);
// shift per model (row of the 2-D w): ATen reductions, so it runs on w's device with no sync.
at::Tensor projection_shifts(const at::Tensor& w2d);

}  // namespace mlguard
