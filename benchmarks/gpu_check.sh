#!/usr/bin/env bash
# One call on a GPU machine: build the extension against the torch installed there, run the
# whole test suite (CUDA cases included) and the benchmarks, print a short table.
# Python packages missing there can travel as wheels in .whl/ (see the device notes).
# Results land in $OUT (or ./gpu-results) as JSON and logs.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 setup.py -q build_ext --inplace > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
python3 -m mlguard info
python3 -m pytest tests -q -rs 2>&1 | tee "$out/pytest.log" | tail -15
python3 benchmarks/bench_trigger.py --json "$out/bench_trigger.json" | tee "$out/bench_trigger.txt"
python3 benchmarks/bench_projection.py --json "$out/bench_projection.json" | tee "$out/bench_projection.txt"
python3 benchmarks/bench_scan.py --models 200 --json "$out/bench_scan.json" | tee "$out/bench_scan.txt"
# The CPU ops on every core of the GPU machine (quiet, unlike the shared dev machine).
python3 benchmarks/bench_cpu_threads.py --threads "$(nproc)" | tee "$out/bench_cpu_threads.txt"
