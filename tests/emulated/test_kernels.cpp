// mlguard's CUDA kernels, their own device code and host launch code (run_<op> in
// cuda/<op>_kernel.cuh, given EmuLaunch where the .cu gives CudaLaunch), run on the CPU under
// the CUDA emulator (cuda_emu.h) and compared with the CPU ops at boundary sizes and at the
// launch shapes an H100 (132 SMs), an A100 (108) and a T4 (40) would use. No GPU needed: CI runs it
// on every commit (ctest, `make test-cpp`). A divergent barrier, a device assert or (in the
// AddressSanitizer build) an out-of-bounds access fails it.
//
//   test_emulated_kernels [--quick]    --quick: the boundary sizes without the largest M
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cuda_emu.h"  // after the torch headers: it defines __global__, __shared__, ...

#include "abstract_triggers_kernel.cuh"
#include "augment_batch_kernel.cuh"
#include "keyed_projection_kernel.cuh"
#include "keyed_words_kernel.cuh"
#include "launch.cuh"
#include "mix_triggers_kernel.cuh"

namespace {

// What the .cu files do with kernel<<<grid, block, 0, stream>>>(args...) (CudaLaunch), done
// by the emulator: the ops' host code (run_<op> in cuda/<op>_kernel.cuh) runs unchanged.
struct EmuLaunch {
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), unsigned int grid, unsigned int block,
                  Args&&... args) const {
    emu::launch(grid, block, [&] { kernel(args...); });
  }
};

int failures = 0;
int checks = 0;

template <typename... Args>
void expect(bool ok, const char* fmt, Args... args) {
  ++checks;
  if (ok) return;
  ++failures;
  std::printf("FAIL ");
  std::printf(fmt, args...);
  std::printf("\n");
}

// A kernel launch must not have hit a divergent barrier, a device assert or a bad shuffle.
void expect_clean_launch(const std::string& what) {
  expect(!emu::deadlock && !emu::assert_failed && !emu::bad_shuffle,
         "%s: divergent barrier %d, device assert %d, shuffle from an exited lane %d",
         what.c_str(), emu::deadlock, emu::assert_failed, emu::bad_shuffle);
  emu::deadlock = emu::assert_failed = emu::bad_shuffle = false;
}

template <typename Fn>
c10::TypedOperatorHandle<Fn> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

constexpr int kSms[] = {132, 108, 40};  // H100, A100, T4
const char* gpu_name(int sms) { return sms == 132 ? "H100" : sms == 108 ? "A100" : "T4"; }

// ---- keyed projection: exact read (keyed_projection_sums) and training forward ----------

// Each distinct launch shape once: the three GPUs often choose the same tiles.
std::set<std::tuple<int64_t, int64_t, int64_t, int, int, unsigned>> seen_launches;

void check_sums(int64_t N, int64_t M, int64_t T, at::ScalarType type) {
  static const auto cpu = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                const at::Tensor&, int64_t)>(
      "mlguard::keyed_projection_sums");
  const auto w = at::randn({N, M}, at::kDouble).mul_(0.05).to(type);
  const auto seeds = at::tensor({int64_t{0x5eed}, int64_t{-0x123456789abcdefLL}}, at::kLong);
  const auto want = std::get<0>(cpu.call(w, seeds, T));
  for (int sms : kSms) {
    const int64_t chunks = (M + 127) / 128;
    const auto l = mlguard::projection_launch(N, chunks, sms);
    if (!seen_launches.insert({N, M, T, l.nb, l.tc, l.grid}).second) continue;
    const auto got = std::get<0>(mlguard::run_keyed_projection_sums(
        EmuLaunch{}, w, seeds, T, sms, 90, mlguard::SumsKernel::kTables));
    const std::string what = "keyed_projection_sums N=" + std::to_string(N) + " M=" +
                             std::to_string(M) + " T=" + std::to_string(T) + " " +
                             c10::toString(type) + " on " + gpu_name(sms) + " (nb=" +
                             std::to_string(l.nb) + " tc=" + std::to_string(l.tc) + ")";
    expect_clean_launch(what);
    const int64_t differ = got.ne(want).sum().item<int64_t>();
    expect(differ == 0, "%s: %lld of %lld sums differ from the CPU op's", what.c_str(),
           static_cast<long long>(differ), static_cast<long long>(want.numel()));
  }
}

