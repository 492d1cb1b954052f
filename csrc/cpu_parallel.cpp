// mlguard::_cpu_parallel: how the CPU kernels' at::parallel_for runs, for build_info(). ATen's
// parallel_for is inline: it uses threads only where the caller is compiled with OpenMP
// (-fopenmp, setup.py and CMakeLists.txt), otherwise every mlguard CPU kernel runs on one core.
#include <torch/library.h>

#include <string>

TORCH_LIBRARY_FRAGMENT(mlguard, m) {
  m.def("_cpu_parallel() -> str", [] {
#if defined(_OPENMP)
    return std::string("openmp");
#else
    return std::string("none");
#endif
  });
}
