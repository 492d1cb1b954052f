"""The CUDA build's default architectures: every GPU the installed torch's wheel runs on, from
a T4 (7.5) to Blackwell (12.0, PTX for newer), and the same list for setup.py and CMake."""

import pathlib
import re

import pytest
import torch

import mlguard

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


# -- when the CUDA kernels are built (issue 24: only when asked for) -----------------------

def want_cuda(monkeypatch, force, *, gpu, nvcc=True, cuda_torch=True):
    """setup.py's want_cuda(), run against a stand-in torch and toolkit (importing setup.py
    would run the build)."""
    import ast
    import os
    from types import SimpleNamespace

    tree = ast.parse((ROOT / "setup.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "want_cuda")
    fake_torch = SimpleNamespace(__version__="2.14.1", version=SimpleNamespace(
        cuda="13.0" if cuda_torch else None), cuda=SimpleNamespace(is_available=lambda: gpu))
    ns = {"os": os, "torch": fake_torch, "CUDA_HOME": "/usr/local/cuda" if nvcc else None}
    exec(compile(ast.Module([fn], []), "setup.py", "exec"), ns)
    if force is None:
        monkeypatch.delenv("FORCE_CUDA", raising=False)
    else:
        monkeypatch.setenv("FORCE_CUDA", force)
    return ns["want_cuda"]()


def test_cuda_kernels_built_only_when_a_gpu_or_force_cuda_asks(monkeypatch):
    assert want_cuda(monkeypatch, None, gpu=False)[0] is False  # nvcc alone is not enough
    assert want_cuda(monkeypatch, None, gpu=True)[0] is True
    assert want_cuda(monkeypatch, "", gpu=False)[0] is False
    assert want_cuda(monkeypatch, "1", gpu=False) == (True, "FORCE_CUDA=1")
    assert want_cuda(monkeypatch, "0", gpu=True) == (False, "FORCE_CUDA=0")
    # a GPU without a toolkit: C++ only, and the reason says what is missing
    built, why = want_cuda(monkeypatch, None, gpu=True, nvcc=False)
    assert not built and "nvcc" in why


def test_force_cuda_without_what_it_needs_is_a_clear_error(monkeypatch):
    with pytest.raises(SystemExit, match="FORCE_CUDA=1 but no CUDA toolkit"):
        want_cuda(monkeypatch, "1", gpu=False, nvcc=False)
    with pytest.raises(SystemExit, match="FORCE_CUDA=1 but torch .* CPU-only"):
        want_cuda(monkeypatch, "1", gpu=False, cuda_torch=False)
    with pytest.raises(SystemExit, match="FORCE_CUDA must be 1 or 0, got 'maybe'"):
        want_cuda(monkeypatch, "maybe", gpu=False)


def test_ci_builds_the_cuda_kernels_on_every_commit():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r'^export FORCE_CUDA="\$\{FORCE_CUDA:-1\}"\n(.*\n)*make test', ci, re.M)
    # a FORCE_CUDA other than the last build's rebuilds (make demo, then FORCE_CUDA=1 make test)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(VENV\)/\.built: .*\$\(VENV\)/\.force-cuda", makefile, re.M)


def test_build_info_says_how_to_get_the_cuda_kernels(monkeypatch):
    from mlguard import _extension
    monkeypatch.setitem(_extension.BUILD_CONFIG, "cuda_decided_by",
                        "no GPU was visible at build time and FORCE_CUDA was unset")
    note = _extension._cuda_note(False)
    assert "FORCE_CUDA=1 make build" in note and "no GPU was visible" in note
    assert _extension._cuda_note(True).startswith("CUDA kernels built")
    info = mlguard.build_info()
    assert ("FORCE_CUDA=1" in info["cuda_note"]) == (not info["cuda_kernels"])


def test_build_info_names_the_cuda_exact_read_kernel(monkeypatch):
    from mlguard import _extension
    header = (ROOT / "cuda" / "keyed_projection_mma_kernel.cuh").read_text()
    assert re.search(rf"kMmaMinModels = {_extension.CUDA_MMA_MIN_MODELS};", header)
    major, minor = _extension.CUDA_MMA_MIN_CAPABILITY.split(".")
    assert re.search(rf"kMmaMinSm = {major}{minor};", header)
    assert '"MLGUARD_PROJECTION_MMA"' in header
    monkeypatch.delenv("MLGUARD_PROJECTION_MMA", raising=False)
    assert _extension._cuda_projection_kernel(True).startswith(
        f"int8 tensor-core MMA from {_extension.CUDA_MMA_MIN_MODELS} models")
    monkeypatch.setenv("MLGUARD_PROJECTION_MMA", "0")
    assert _extension._cuda_projection_kernel(True).startswith("tables")
    monkeypatch.setenv("MLGUARD_PROJECTION_MMA", "1")
    assert "MLGUARD_PROJECTION_MMA=1" in _extension._cuda_projection_kernel(True)
    assert _extension._cuda_projection_kernel(False) is None
    info = mlguard.build_info()
    assert (info["cuda_projection_kernel"] is None) == (not info["cuda_kernels"])