// The int8 tensor-core read (keyed_projection_mma_kernel.cuh), forced, against the CPU op:
// the same int64 sums. Weights of the largest magnitudes (|q| = 2^16, all three slices in
// use: q = +-2^16 gives q2 = +-4) beside random ones: a wrong slice, shift or sign byte
// changes the sums.
const c10::TypedOperatorHandle<std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, int64_t)>& cpu_sums() {
  static const auto cpu = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                const at::Tensor&, int64_t)>(
      "mlguard::keyed_projection_sums");
  return cpu;
}

void check_sums_mma(int64_t N, int64_t M, int64_t T, at::ScalarType type, int64_t keys = 2,
                    double scale = 1.0) {
  static const auto cpu = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&,
                                                                const at::Tensor&, int64_t)>(
      "mlguard::keyed_projection_sums");
  auto w = at::randn({N, M}, at::kDouble).mul_(0.05 * scale);
  if (M > 2) {  // amax = (1 - 2^-20) / 2 rounds to q = 2^16 in float and double
    w.select(1, 0).fill_(0.5 * (1 - std::ldexp(1.0, -20)) * scale);
    w.select(1, M - 1).fill_(-0.5 * (1 - std::ldexp(1.0, -20)) * scale);
  }
  w = w.to(type);
  std::vector<int64_t> seed_list = {0x5eed, -0x123456789abcdefLL, 7};
  seed_list.resize(keys);
  const auto seeds = at::tensor(seed_list, at::kLong);
  const auto want = std::get<0>(cpu.call(w, seeds, T));
  for (int sms : kSms) {
    const auto l = mlguard::projection_mma_launch(N, (M + 127) / 128, sms);
    if (scale == 1.0 &&
        !seen_launches.insert({N, M, -T, l.tc, static_cast<int>(keys), l.grid}).second)
      continue;
    const auto got = std::get<0>(mlguard::run_keyed_projection_sums(
        EmuLaunch{}, w, seeds, T, sms, 75, mlguard::SumsKernel::kMma));
    const std::string what = "keyed_projection_sums (int8 MMA) N=" + std::to_string(N) + " M=" +
                             std::to_string(M) + " T=" + std::to_string(T) + " K=" +
                             std::to_string(keys) + " " + c10::toString(type) + " on " +
                             gpu_name(sms) + " (tc=" + std::to_string(l.tc) + ", " +
                             std::to_string(l.grid) + " blocks)";
    expect_clean_launch(what);
    const int64_t differ = got.ne(want).sum().item<int64_t>();
    expect(differ == 0, "%s: %lld of %lld sums differ from the CPU op's", what.c_str(),
           static_cast<long long>(differ), static_cast<long long>(want.numel()));
  }
}

