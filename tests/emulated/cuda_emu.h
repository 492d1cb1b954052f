// Runs CUDA kernel bodies on the host, so that CI checks kernels no GPU here can run
// (tests/emulated/test_kernels.cpp). Every CUDA thread of a block is a ucontext fiber;
// blocks run one after another; threads of a block interleave at barriers:
//  - __syncthreads() is a block barrier, __shfl_sync / __shfl_xor_sync (full mask only) a warp
//    barrier with a value exchange. A divergent barrier sets emu::deadlock (the test fails on
//    it): a __syncthreads that not every thread of the block reaches (some wait elsewhere,
//    some exited), or a shuffle that not every live lane of the warp reaches.
//  - __shared__ becomes static (one block at a time); CUDA_KERNEL_ASSERT sets
//    emu::assert_failed instead of trapping; a shuffle from an exited lane sets emu::bad_shuffle.
//  - atomicAdd runs sequentially: exact for integers, order-dependent for floats (as on a GPU).
// On x86-64 a fiber switch is a few instructions (glibc's swapcontext makes a system call per
// switch, which made the emulator ~10x slower); elsewhere ucontext.
// Built with -fsanitize=address, fiber switches are announced to ASan, so out-of-bounds
// accesses to global (heap) and shared (static) arrays are reported.
//  - __syncwarp() (full mask) and the warp-wide nvcuda::wmma calls are warp barriers too: a
//    wmma call that not every live lane of the warp reaches is a divergent barrier. wmma leaves
//    the fragment-to-lane layout unspecified; here every lane keeps the whole tile (x[r * cols
//    + c]), so element-wise loops over x[0 .. num_elements) see every element once per lane.
//    load/store check the API's rules (pointer 32-byte aligned, ldm a multiple of 16 bytes,
//    the same pointer and ldm in every lane) and set emu::assert_failed when broken.
// Not emulated: partial-mask shuffles, __ballot_sync, cooperative groups, 2-D/3-D grids,
// streams, timing. From the review tool in ../shared/tools/cuda-emulator, extended.
#pragma once
#include <ucontext.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

