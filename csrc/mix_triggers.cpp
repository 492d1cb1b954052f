// mlguard::mix_triggers: schema, argument checks and CPU kernel.
#include "mix_triggers.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

namespace mlguard {

Normalize check_mix_triggers_args(const at::Tensor& x, const at::Tensor& y,
                                  const at::Tensor& bank, const at::Tensor& bank_labels,
                                  int64_t step, int64_t per_batch, int64_t pad,
                                  c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  TORCH_CHECK(x.dim() == 4, "mix_triggers: x must be 4-D (N, C, H, W), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()) && !at::isFloat8Type(x.scalar_type()),
              "mix_triggers: x must be float32, float64, float16 or bfloat16",
              at::isFloat8Type(x.scalar_type()) ? " (float8 is not supported: convert with x.float())"
                                                : "",
              ", got ", x.scalar_type());
  TORCH_CHECK(y.dim() == 1 && y.size(0) == x.size(0),
              "mix_triggers: y must be 1-D with one label per sample of x (", x.size(0),
              "), got shape ", y.sizes());
  TORCH_CHECK(y.scalar_type() == at::kLong, "mix_triggers: y must be int64, got ",
              y.scalar_type());
  TORCH_CHECK(bank.dim() == 4 && bank.size(1) == x.size(1) && bank.size(2) == x.size(2) &&
                  bank.size(3) == x.size(3),
              "mix_triggers: bank must be (S, C, H, W) with x's image shape ",
              x.sizes().slice(1), ", got ", bank.sizes());
  TORCH_CHECK(bank.scalar_type() == at::kFloat, "mix_triggers: bank must be float32, got ",
              bank.scalar_type());
  TORCH_CHECK(bank_labels.dim() == 1 && bank_labels.size(0) == bank.size(0),
              "mix_triggers: bank_labels must be 1-D with one label per bank image (",
              bank.size(0), "), got shape ", bank_labels.sizes());
  TORCH_CHECK(bank_labels.scalar_type() == at::kLong,
              "mix_triggers: bank_labels must be int64, got ", bank_labels.scalar_type());
  for (const auto* t : {&y, &bank, &bank_labels}) {
    TORCH_CHECK(t->device() == x.device(), "mix_triggers: all tensors must be on x's device (",
                x.device(), "), got one on ", t->device());
  }
  TORCH_CHECK(step >= 0, "mix_triggers: step must be >= 0, got ", step);
  TORCH_CHECK(per_batch >= 0, "mix_triggers: per_batch must be >= 0, got ", per_batch);
  TORCH_CHECK(per_batch == 0 || bank.size(0) > 0, "mix_triggers: bank is empty");
  TORCH_CHECK(pad >= 0 && pad <= x.size(2) && pad <= x.size(3),
              "mix_triggers: pad must be in [0, min(H, W)], got ", pad);
  return check_normalization("mix_triggers", x.size(1), mean, std);
}

namespace {

std::tuple<at::Tensor, at::Tensor> mix_triggers_cpu(
    const at::Tensor& x, const at::Tensor& y, const at::Tensor& bank,
    const at::Tensor& bank_labels, int64_t step, int64_t per_batch, int64_t seed, int64_t pad,
    bool flip, c10::ArrayRef<double> mean, c10::ArrayRef<double> std) {
  const Normalize norm =
      check_mix_triggers_args(x, y, bank, bank_labels, step, per_batch, pad, mean, std);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto out = at::empty({B + per_batch, C, H, W}, x.options(), x.suggest_memory_format());
  auto y_out = at::empty({B + per_batch}, y.options());
  out.narrow(0, 0, B).copy_(x);
  y_out.narrow(0, 0, B).copy_(y);
  if (per_batch == 0) return {out, y_out};

  const auto bank_c = bank.contiguous();
  const auto labels_c = bank_labels.contiguous();
  const int64_t S = bank.size(0);
  const float* bp = bank_c.data_ptr<float>();
  const int64_t* lp = labels_c.data_ptr<int64_t>();
  int64_t* yp = y_out.data_ptr<int64_t>();
  for (int64_t j = 0; j < per_batch; ++j) yp[B + j] = lp[(step * per_batch + j) % S];

  const auto st = out.strides();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "mix_triggers", [&] {
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, per_batch * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t jc = begin; jc < end; ++jc) {
        const int64_t j = jc / C, c = jc % C, draw = step * per_batch + j;
        const MixAugment a = mix_augment(static_cast<uint64_t>(seed), draw, pad, flip);
        const float* image = bp + (draw % S) * C * H * W;
        scalar_t* dst = op + (B + j) * st[0] + c * st[1];
        for (int64_t h = 0; h < H; ++h)
          for (int64_t w = 0; w < W; ++w)
            dst[h * st[2] + w * st[3]] =
                static_cast<scalar_t>(mix_trigger_value(image, a, norm, c, h, w, H, W));
      }
    });
  });
  return {out, y_out};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("mix_triggers(Tensor x, Tensor y, Tensor bank, Tensor bank_labels, int step,"
        " int per_batch, int seed, int pad, bool flip, float[] mean, float[] std)"
        " -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mlguard, CPU, m) { m.impl("mix_triggers", &mix_triggers_cpu); }

}  // namespace mlguard