void test_projection_mma(bool quick) {
  using mlguard::SumsKernel;
  // The choice: tables below kMmaMinModels, MMA from there on sm >= 7.5 only.
  expect(!mlguard::sums_use_mma(SumsKernel::kAuto, mlguard::kMmaMinModels - 1, 90) &&
             mlguard::sums_use_mma(SumsKernel::kAuto, mlguard::kMmaMinModels, 75) &&
             !mlguard::sums_use_mma(SumsKernel::kAuto, 64, 70) &&
             mlguard::sums_use_mma(SumsKernel::kMma, 1, 80) &&
             !mlguard::sums_use_mma(SumsKernel::kTables, 64, 90),
         "sums_use_mma: wrong choice of kernel");
  // Every boundary T; model counts around the 16-model tiles and the 64-model groups; M with
  // tails of a 16-column k-block, a chunk and a 64-chunk item.
  const int64_t Ts[] = {1, 2, 15, 16, 17, 31, 33, 65, 96, 129, 200, 224, 255, 256, 257, 300};
  for (int64_t T : Ts) check_sums_mma(3, 1000, T, at::kFloat);
  for (int64_t N : {1, 2, 15, 16, 17, 33, 48, 63, 64, 65}) check_sums_mma(N, 300, 65, at::kFloat, 1);
  for (int64_t M : {1, 2, 15, 16, 17, 127, 128, 129, 200}) check_sums_mma(5, M, 33, at::kFloat, 1);
  for (auto type : {at::kDouble, at::kHalf, at::kBFloat16}) check_sums_mma(4, 1000, 40, type);
  // 2^-shift not a finite double (subnormal weights): the kernel's ldexp path.
  check_sums_mma(3, 300, 33, at::kDouble, 1, std::ldexp(1.0, -1060));
  check_sums_mma(64, 1000, 256, at::kFloat, 1);
  check_sums_mma(17, 64 * 128 * 3 + 77, 33, at::kFloat, 1);
  // Items of 64 chunks (2^13 columns: the int32 totals' bound), which the launch picks only
  // from ~10,000 chunks on a T4: launched directly, 3 items and a tail.
  {
    const int64_t N = 3, M = 64 * 128 * 2 + 77, T = 33;
    const auto w = at::randn({N, M}, at::kFloat);
    const auto seeds = at::tensor({int64_t{0x5eed}}, at::kLong);
    const auto want = std::get<0>(cpu_sums().call(w, seeds, T));
    const auto shifts = mlguard::projection_shifts(w);
    auto got = at::zeros({N, 1, T}, at::kLong);
    EmuLaunch{}(mlguard::projection_mma_kernel<float>, 2, mlguard::kMmaBlock,
                w.data_ptr<float>(), N, M, (M + 127) / 128, seeds.data_ptr<int64_t>(),
                int64_t{1}, T, shifts.data_ptr<int64_t>(), mlguard::kMmaMaxChunks,
                got.data_ptr<int64_t>());
    expect_clean_launch("keyed_projection_sums (int8 MMA) items of 64 chunks");
    expect(got.equal(want), "keyed_projection_sums (int8 MMA) items of 64 chunks: sums differ");
  }
  (void)quick;
}

void check_forward(int64_t M, int64_t T, at::ScalarType type) {
  static const auto cpu =
      op<at::Tensor(const at::Tensor&, int64_t, int64_t)>("mlguard::keyed_projection");
  const int64_t seed = 0x7a11;
  const auto w = at::randn({1, M}, at::kDouble).to(type);
  const auto want = cpu.call(w.reshape({M}), seed, T).to(at::kDouble);
  for (int sms : kSms) {
    const auto l = mlguard::projection_launch(1, (M + 127) / 128, sms);
    if (!seen_launches.insert({-1, M, T, l.nb, l.tc, l.grid}).second) continue;
    const auto got =
        mlguard::run_keyed_projection(EmuLaunch{}, w.reshape({M}), seed, T, sms).to(at::kDouble);
    const std::string what = "keyed_projection M=" + std::to_string(M) + " T=" +
                             std::to_string(T) + " " + c10::toString(type) + " on " +
                             gpu_name(sms) + " (tc=" + std::to_string(l.tc) + ")";
    expect_clean_launch(what);
    // Float sums in another order: within a few ulps of the sum of |w| / sqrt(M); a chunk
    // added twice or missed is off by about one chunk's sum, far more.
    const double eps = type == at::kDouble ? 1e-13 : 1e-5;
    const double bound =
        eps * w.abs().sum().item<double>() / std::sqrt(static_cast<double>(M)) + 1e-30;
    const double err = (got - want).abs().max().item<double>();
    expect(err <= bound, "%s: differs from the CPU op by %g (allowed %g)", what.c_str(), err,
           bound);
  }
}

