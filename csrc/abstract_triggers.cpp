// mlguard::abstract_triggers: schema, argument checks and CPU kernel.
#include "abstract_triggers.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

namespace mlguard {

void check_abstract_triggers_args(const at::Tensor& indices, int64_t channels, int64_t height,
                                  int64_t width) {
  TORCH_CHECK(indices.dim() == 1, "abstract_triggers: indices must be 1-D, got ",
              indices.dim(), "-D");
  TORCH_CHECK(indices.scalar_type() == at::kLong,
              "abstract_triggers: indices must be int64, got ", indices.scalar_type());
  TORCH_CHECK(channels >= 1 && channels <= 64,
              "abstract_triggers: channels must be in [1, 64], got ", channels);
  TORCH_CHECK(height >= 1 && height <= 8192 && width >= 1 && width <= 8192,
              "abstract_triggers: height and width must be in [1, 8192], got ", height, "x",
              width);
}

namespace {

at::Tensor abstract_triggers_cpu(const at::Tensor& indices, int64_t seed, int64_t channels,
                                 int64_t height, int64_t width) {
  check_abstract_triggers_args(indices, channels, height, width);
  TORCH_CHECK(indices.device().is_cpu(), "abstract_triggers: indices must be on the CPU here");
  const auto idx = indices.contiguous();
  auto out = at::empty({idx.size(0), channels, height, width}, idx.options().dtype(at::kFloat));
  const int64_t planes = idx.size(0) * channels, plane_size = height * width;
  if (planes == 0) return out;
  const int64_t* ip = idx.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const uint64_t useed = static_cast<uint64_t>(seed);
  at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    for (int64_t pl = begin; pl < end; ++pl) {
      const AbstractPlane p = abstract_plane(useed, ip[pl / channels], pl % channels);
      float* dst = op + pl * plane_size;
      for (int64_t y = 0; y < height; ++y)
        for (int64_t x = 0; x < width; ++x)
          dst[y * width + x] = static_cast<float>(abstract_level(p, y, x, height, width)) / 255.0f;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("abstract_triggers(Tensor indices, int seed, int channels, int height, int width)"
        " -> Tensor");
}

TORCH_LIBRARY_IMPL(mlguard, CPU, m) { m.impl("abstract_triggers", &abstract_triggers_cpu); }

}  // namespace mlguard
