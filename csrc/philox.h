// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
//
// The one generator behind everything a key controls. It is counter based: the output for
// a (key, counter) pair is a pure function of both, so every CPU thread and CUDA thread can
// draw exactly the value it needs, in any order, and the CPU and CUDA kernels produce
// bit-identical results. Only 32-bit integer arithmetic is used, so no compiler or device
// can change a result.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MLGUARD_HD __host__ __device__ __forceinline__
#else
#define MLGUARD_HD inline
#endif

namespace mlguard {

struct Words4 {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

MLGUARD_HD Words4 round(Words4 c, uint32_t k0, uint32_t k1) {
  const uint64_t p0 = static_cast<uint64_t>(kMul0) * c.v[0];
  const uint64_t p1 = static_cast<uint64_t>(kMul1) * c.v[2];
  const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
  const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
  return Words4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
}
}  // namespace philox_detail

// The raw generator, with Random123's argument order (counter, key).
MLGUARD_HD Words4 philox4x32_10(Words4 counter, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k0 += philox_detail::kWeyl0;
      k1 += philox_detail::kWeyl1;
    }
    counter = philox_detail::round(counter, k0, k1);
  }
  return counter;
}

// mlguard's convention: a key-derived 64-bit seed is the Philox key (low word first), and
// the four counter words say what is drawn (which item, which part of it, which attempt).
MLGUARD_HD Words4 keyed_block(uint64_t seed, uint32_t c0, uint32_t c1, uint32_t c2,
                              uint32_t c3) {
  return philox4x32_10(Words4{{c0, c1, c2, c3}}, static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

MLGUARD_HD uint32_t lo32(int64_t x) { return static_cast<uint32_t>(static_cast<uint64_t>(x)); }
MLGUARD_HD uint32_t hi32(int64_t x) {
  return static_cast<uint32_t>(static_cast<uint64_t>(x) >> 32);
}

}  // namespace mlguard