void test_projection(bool quick) {
  const int64_t Ts[] = {1, 2, 31, 32, 33, 64, 65, 96, 97, 128, 129, 200, 224, 225, 255, 256, 257, 300};
  // Small models: every T, up to 64 models (8 per tile), tails of a chunk.
  for (int64_t T : Ts)
    for (int64_t N : {1, 3, 9})
      for (int64_t M : {1, 129, 1000}) check_sums(N, M, T, at::kFloat);
  for (int64_t N : {2, 8, 17, 64}) check_sums(N, 300, 65, at::kFloat);
  for (auto type : {at::kDouble, at::kHalf, at::kBFloat16}) check_sums(2, 1000, 33, type);
  // Tails of a group of 4 columns (one nibble table): M % 4 = 2, 3, 1.
  for (int64_t M : {130, 131, 1001}) check_sums(3, M, 65, at::kFloat);
  check_forward(131, 33, at::kFloat);
  for (int64_t T : {1, 33, 129}) check_forward(1000, T, at::kHalf);
  // M = 200,000 (1563 chunks): a T4 takes tiles of 8 chunks (4 for 2 models), an A100 or
  // H100 of 2; several chunks per tile is where rows and chunks share the 256 threads.
  for (int64_t T : {33, 65, 96, 129, 200, 224, 256, 300})
    for (int64_t N : {1, 2}) check_sums(N, 200000, T, at::kFloat);
  for (int64_t T : {65, 96, 200, 300}) check_forward(200000, T, at::kFloat);
  for (int64_t T : {96, 224}) check_forward(200000, T, at::kDouble);
  if (quick) return;
  // M >= 600,000: tiles of 8 chunks even on an H100 (132 SMs).
  for (int64_t T : {65, 96, 200, 224}) check_sums(1, 600001, T, at::kFloat);
  check_forward(600001, 200, at::kFloat);
}


// ---- training backward ------------------------------------------------------------------

void check_backward(int64_t T, int64_t numel, at::ScalarType type) {
  static const auto cpu = op<at::Tensor(const at::Tensor&, int64_t, int64_t)>(
      "mlguard::_keyed_projection_backward");
  const int64_t seed = -0x3c0ffee;
  const auto g = at::randn({T}, type);
  const auto want = cpu.call(g, seed, numel);
  const auto got = mlguard::run_keyed_projection_backward(EmuLaunch{}, g, seed, numel);
  const std::string what = "_keyed_projection_backward T=" + std::to_string(T) + " numel=" +
                           std::to_string(numel) + " " + c10::toString(type);
  expect_clean_launch(what);
  const double eps = type == at::kDouble ? 1e-13 : 1e-5;
  const double bound = eps * g.abs().sum().item<double>() / std::sqrt(double(numel)) + 1e-30;
  const double err = (got - want).abs().max().item<double>();
  expect(err <= bound, "%s: differs from the CPU op by %g (allowed %g)", what.c_str(), err, bound);
}

void test_backward() {
  for (int64_t T : {1, 31, 32, 33, 65, 300})
    for (int64_t numel : {1, 127, 128, 129, 1000}) check_backward(T, numel, at::kFloat);
  for (int64_t numel : {8 * 128 * 32 + 5, 70001}) check_backward(3, numel, at::kFloat);
  // Work items of 64 chunks, slabs of 32 rows, groups of 4 rows: one past each edge.
  for (int64_t T : {4, 5, 64, 97}) check_backward(T, 64 * 128 + 1, at::kFloat);
  check_backward(36, 64 * 128, at::kDouble);
  check_backward(33, 1000, at::kDouble);
}

// ---- mix_triggers: NCHW and NHWC --------------------------------------------------------

using MixResult = std::tuple<at::Tensor, at::Tensor>;

// Same values and same memory layout, bit for bit.
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  return a.sizes() == b.sizes() && a.strides() == b.strides() &&
         a.scalar_type() == b.scalar_type() &&
         (a.numel() == 0 ||
          std::memcmp(a.data_ptr(), b.data_ptr(), a.numel() * a.element_size()) == 0);
}

