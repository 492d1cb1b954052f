// mlguard::augment_batch: schema, argument checks and CPU kernel.
#include "augment_batch.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

namespace mlguard {
namespace {

// Raises for the first index outside [0, N) or offset outside [0, 2 pad]; CPU tensors.
void check_augment_values(const at::Tensor& index, const at::Tensor& offsets, int64_t N,
                          int64_t pad) {
  const auto idx = index.contiguous();
  const auto off = offsets.contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t* op = off.data_ptr<int64_t>();
  for (int64_t b = 0; b < idx.numel(); ++b) {
    TORCH_CHECK(ip[b] >= 0 && ip[b] < N, "augment_batch: index[", b, "] = ", ip[b],
                " is out of range for ", N, " images");
    TORCH_CHECK(op[2 * b] >= 0 && op[2 * b] <= 2 * pad && op[2 * b + 1] >= 0 &&
                    op[2 * b + 1] <= 2 * pad,
                "augment_batch: offsets[", b, "] = (", op[2 * b], ", ", op[2 * b + 1],
                ") must lie in [0, 2 * pad] = [0, ", 2 * pad, "]");
  }
}

}  // namespace

Normalize check_augment_batch_args(const at::Tensor& images, const at::Tensor& index,
                                   const at::Tensor& offsets, const at::Tensor& flip, int64_t pad,
                                   c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                                   at::ScalarType dtype) {
  TORCH_CHECK(images.dim() == 4, "augment_batch: images must be 4-D (N, C, H, W), got ",
              images.dim(), "-D");
  TORCH_CHECK(images.scalar_type() == at::kByte, "augment_batch: images must be uint8, got ",
              images.scalar_type());
  const int64_t B = index.numel(), C = images.size(1);
  TORCH_CHECK(index.dim() == 1 && index.scalar_type() == at::kLong,
              "augment_batch: index must be 1-D int64, got ", index.scalar_type(), " of shape ",
              index.sizes());
  TORCH_CHECK(offsets.dim() == 2 && offsets.size(0) == B && offsets.size(1) == 2 &&
                  offsets.scalar_type() == at::kLong,
              "augment_batch: offsets must be int64 (", B, ", 2), got ", offsets.scalar_type(),
              " of shape ", offsets.sizes());
  TORCH_CHECK(flip.dim() == 1 && flip.size(0) == B && flip.scalar_type() == at::kBool,
              "augment_batch: flip must be bool (", B, "), got ", flip.scalar_type(),
              " of shape ", flip.sizes());
  for (const auto* t : {&index, &offsets, &flip}) {
    TORCH_CHECK(t->device() == images.device(),
                "augment_batch: all tensors must be on images' device (", images.device(),
                "), got one on ", t->device());
  }
  TORCH_CHECK(pad >= 0, "augment_batch: pad must be >= 0, got ", pad);
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              "augment_batch: dtype must be float32, float64, float16 or bfloat16, got ", dtype);
  const Normalize norm = check_normalization("augment_batch", C, mean, std);
  // The same value checks on every device. On a GPU they cost one host sync: the kernel
  // would otherwise zero-fill for a bad offset and trap for a bad index (a device assert
  // poisons the CUDA context for the rest of the process).
  if (B > 0) {
    if (images.device().is_cpu()) {
      check_augment_values(index, offsets, images.size(0), pad);
    } else {
      const bool bad = (index.lt(0) | index.ge(images.size(0))).any().logical_or(
                           (offsets.lt(0) | offsets.gt(2 * pad)).any()).item<bool>();
      if (bad) check_augment_values(index.cpu(), offsets.cpu(), images.size(0), pad);
    }
  }
  return norm;
}

namespace {

at::Tensor augment_batch_cpu(const at::Tensor& images, const at::Tensor& index,
                             const at::Tensor& offsets, const at::Tensor& flip, int64_t pad,
                             c10::ArrayRef<double> mean, c10::ArrayRef<double> std,
                             at::ScalarType dtype) {
  const Normalize norm =
      check_augment_batch_args(images, index, offsets, flip, pad, mean, std, dtype);
  const int64_t C = images.size(1), H = images.size(2), W = images.size(3);
  const int64_t B = index.numel();
  auto out = at::empty({B, C, H, W}, images.options().dtype(dtype),
                       at::MemoryFormat::ChannelsLast);
  if (out.numel() == 0) return out;
  const auto img = images.contiguous(at::MemoryFormat::ChannelsLast);  // (N, H, W, C) bytes
  const auto idx = index.contiguous();
  const auto off = offsets.contiguous();
  const auto flp = flip.contiguous();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t* op = off.data_ptr<int64_t>();
  const bool* fp = flp.data_ptr<bool>();
  // A value depends only on (channel, byte): one table of 256 per channel, filled with the
  // same float arithmetic the CUDA kernel uses, makes the inner loop a lookup.
  std::vector<float> table(static_cast<size_t>(C) * 256);
  for (int64_t c = 0; c < C; ++c)
    for (int v = 0; v < 256; ++v)
      table[c * 256 + v] = augment_value(static_cast<uint8_t>(v), c, norm);
  const uint8_t* src = img.data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "augment_batch", [&] {
    scalar_t* dst = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * H, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / H, y = row % H;
        const int64_t sy = y + op[2 * b] - pad, ox = op[2 * b + 1] - pad;
        const uint8_t* line = (sy >= 0 && sy < H) ? src + ((ip[b] * H + sy) * W) * C : nullptr;
        scalar_t* o = dst + row * W * C;
        for (int64_t x = 0; x < W; ++x) {
          const int64_t sx = (fp[b] ? W - 1 - x : x) + ox;
          const uint8_t* px = (line != nullptr && sx >= 0 && sx < W) ? line + sx * C : nullptr;
          for (int64_t c = 0; c < C; ++c)
            o[x * C + c] = static_cast<scalar_t>(table[c * 256 + (px ? px[c] : 0)]);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("augment_batch(Tensor images, Tensor index, Tensor offsets, Tensor flip, int pad,"
        " float[] mean, float[] std, ScalarType dtype) -> Tensor");
}

TORCH_LIBRARY_IMPL(mlguard, CPU, m) { m.impl("augment_batch", &augment_batch_cpu); }

}  // namespace mlguard
