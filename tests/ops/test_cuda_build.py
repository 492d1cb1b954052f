"""The CUDA build's default architectures: every GPU the installed torch's wheel runs on, from
a T4 (7.5) to Blackwell (12.0, PTX for newer), and the same list for setup.py and CMake."""

import pathlib
import re

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
# torch 2.14's CUDA 13 wheel: sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 (CUDA 13 has no sm_70).
WHEEL_ARCHS = ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]


def setup_default() -> str:
    return re.search(r'^DEFAULT_ARCHS = "([^"]+)"', (ROOT / "setup.py").read_text(), re.M)[1]


def cmake_default() -> str:
    return re.search(r'set\(TORCH_CUDA_ARCH_LIST "([^"]+)"\)',
                     (ROOT / "CMakeLists.txt").read_text())[1]


def test_default_archs_run_on_t4_through_blackwell():
    archs = setup_default().split(";")
    assert [a.removesuffix("+PTX") for a in archs] == WHEEL_ARCHS
    assert archs[-1].endswith("+PTX")  # GPUs newer than the list JIT-compile the PTX


def test_cmake_and_make_build_the_same_archs_as_setup_py():
    assert cmake_default() == setup_default()
    # `make test-cpp` used to configure CMake with its own, shorter list ("8.0;9.0").
    assert "TORCH_CUDA_ARCH_LIST=" not in (ROOT / "Makefile").read_text()


@pytest.mark.skipif(torch.version.cuda is None, reason="a CPU-only torch has no CUDA archs")
def test_default_archs_cover_the_installed_torch():
    flags = torch._C._cuda_getArchFlags().split()
    wheel = [f"{f[3:-1]}.{f[-1]}" for f in flags if f.startswith("sm_")]
    ours = [a.removesuffix("+PTX") for a in setup_default().split(";")]
    assert set(wheel) <= set(ours), f"torch runs on {wheel}, mlguard builds {ours}"