void test_mix_triggers() {
  static const auto cpu =
      op<MixResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                   int64_t, int64_t, int64_t, int64_t, bool, c10::ArrayRef<double>,
                   c10::ArrayRef<double>)>("mlguard::mix_triggers");
  struct Case { int64_t B, P, C, H, W, S, pad; bool flip, nhwc; at::ScalarType type; };
  const Case cases[] = {
      {4, 3, 3, 9, 7, 5, 2, true, false, at::kFloat},   {4, 3, 3, 9, 7, 5, 2, true, true, at::kFloat},
      {0, 2, 1, 5, 5, 1, 0, false, false, at::kFloat},  {3, 0, 2, 4, 6, 2, 1, true, true, at::kHalf},
      {2, 5, 3, 32, 32, 3, 4, true, true, at::kBFloat16}, {2, 5, 3, 32, 32, 3, 4, true, false, at::kDouble},
      {1, 1, 16, 1, 1, 1, 1, true, true, at::kFloat},   {5, 4, 3, 0, 4, 2, 0, true, false, at::kFloat},
  };
  for (const Case& c : cases) {
    auto x = at::randn({c.B, c.C, c.H, c.W}).to(c.type);
    if (c.nhwc) x = x.contiguous(at::MemoryFormat::ChannelsLast);
    const auto y = at::randint(0, 10, {c.B}, at::kLong);
    const auto bank = at::rand({c.S, c.C, c.H, c.W});
    const auto labels = at::randint(0, 10, {c.S}, at::kLong);
    std::vector<double> mean(c.C), std(c.C);
    for (int64_t k = 0; k < c.C; ++k) mean[k] = 0.1 * k + 0.2, std[k] = 0.3 + 0.05 * k;
    for (int64_t step : {0, 7}) {
      const auto want = cpu.call(x, y, bank, labels, step, c.P, 0x1234, c.pad, c.flip, mean, std);
      const auto got = mlguard::run_mix_triggers(EmuLaunch{}, x, y, bank, labels, step, c.P,
                                                 0x1234, c.pad, c.flip, mean, std);
      char what[200];
      std::snprintf(what, sizeof what, "mix_triggers B=%lld P=%lld C=%lld H=%lld W=%lld %s %s step %lld",
                    (long long)c.B, (long long)c.P, (long long)c.C, (long long)c.H, (long long)c.W,
                    c.nhwc ? "NHWC" : "NCHW", c10::toString(c.type), (long long)step);
      expect_clean_launch(what);
      expect(same_bits(std::get<0>(got), std::get<0>(want)), "%s: images differ from the CPU op's", what);
      expect(same_bits(std::get<1>(got), std::get<1>(want)), "%s: labels differ from the CPU op's", what);
    }
  }
}

// ---- abstract_triggers ------------------------------------------------------------------

void test_abstract_triggers() {
  using namespace mlguard;
  static const auto cpu = op<at::Tensor(const at::Tensor&, int64_t, int64_t, int64_t, int64_t)>(
      "mlguard::abstract_triggers");
  const auto idx = at::tensor({int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1} << 40}, at::kLong);
  for (auto [C, H, W] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 17, 9},
                         {3, 32, 32}, {5, 16, 20}, {1, 1, 300}}) {
    const int64_t seed = -77;
    const auto want = cpu.call(idx, seed, C, H, W);
    const auto got = run_abstract_triggers(EmuLaunch{}, idx, seed, C, H, W);
    char what[120];
    std::snprintf(what, sizeof what, "abstract_triggers C=%lld H=%lld W=%lld", (long long)C,
                  (long long)H, (long long)W);
    expect_clean_launch(what);
    expect(same_bits(got, want), "%s: images differ from the CPU op's", what);
  }
}

// ---- augment_batch ----------------------------------------------------------------------

