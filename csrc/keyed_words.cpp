// mlguard::keyed_words: schema, argument checks and CPU kernel.
#include "keyed_words.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace mlguard {

void check_keyed_words_args(const at::Tensor& index) {
  TORCH_CHECK(index.dim() == 1, "keyed_words: index must be 1-D, got ", index.dim(), "-D");
  TORCH_CHECK(index.scalar_type() == at::kLong, "keyed_words: index must be int64, got ",
              index.scalar_type());
}

namespace {

at::Tensor keyed_words_cpu(const at::Tensor& index, int64_t seed, int64_t stream) {
  check_keyed_words_args(index);
  const auto idx = index.contiguous();
  auto out = at::empty({idx.size(0), 4}, idx.options());
  const int64_t* ip = idx.data_ptr<int64_t>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, idx.size(0), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      keyed_words_one(static_cast<uint64_t>(seed), ip[i], stream, op + 4 * i);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("keyed_words(Tensor index, int seed, int stream) -> Tensor");
}

TORCH_LIBRARY_IMPL(mlguard, CPU, m) { m.impl("keyed_words", &keyed_words_cpu); }

}  // namespace mlguard