struct uint3_ { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline uint3_ threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
#undef CUDA_KERNEL_ASSERT  // c10's host version aborts; the emulator records instead
#define CUDA_KERNEL_ASSERT(c)                                                                  \
  do {                                                                                        \
    if (!(c)) {                                                                               \
      std::fprintf(stderr, "device assert failed: %s (block %u thread %u)\n", #c, blockIdx.x, \
                   threadIdx.x);                                                              \
      emu::assert_failed = true;                                                              \
    }                                                                                         \
  } while (0)

namespace emu {
inline bool assert_failed = false;
inline bool deadlock = false;
inline bool bad_shuffle = false;  // read from a lane that has exited or does not exist
inline long long barriers = 0, warp_syncs = 0;

enum State { RUN, WAIT_BLOCK, WAIT_WARP, DONE };
struct Fiber {
#if defined(__x86_64__)
  void* sp;  // saved stack pointer; callee-saved registers are on the fiber's stack
#else
  ucontext_t ctx;
#endif
  State st;
  std::vector<char> stack;
  uint64_t xchg;
  int site;  // the source line of the barrier it waits at
  void* fake_stack;  // ASan's bookkeeping while switched out
};
inline std::vector<Fiber> fibers;
#if defined(__x86_64__)
// mlguard_emu_switch(save, to): pushes the System V callee-saved registers, stores the stack
// pointer in *save, switches to stack `to` and pops that fiber's registers. (This header is
// included by one translation unit: the symbol is defined once.)
extern "C" void mlguard_emu_switch(void** save, void* to);
__asm__(
    ".text\n.globl mlguard_emu_switch\n.type mlguard_emu_switch,@function\n"
    "mlguard_emu_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
    "  ret\n.size mlguard_emu_switch, .-mlguard_emu_switch\n");
inline void* sched_sp = nullptr;
#else
inline ucontext_t sched_ctx;
#endif
inline int cur = -1;
inline std::function<void()>* body = nullptr;
inline const void* sched_bottom = nullptr;  // the scheduler's stack, for ASan
inline size_t sched_size = 0;
constexpr size_t kStack = EMU_ASAN ? (1 << 18) : (1 << 16);

// Fiber -> scheduler (dying: the fiber never resumes).
inline void to_scheduler(bool dying) {
#if EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &fibers[cur].fake_stack, sched_bottom,
                                 sched_size);
#endif
  const int me = cur;
#if defined(__x86_64__)
  mlguard_emu_switch(&fibers[me].sp, sched_sp);
#else
  swapcontext(&fibers[me].ctx, &sched_ctx);
#endif
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(fibers[me].fake_stack, &sched_bottom, &sched_size);
#endif
  (void)dying;
}
inline void trampoline() {
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &sched_bottom, &sched_size);
#endif
  (*body)();
  fibers[cur].st = DONE;
  to_scheduler(true);
}
inline void yield_as(State s) {
  fibers[cur].st = s;
  to_scheduler(false);
}
// Scheduler -> fiber t.
inline void resume(int t) {
  cur = t;
  threadIdx = {unsigned(t), 0, 0};
#if EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, fibers[t].stack.data(), fibers[t].stack.size());
#endif
#if defined(__x86_64__)
  mlguard_emu_switch(&sched_sp, fibers[t].sp);
#else
  swapcontext(&sched_ctx, &fibers[t].ctx);
#endif
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Runs one block to completion.
inline void run_block(int nthreads, std::function<void()> fn) {
  body = &fn;
  fibers.resize(nthreads);
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = fibers[t];
    if (f.stack.size() < kStack) f.stack.resize(kStack);
#if defined(__x86_64__)
    // The first switch "returns" into trampoline with the stack aligned as after a call.
    const auto top = reinterpret_cast<uintptr_t>(f.stack.data() + f.stack.size()) & ~uintptr_t{15};
    void** frame = reinterpret_cast<void**>(top - 16);
    frame[0] = reinterpret_cast<void*>(&trampoline);
    frame[1] = nullptr;  // trampoline never returns
    for (int i = 1; i <= 6; ++i) frame[-i] = nullptr;  // the callee-saved registers
    f.sp = frame - 6;
#else
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack.data();
    f.ctx.uc_stack.ss_size = f.stack.size();
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, trampoline, 0);
#endif
    f.st = RUN;
    f.fake_stack = nullptr;
  }
  for (;;) {
    bool ran = false;
    for (int t = 0; t < nthreads; ++t) {
      if (fibers[t].st != RUN) continue;
      resume(t);
      ran = true;
    }
    if (ran) continue;
    // Nobody runnable: release warp barriers that all live lanes of the warp reached.
    bool released = false;
    for (int w = 0; w * 32 < nthreads; ++w) {
      int live = 0, waiting = 0;
      for (int l = w * 32; l < std::min(nthreads, w * 32 + 32); ++l) {
        live += fibers[l].st != DONE;
        waiting += fibers[l].st == WAIT_WARP;
      }
      if (waiting > 0 && waiting == live) {
        if (live < std::min(nthreads, w * 32 + 32) - w * 32) {
          std::fprintf(stderr, "divergent barrier in block %u: a full-mask shuffle in warp %d "
                       "after some of its lanes exited\n", blockIdx.x, w);
          deadlock = true;
        }
        for (int l = w * 32; l < std::min(nthreads, w * 32 + 32); ++l)
          if (fibers[l].st == WAIT_WARP) fibers[l].st = RUN;
        released = true;
      }
    }
    if (released) continue;
    int live = 0, waiting = 0;
    for (auto& f : fibers) {
      live += f.st != DONE;
      waiting += f.st == WAIT_BLOCK;
    }
    if (live == 0) break;
    if (waiting == live) {
      // Strict: all threads of the block at the same __syncthreads, none exited before it.
      bool same = true;
      for (auto& f : fibers) same = same && f.st == WAIT_BLOCK && f.site == fibers[0].site;
      if (!same) {
        std::fprintf(stderr, "divergent barrier in block %u: threads wait at different "
                     "__syncthreads or some exited before it (line %d)\n", blockIdx.x,
                     fibers[0].site);
        deadlock = true;
      }
      for (auto& f : fibers)
        if (f.st == WAIT_BLOCK) f.st = RUN;
      continue;
    }
    if (waiting > 0) {
      std::fprintf(stderr, "divergent barrier in block %u: %d of %d live threads at __syncthreads\n",
                   blockIdx.x, waiting, live);
    } else {
      std::fprintf(stderr, "divergent barrier in block %u: a warp shuffle with missing lanes\n",
                   blockIdx.x);
    }
    deadlock = true;
    // Let the waiting threads go on (as hardware counting exited warps would), to finish.
    for (auto& f : fibers)
      if (f.st == WAIT_BLOCK || f.st == WAIT_WARP) f.st = RUN;
  }
}

