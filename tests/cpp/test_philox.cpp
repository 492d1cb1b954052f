// The keyed generator against Random123's published Philox-4x32-10 known-answer vectors, and
// the registered CPU op mlguard::keyed_words against the header it is built on.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>

#include "philox.h"

namespace {

int failures = 0;

void expect_block(const mlguard::Words4& got, const mlguard::Words4& want, const char* what) {
  for (int i = 0; i < 4; ++i) {
    if (got.v[i] != want.v[i]) {
      std::printf("FAIL %s: word %d is %08x, expected %08x\n", what, i, got.v[i], want.v[i]);
      ++failures;
    }
  }
}

}  // namespace

int main() {
  using mlguard::Words4;
  // Random123 kat_vectors: counter, key -> output.
  expect_block(mlguard::philox4x32_10(Words4{{0, 0, 0, 0}}, 0, 0),
               Words4{{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}, "zeros");
  expect_block(mlguard::philox4x32_10(
                   Words4{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}}, 0xffffffff,
                   0xffffffff),
               Words4{{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}, "ones");
  expect_block(mlguard::philox4x32_10(
                   Words4{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, 0xa4093822,
                   0x299f31d0),
               Words4{{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}, "pi digits");

  // keyed_block puts the seed's low word first: seed 0x299f31d0a4093822 is the pi key.
  expect_block(mlguard::keyed_block(0x299f31d0a4093822ull, 0x243f6a88, 0x85a308d3, 0x13198a2e,
                                    0x03707344),
               Words4{{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}, "keyed_block");

  // The op, called through the dispatcher as any C++ user of the library would.
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("mlguard::keyed_words", "")
                .typed<at::Tensor(const at::Tensor&, int64_t, int64_t)>();
  const int64_t seed = -0x123456789abcdefLL, stream = 42;
  const auto index = at::arange(-3, 1000, at::kLong);
  const auto words = op.call(index, seed, stream);
  for (int64_t i = 0; i < index.size(0); ++i) {
    const int64_t n = index[i].item<int64_t>();
    const Words4 b = mlguard::keyed_block(static_cast<uint64_t>(seed), mlguard::lo32(n),
                                          mlguard::hi32(n), mlguard::lo32(stream),
                                          mlguard::hi32(stream));
    for (int w = 0; w < 4; ++w) {
      if (words[i][w].item<int64_t>() != static_cast<int64_t>(b.v[w])) {
        std::printf("FAIL keyed_words op: index %lld word %d\n", static_cast<long long>(n), w);
        ++failures;
      }
    }
  }
  std::printf("%s: %d failure(s)\n", failures ? "FAILED" : "passed", failures);
  return failures ? 1 : 0;
}