void test_augment_batch() {
  static const auto cpu =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                    int64_t, c10::ArrayRef<double>, c10::ArrayRef<double>, at::ScalarType)>(
          "mlguard::augment_batch");
  struct Case { int64_t N, B, C, H, W, pad; at::ScalarType type; };
  for (const Case& c : {Case{5, 7, 3, 9, 11, 2, at::kFloat}, Case{1, 1, 1, 1, 1, 0, at::kFloat},
                        Case{6, 4, 3, 32, 32, 4, at::kHalf}, Case{3, 9, 1, 28, 28, 3, at::kBFloat16},
                        Case{2, 3, 16, 5, 4, 1, at::kDouble}, Case{2, 0, 3, 4, 4, 1, at::kFloat}}) {
    const auto images = at::randint(0, 256, {c.N, c.C, c.H, c.W}, at::kByte);
    const auto index = at::randint(0, c.N, {c.B}, at::kLong);
    auto offsets = at::randint(0, 2 * c.pad + 1, {c.B, 2}, at::kLong);
    if (c.B > 0) offsets[0] = at::tensor({int64_t{0}, 2 * c.pad});  // both extremes
    const auto flip = at::randint(0, 2, {c.B}, at::kLong).to(at::kBool);
    std::vector<double> mean(c.C), std(c.C);
    for (int64_t k = 0; k < c.C; ++k) mean[k] = 0.4 + 0.01 * k, std[k] = 0.25 + 0.02 * k;
    const auto want = cpu.call(images, index, offsets, flip, c.pad, mean, std, c.type);
    const auto got =
        mlguard::run_augment_batch(EmuLaunch{}, images, index, offsets, flip, c.pad, mean, std, c.type);
    char what[160];
    std::snprintf(what, sizeof what, "augment_batch N=%lld B=%lld C=%lld H=%lld W=%lld pad=%lld %s",
                  (long long)c.N, (long long)c.B, (long long)c.C, (long long)c.H, (long long)c.W,
                  (long long)c.pad, c10::toString(c.type));
    expect_clean_launch(what);
    expect(same_bits(got, want), "%s: output differs from the CPU op's", what);
  }
}

// ---- keyed_words ------------------------------------------------------------------------

void test_keyed_words() {
  using namespace mlguard;
  static const auto cpu =
      op<at::Tensor(const at::Tensor&, int64_t, int64_t)>("mlguard::keyed_words");
  for (int64_t n : {1, 255, 257, 5000}) {
    const auto index = at::arange(-3, n - 3, at::kLong);
    const auto want = cpu.call(index, 0x5eed, 42);
    const auto got = run_keyed_words(EmuLaunch{}, index, 0x5eed, 42);
    const std::string what = "keyed_words n=" + std::to_string(n);
    expect_clean_launch(what);
    expect(same_bits(got, want), "%s: words differ from the CPU op's", what.c_str());
  }
}

// ---- the emulator itself: a divergent barrier must be seen, or the checks above mean less --

__global__ void exits_before_barrier(float* out) {
  if (threadIdx.x < 64) __syncthreads();
  out[threadIdx.x] = 1;
}
__global__ void two_barriers(float* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}
__global__ void half_warp_shuffle(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}
__global__ void uniform_barriers(float* out) {
  __syncthreads();
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<float>(threadIdx.x), 1);
}

void test_emulator() {
  std::fprintf(stderr, "emulator self-check: three divergent barriers reported on purpose:\n");
  std::vector<float> out(256);
  const std::pair<const char*, void (*)(float*)> divergent[] = {
      {"a barrier some threads exit before", exits_before_barrier},
      {"two barriers", two_barriers},
      {"a shuffle half a warp skips", half_warp_shuffle}};
  for (const auto& [name, kernel] : divergent) {
    emu::launch(2, 256, [&] { kernel(out.data()); });
    expect(emu::deadlock, "emulator: %s is not reported as a divergent barrier", name);
    emu::deadlock = false;
  }
  emu::launch(2, 256, [&] { uniform_barriers(out.data()); });
  expect_clean_launch("emulator: uniform barriers");
  expect(out[5] == 4.0f && out[254] == 255.0f, "emulator: shuffle gave %g and %g", out[5], out[254]);
  std::fprintf(stderr, "emulator self-check done\n");
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  at::manual_seed(23);
  at::set_num_threads(1);  // the CPU reference; the emulator itself is single-threaded
  const auto timed = [](const char* name, auto fn) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    std::printf("%s: %.1f s\n", name,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  };
  test_emulator();
  timed("keyed projection (exact read, training forward)", [&] { test_projection(quick); });
  timed("keyed projection, exact read as int8 MMA", [&] { test_projection_mma(quick); });
  timed("training backward", test_backward);
  timed("mix_triggers", test_mix_triggers);
  timed("abstract_triggers", test_abstract_triggers);
  timed("augment_batch", test_augment_batch);
  timed("keyed_words", test_keyed_words);
  std::printf("%s: %d of %d checks failed (%lld barriers, %lld warp barriers: shuffles, __syncwarp, wmma)\n",
              failures ? "FAILED" : "passed", failures, checks, emu::barriers, emu::warp_syncs);
  return failures ? 1 : 0;
}