// kernel<<<grid, block>>>(args) is emu::launch(grid, block, [&] { kernel(args); }): 1-D only.
template <typename F>
inline void launch(dim3 grid, dim3 block, F&& kernel_call) {
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1 || block.x > 1024 ||
      grid.x == 0 || block.x == 0) {
    std::fprintf(stderr, "emu::launch: invalid or multi-dimensional launch (%u x %u)\n", grid.x,
                 block.x);
    std::abort();
  }
  gridDim = grid;
  blockDim = block;
  for (unsigned b = 0; b < grid.x; ++b) {
    blockIdx = {b, 0, 0};
    run_block(static_cast<int>(block.x), [&] { kernel_call(); });
  }
}

// Shuffle: write, warp barrier, read the source lane's value, warp barrier (so no lane
// overwrites its value before every lane has read it).
template <typename T>
inline T shuffle(T v, int src_lane) {
  static_assert(sizeof(T) <= 8);
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  fibers[cur].xchg = bits;
  warp_syncs++;
  yield_as(WAIT_WARP);
  const size_t src = static_cast<size_t>(cur / 32 * 32 + src_lane);
  if (src >= fibers.size() || fibers[src].st == DONE) bad_shuffle = true;
  const uint64_t got = src < fibers.size() ? fibers[src].xchg : 0;
  yield_as(WAIT_WARP);
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}
// A warp barrier without a value: every live lane of the warp must reach it.
inline void warp_barrier() {
  warp_syncs++;
  yield_as(WAIT_WARP);
}
inline void full_mask_only(unsigned mask) {
  if (mask != 0xffffffffu) {
    std::fprintf(stderr, "emu: partial-mask shuffles are not emulated\n");
    std::abort();
  }
}
}  // namespace emu

inline void __syncthreads(int line = __builtin_LINE()) {
  emu::barriers++;
  emu::fibers[emu::cur].site = line;
  emu::yield_as(emu::WAIT_BLOCK);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::full_mask_only(mask);
  emu::warp_barrier();
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int o) {
  emu::full_mask_only(mask);
  return emu::shuffle(v, (emu::cur % 32) ^ (o & 31));
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src) {
  emu::full_mask_only(mask);
  return emu::shuffle(v, src & 31);
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  const auto o = *p;
  *p += v;
  return o;
}
inline float atomicAdd(float* p, float v) {
  const auto o = *p;
  *p += v;
  return o;
}
inline double atomicAdd(double* p, double v) {
  const auto o = *p;
  *p += v;
  return o;
}

// nvcuda::wmma on the host: the signatures of CUDA's <mma.h> for the shapes and types mlguard
// uses (any m, n, k; element types as given), each lane holding the whole tile.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int m, int n, int k, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? k : m;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? k : n;
  static constexpr int num_elements = rows * cols;
  using element_type = T;
  T x[num_elements];
};

namespace detail {
// The API's rules: mptr 256-bit aligned, ldm a multiple of 16 bytes.
template <typename T>
inline void check_tile(const T* p, unsigned ldm) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * sizeof(T)) % 16 != 0) {
    std::fprintf(stderr, "wmma: pointer %p not 32-byte aligned or ldm %u not a multiple of 16 "
                 "bytes (block %u thread %u)\n", static_cast<const void*>(p), ldm, blockIdx.x,
                 threadIdx.x);
    emu::assert_failed = true;
  }
}
// The warp's lanes must pass the same pointer and ldm (the API's warp-wide arguments); this
// emulation keeps the whole tile in every lane and mma_sync uses one lane's tiles for all,
// so a lane with other arguments would otherwise go unseen.
template <typename T>
inline void uniform_args(const T* p, unsigned ldm) {
  const uint64_t mine = reinterpret_cast<uintptr_t>(p) ^ (uint64_t{ldm} << 48);
  emu::fibers[emu::cur].xchg = mine;
  emu::warp_barrier();
  int leader = emu::cur / 32 * 32;
  while (emu::fibers[leader].st == emu::DONE) ++leader;
  if (emu::fibers[leader].xchg != mine) {
    std::fprintf(stderr, "wmma: lanes of a warp pass different pointers or ldm (block %u "
                 "thread %u)\n", blockIdx.x, threadIdx.x);
    emu::assert_failed = true;
  }
}
template <typename F, typename T>
inline void load(F& f, const T* p, unsigned ldm, bool row_major) {
  check_tile(p, ldm);
  uniform_args(p, ldm);
  for (int r = 0; r < F::rows; ++r)
    for (int c = 0; c < F::cols; ++c)
      f.x[r * F::cols + c] = row_major ? p[r * ldm + c] : p[c * ldm + r];
  emu::warp_barrier();  // no lane stores over the tile before every lane has loaded it
}
}  // namespace detail

