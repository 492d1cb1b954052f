# make demo   set up and run the main job (Fashion-MNIST watermark demo)
# make test   set up and run every test (Python suite and the C++ ctest)
# make build  install editable and (re)build the extension in place; ninja recompiles
#             only what changed. CUDA kernels: FORCE_CUDA=1 builds them, FORCE_CUDA=0 never,
#             unset only when a GPU is visible (setup.py); CI runs with FORCE_CUDA=1
# make docs   build the documentation site into site/ (strict: any warning fails)
# make bench  run the benchmarks
# make reproduce  run the example notebooks at full scale (on a GPU when present) and
#                 append their figures, device and time to examples/RESULTS.md
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export MAX_JOBS ?= $(shell nproc)
# ninja and the other tools pip installs into the venv come first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

SOURCES := $(wildcard csrc/*.cpp csrc/*.h cuda/*.cu cuda/*.cuh) setup.py

.PHONY: setup build demo test test-python test-cpp docs bench reproduce clean FORCE

# The CIFAR-10 (JPEG) archive: users point MLGUARD_CIFAR10 at their copy
# (docs/guides/building.md); CI keeps it beside the clone, found here.
CIFAR10_BESIDE := $(firstword $(wildcard $(CURDIR)/../shared/data/cifar10-jpeg.tar.gz \
  /work/shared/data/cifar10-jpeg.tar.gz))
ifneq ($(CIFAR10_BESIDE),)
export MLGUARD_CIFAR10 ?= $(CIFAR10_BESIDE)
endif

setup: $(VENV)/.deps /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz:
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist cmake

# requirements-dev.txt pins torch and holds the build tools: the extension is compiled
# against the torch in .venv (--no-build-isolation), so they come first.
$(VENV)/.deps: requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# An editable install (PEP 660): the package runs from python/, the extension is built next
# to it, and pip records the distribution (`pip show mlguard`, importlib.metadata), makes
# the `mlguard` console script from pyproject's [project.scripts] and installs the `dev`
# extra. setup.py keeps its objects in build/temp, so ninja recompiles only what changed;
# `pip uninstall mlguard` removes all of it.
# A different FORCE_CUDA from the last build's (e.g. `make demo`, then CI's
# `FORCE_CUDA=1 make test`) rebuilds: the value is a prerequisite of the build.
$(VENV)/.force-cuda: $(VENV)/.deps FORCE
	@echo "FORCE_CUDA=$(FORCE_CUDA)" | cmp -s - $@ || echo "FORCE_CUDA=$(FORCE_CUDA)" > $@
FORCE:

build: $(VENV)/.built
$(VENV)/.built: $(VENV)/.deps $(VENV)/.force-cuda $(SOURCES) pyproject.toml
	rm -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/mlguard-dev.pth"
	$(PY) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

demo: setup build
	$(PY) -m mlguard demo

test: setup build docs test-cpp test-python

test-python:
	$(PY) -m pytest tests -q

# The same C++ sources as a LibTorch library, with the keyed-generator test under ctest.
# A CUDA build of torch makes its CMake config look for the CUDA toolkit (CMakeLists.txt names
# the architectures, as setup.py does, which skips GPU detection) and for nvrtc, which ships in the nvidia wheels
# (nvidia-cuda-nvrtc: nvidia/cu13/lib/libnvrtc.so.13 beside torch 2.14's CUDA 13 build).
# With all three (toolkit, nvrtc, CUDA torch) the library is built with its CUDA kernels
# (-DMLGUARD_CUDA=ON), as CI does; otherwise C++ only.
CUDA_ROOT = $(shell for d in "$$CUDA_HOME" /usr/local/cuda /usr/local/cuda-*; do \
  ls $$d/lib*/libcudart.so* >/dev/null 2>&1 && { echo $$d; break; }; done)
NVRTC = $(shell $(PY) -c 'import glob, os, nvidia; \
  print(next(iter(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "lib", "libnvrtc.so.*[0-9]"))), ""))' 2>/dev/null)
TORCH_CUDA = $(shell $(PY) -c 'import torch; print(torch.version.cuda or "")' 2>/dev/null)
CMAKE_CUDA = $(if $(and $(CUDA_ROOT),$(NVRTC),$(TORCH_CUDA)),ON,OFF)
test-cpp: $(VENV)/.deps
	@mkdir -p build
	grep -qx 'MLGUARD_CUDA:BOOL=$(CMAKE_CUDA)' build/cmake/CMakeCache.txt 2>/dev/null \
	  && test -f build/cmake/build.ninja \
	  || cmake -S . -B build/cmake \
	  -G Ninja -DCMAKE_BUILD_TYPE=Release -DMLGUARD_CUDA=$(CMAKE_CUDA) \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')" \
	  $(if $(CUDA_ROOT),-DCUDA_TOOLKIT_ROOT_DIR=$(CUDA_ROOT) -DCUDAToolkit_ROOT=$(CUDA_ROOT)) \
	  $(if $(NVRTC),-DCUDA_nvrtc_LIBRARY=$(NVRTC)) > build/cmake-configure.log 2>&1 \
	  || { cat build/cmake-configure.log; rm -rf build/cmake; exit 1; }
	cmake --build build/cmake
	ctest --test-dir build/cmake --output-on-failure

# The documentation site (mkdocs.yml), built offline from the source tree once the pinned
# tools are installed: no build of the extension is needed (the API pages are read from the
# source, the CLI reference from the torch-free parsers). Strict: a broken link, a missing
# reference or an undocumented public name fails it (never with --quiet: it drops the
# warnings before strict mode counts them, and the build passes).
docs: $(VENV)/.docs-deps
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
	@echo "documentation site: site/index.html"

$(VENV)/.docs-deps: requirements-docs.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-docs.txt
	touch $@

bench: setup build
	$(PY) benchmarks/bench_trigger.py
	$(PY) benchmarks/bench_projection.py

# The CIFAR-10 notebooks read the archive named by MLGUARD_CIFAR10 (above).
reproduce: setup build
	$(PY) examples/reproduce.py --scale full

clean:
	rm -rf build site python/mlguard/_C*.so python/mlguard/_build_config.py $(VENV)/.built
