"""Loads the compiled ops (mlguard._C) and says what was built."""

from __future__ import annotations

import os

import torch

from ._version import __version__


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:2])


def load() -> dict:
    """Imports mlguard._C, registering the torch.ops.mlguard ops; returns the build config."""
    try:
        from ._build_config import BUILD_CONFIG
    except ImportError:
        raise ImportError(
            "mlguard's compiled extension is not built: run `make build` in the source tree, "
            "or install with `pip install --no-build-isolation .`") from None
    built = BUILD_CONFIG["torch_version"]
    if _minor(built) != _minor(torch.__version__):
        raise ImportError(
            f"mlguard was built against torch {built} but torch {torch.__version__} is "
            "installed; rebuild mlguard with the installed torch (the C++ ABI differs "
            "between torch releases)")
    try:
        from . import _C  # noqa: F401  (registers the ops)
    except ImportError as e:
        raise ImportError(f"mlguard's compiled extension failed to load: {e}; rebuild it "
                          f"against torch {torch.__version__}") from e
    return BUILD_CONFIG


BUILD_CONFIG = load()


def _runs_on(archs: str | None) -> str | None:
    """Which GPUs the built CUDA kernels run on, from TORCH_CUDA_ARCH_LIST's entries."""
    if not archs:
        return None
    levels = [float(a.split("+")[0]) for a in archs.replace(" ", ";").split(";")
              if a.split("+")[0].replace(".", "", 1).isdigit()]
    if not levels:
        return None
    low = min(levels)
    note = f"compute capability {low:.1f} and newer"
    if low > 7.5:
        note += ('; not T4 (7.5): rebuild with '
                 'TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;9.0;10.0;12.0+PTX"')
    if low > 7.0:
        # CUDA 13 (torch's default wheels) cannot compile for 7.0: sm_70 is rejected.
        note += ("; not V100 (7.0), which CUDA 13 dropped: for a V100 install a CUDA 12 build "
                 "of torch and a CUDA 12 toolkit and rebuild mlguard with 7.0 in "
                 "TORCH_CUDA_ARCH_LIST")
    return note


HOW_TO_BUILD_CUDA = ("CUDA kernels not built; to build them (needs nvcc and a CUDA build of "
                     "torch): `FORCE_CUDA=1 make build` in the source tree, or "
                     "`FORCE_CUDA=1 pip install --no-build-isolation .`")


def _cuda_note(has_kernels: bool) -> str:
    """Why the CUDA kernels are (not) there, and how to get them when they are not."""
    why = BUILD_CONFIG.get("cuda_decided_by")  # absent in builds older than the field
    if has_kernels:
        return f"CUDA kernels built ({why})" if why else "CUDA kernels built"
    return f"{HOW_TO_BUILD_CUDA} (this build: {why})" if why else HOW_TO_BUILD_CUDA


# The CUDA exact read's choice of kernel, as cuda/keyed_projection_mma_kernel.cuh makes it
# (kMmaMinModels, kMmaMinSm, sums_kernel_from_env; tests/ops/test_cuda_build.py checks that
# these agree with the header).
CUDA_MMA_MIN_MODELS = 8
CUDA_MMA_MIN_CAPABILITY = "7.5"


def _cuda_projection_kernel(has_kernels: bool) -> str | None:
    """Which CUDA kernel keyed_projection_sums uses, as MLGUARD_PROJECTION_MMA now says."""
    if not has_kernels:
        return None
    forced = os.environ.get("MLGUARD_PROJECTION_MMA", "")
    if forced == "0":
        return "tables (MLGUARD_PROJECTION_MMA=0)"
    if forced == "1":
        return (f"int8 tensor-core MMA (MLGUARD_PROJECTION_MMA=1; needs compute capability "
                f"{CUDA_MMA_MIN_CAPABILITY} or newer)")
    return (f"int8 tensor-core MMA from {CUDA_MMA_MIN_MODELS} models per call on compute "
            f"capability {CUDA_MMA_MIN_CAPABILITY} or newer, tables otherwise "
            "(MLGUARD_PROJECTION_MMA=0 or 1 forces either)")


def build_info() -> dict:
    """What this installation of mlguard was built with, and what it can run on now.

    The CUDA kernels are built only when asked for (setup.py: FORCE_CUDA=1, or a GPU visible
    at build time); `cuda_note` says why they are or are not there and how to build them.
    """
    has_cuda_kernels = bool(torch._C._dispatch_has_kernel_for_dispatch_key(
        "mlguard::mix_triggers", "CUDA"))
    return {
        "mlguard_version": __version__,
        "torch_built": BUILD_CONFIG["torch_version"],
        "torch_running": torch.__version__,
        "cuda_built": BUILD_CONFIG["cuda_version"],
        "cuda_archs": BUILD_CONFIG["cuda_archs"],
        "cuda_runs_on": _runs_on(BUILD_CONFIG["cuda_archs"]),
        "cuda_kernels": has_cuda_kernels,
        "cuda_note": _cuda_note(has_cuda_kernels),
        "cuda_available": torch.cuda.is_available(),
        # the exact read's CPU kernel: "bitplanes" (AVX-512 VPOPCNTDQ) or "tables"
        "cpu_projection_kernel": torch.ops.mlguard._projection_sums_cpu_kernel(),
        # the exact read's CUDA kernel (None without CUDA kernels): docs/projection.md
        "cuda_projection_kernel": _cuda_projection_kernel(has_cuda_kernels),
        # how the CPU kernels use the cores: "openmp" (torch.get_num_threads() of them)
        "cpu_parallel": torch.ops.mlguard._cpu_parallel(),
    }
