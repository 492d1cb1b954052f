// The exact read (keyed_projection_sums, docs/projection.md) on CPUs with AVX-512 and its
// VPOPCNTDQ extension, by bit planes instead of lookup tables.
//
// q[m] fits 18-bit two's complement (|q| <= 2^16), so with plane b = bit b of every q[m]
// and P = the sign bits of row t (set = -1):
//   S[t] = sum q - 2 sum_{m in P} q[m]
//   sum_{m in P} q[m] = sum_{b < 17} 2^b popcount(P & plane_b) - 2^17 popcount(P & plane_17).
// Sixteen rows' Philox blocks sit in the lanes of four zmm registers (one per 32-column
// word), so each (plane, word) costs an AND, a VPOPCNTD and an add for 16 rows x 32 columns,
// with the signs never leaving the registers. Integer arithmetic throughout: the same S as
// every other kernel.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mlguard {

// Whether this CPU can run project_sums_bitplanes (and MLGUARD_PROJECTION_TABLES, which
// forces the lookup-table kernel for testing and comparison, is not set).
bool bitplanes_available();

// out[(n K + k) T + t] = S[t] of model n (row n of the contiguous (N, M) `w`) and seed k,
// with shifts[n] finite (checked by the caller). `out` (N K T int64) need not be zeroed.
void project_sums_bitplanes(const at::Tensor& w, const int64_t* shifts, const int64_t* seeds,
                            int64_t K, int64_t T, int64_t* out);

}  // namespace mlguard