template <typename Use, int m, int n, int k, typename T, typename Layout, typename V>
inline void fill_fragment(fragment<Use, m, n, k, T, Layout>& f, V v) {
  for (auto& e : f.x) e = static_cast<T>(v);
}
template <typename Use, int m, int n, int k, typename T>
inline void load_matrix_sync(fragment<Use, m, n, k, T, row_major>& f, const T* p, unsigned ldm) {
  detail::load(f, p, ldm, true);
}
template <typename Use, int m, int n, int k, typename T>
inline void load_matrix_sync(fragment<Use, m, n, k, T, col_major>& f, const T* p, unsigned ldm) {
  detail::load(f, p, ldm, false);
}
template <int m, int n, int k, typename T>
inline void load_matrix_sync(fragment<accumulator, m, n, k, T>& f, const T* p, unsigned ldm,
                             layout_t layout) {
  detail::load(f, p, ldm, layout == mem_row_major);
}
template <int m, int n, int k, typename T>
inline void store_matrix_sync(T* p, const fragment<accumulator, m, n, k, T>& f, unsigned ldm,
                              layout_t layout) {
  detail::check_tile(p, ldm);
  detail::uniform_args(p, ldm);
  for (int r = 0; r < m; ++r)
    for (int c = 0; c < n; ++c)
      (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * n + c];
  emu::warp_barrier();
}
// d = a b + c. Integer accumulators: a sum outside the accumulator's type (which the hardware
// would wrap) sets emu::assert_failed: the kernels' overflow bounds are checked here too.
template <int m, int n, int k, typename TA, typename LA, typename TB, typename LB, typename TC>
inline void mma_sync(fragment<accumulator, m, n, k, TC>& d,
                     const fragment<matrix_a, m, n, k, TA, LA>& a,
                     const fragment<matrix_b, m, n, k, TB, LB>& b,
                     const fragment<accumulator, m, n, k, TC>& c) {
  // Every lane holds the same tiles (warp-uniform calls): the warp's lowest live lane
  // multiplies once for all, the others copy its result after a second barrier.
  static TC shared_d[32][m * n];  // per warp of the block
  TC* tmp = shared_d[emu::cur / 32];
  emu::warp_barrier();
  int leader = emu::cur / 32 * 32;
  while (emu::fibers[leader].st == emu::DONE) ++leader;
  if (emu::cur == leader) {
  using Wide = std::conditional_t<std::is_integral_v<TC>, long long, TC>;
  for (int r = 0; r < m; ++r)
    for (int col = 0; col < n; ++col) {
      Wide s = c.x[r * n + col];
      for (int i = 0; i < k; ++i)
        s += static_cast<Wide>(a.x[r * k + i]) * static_cast<Wide>(b.x[i * n + col]);
      if constexpr (std::is_integral_v<TC>) {
        if (s < std::numeric_limits<TC>::min() || s > std::numeric_limits<TC>::max()) {
          std::fprintf(stderr, "wmma: mma_sync overflows its accumulator (block %u thread %u)\n",
                       blockIdx.x, threadIdx.x);
          emu::assert_failed = true;
        }
      }
      tmp[r * n + col] = static_cast<TC>(s);
    }
  }
  emu::warp_barrier();
  std::memcpy(d.x, tmp, sizeof(TC) * m * n);
}
}  // namespace wmma
}  // namespace nvcuda
