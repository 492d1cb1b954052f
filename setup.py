"""Builds mlguard and its extension mlguard._C.

The C++ ops are always built. The CUDA kernels (minutes of nvcc per GPU architecture) are
built only when asked for:
  FORCE_CUDA=1                  build them (needs nvcc and a CUDA build of torch; CI sets it
                                so the CUDA code compiles on every commit, GPU or not)
  FORCE_CUDA=0                  never build them
  FORCE_CUDA unset              build them when a GPU is visible (torch.cuda.is_available())
                                and nvcc and a CUDA build of torch are there
  TORCH_CUDA_ARCH_LIST          architectures (default "7.5;8.0;8.6;9.0;10.0;12.0+PTX")
  MAX_JOBS                      parallel compile jobs (ninja)
"""

import glob
import os
import shutil

import torch
from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# What torch 2.14's CUDA 13 wheel runs on, T4 (7.5) to Blackwell (12.0), PTX for newer GPUs;
# CMakeLists.txt uses the same list (tests/ops/test_cuda_build.py).
DEFAULT_ARCHS = "7.5;8.0;8.6;9.0;10.0;12.0+PTX"


def locate_cuda_home() -> None:
    """Points CUDA_HOME at a real toolkit when nvcc on PATH is only a wrapper script.

    torch guesses CUDA_HOME as the parent of the folder holding `nvcc`; for a wrapper in
    /usr/local/bin that gives /usr/local, which has no libcudart to link against.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or not shutil.which("nvcc"):
        return
    for home in [os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("nvcc")))),
                 "/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]:
        if any(glob.glob(os.path.join(home, lib, "libcudart.so*")) for lib in ("lib64", "lib")):
            os.environ["CUDA_HOME"] = home
            return


locate_cuda_home()
from torch.utils.cpp_extension import (  # noqa: E402  (reads CUDA_HOME at import)
    CUDA_HOME, BuildExtension, CppExtension, CUDAExtension)


def want_cuda() -> tuple[bool, str]:
    """Whether to build the CUDA kernels, and why (recorded for mlguard.build_info())."""
    forced = os.environ.get("FORCE_CUDA", "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False, "FORCE_CUDA=0"
    if forced:
        if forced not in ("1", "true", "yes", "on"):
            raise SystemExit(f"mlguard: FORCE_CUDA must be 1 or 0, got {forced!r}")
        if torch.version.cuda is None:
            raise SystemExit(f"mlguard: FORCE_CUDA=1 but torch {torch.__version__} is a CPU-only "
                             "build: install a CUDA build of torch, or unset FORCE_CUDA")
        if CUDA_HOME is None:
            raise SystemExit("mlguard: FORCE_CUDA=1 but no CUDA toolkit was found (no nvcc on "
                             "PATH, CUDA_HOME unset): install one or set CUDA_HOME")
        return True, "FORCE_CUDA=1"
    if not torch.cuda.is_available():
        return False, "no GPU was visible at build time and FORCE_CUDA was unset"
    if torch.version.cuda is None or CUDA_HOME is None:
        return False, ("a GPU was visible but " + ("torch is a CPU-only build"
                       if torch.version.cuda is None else "no CUDA toolkit (nvcc) was found"))
    return True, "a GPU was visible at build time"


def write_build_config(cuda: bool, archs: str | None, why: str) -> None:
    """Records what is being built, for mlguard.build_info() and the import-time check."""
    config = {"torch_version": torch.__version__,
              "cuda_version": torch.version.cuda if cuda else None,
              "cuda_archs": archs if cuda else None,
              "cuda_decided_by": why}
    with open(os.path.join(ROOT, "python", "mlguard", "_build_config.py"), "w") as f:
        f.write(f"# Written by setup.py at build time.\nBUILD_CONFIG = {config!r}\n")


def extension():
    sources = sorted(glob.glob("csrc/*.cpp"))
    # Kernels must agree bit for bit across devices: no fused multiply-add contraction.
    # OpenMP: ATen's at::parallel_for (inline) runs the CPU kernels on every core only when
    # the caller is compiled with it; torch's own libgomp.so.1 is the one loaded at run time.
    cxx = ["-O3", "-ffp-contract=off", "-fopenmp"]
    link = ["-fopenmp"]
    cuda, why = want_cuda()
    if not cuda:
        print(f"mlguard: building C++ ops only (torch {torch.__version__}; {why}; "
              "FORCE_CUDA=1 builds the CUDA kernels too)")
        write_build_config(cuda=False, archs=None, why=why)
        return CppExtension("mlguard._C", sources, include_dirs=[os.path.join(ROOT, "csrc")],
                            extra_compile_args={"cxx": cxx}, extra_link_args=link)
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    print(f"mlguard: building C++ ops and CUDA kernels (torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, nvcc at {CUDA_HOME}, archs {archs}; {why})")
    write_build_config(cuda=True, archs=archs, why=why)
    nvcc = ["-O3", "--fmad=false", "-lineinfo"]
    return CUDAExtension("mlguard._C", sources + sorted(glob.glob("cuda/*.cu")),
                         include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(ROOT, "cuda")],
                         extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=link)


class build_ext(BuildExtension.with_options(use_ninja=True)):
    """Keeps objects and build.ninja in build/temp: `pip install -e .` would otherwise use a
    fresh temporary folder each time and recompile every file; here ninja recompiles only
    what changed."""

    def finalize_options(self):
        super().finalize_options()
        self.build_temp = os.path.join(ROOT, "build", "temp")


# packages, version and entry point: pyproject.toml
setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": build_ext},
)
