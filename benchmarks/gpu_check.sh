#!/usr/bin/env bash
# One command for a GPU machine: the GPU tests, the bench for both presets and a
# 1,000-step tiny training on the GPU; logs, JSON and figures go to one folder.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default: gpu_check_out/
#
# Needs the requirements plus the GPU extra (README). CuPy compiles each kernel on first
# use and caches it in CUPY_CACHE_DIR (default ~/.cupy/kernel_cache): a cold cache costs
# a minute or so of the first run, which the bench's warm-up steps absorb.
set -u
cd "$(dirname "$0")/.."
out=${1:-gpu_check_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py=${PYTHON:-python3}
stamp() { echo "[$(date +%T)] $*" | tee -a "$out/summary.txt"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $py -c "import cupy, numpy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'numpy', numpy.__version__)"
  echo "CUPY_TF32=${CUPY_TF32:-unset}"; } > "$out/device.txt" 2>&1
stamp "device: $(head -1 "$out/device.txt")"

timeout 300 $py -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_kernels.py > "$out/test_gpu.log" 2>&1
stamp "tests/test_gpu.py tests/test_kernels.py exit $?: $(tail -1 "$out/test_gpu.log")"
grep -h "RuntimeWarning.*fused kernel" "$out/test_gpu.log" | sort -u | head -5 >> "$out/summary.txt"

for preset in tiny paper; do
  timeout 150 $py -m benchmarks.bench --device gpu --preset "$preset" --steps 10 --warmup 3 \
      --json "$out/bench_$preset.json" > "$out/bench_$preset.log" 2>&1
  stamp "bench $preset exit $?: $(grep -E 'median step|ratio' "$out/bench_$preset.log" | tr -s ' ' | tr '\n' ';')"
done

# PyTorch + cuDNN on the same card, TF32 off, when a CUDA build of torch is importable
if $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  for preset in tiny paper; do
    timeout 150 $py benchmarks/torch_reference.py --device cuda --preset "$preset" --steps 10 --warmup 3 \
        --json "$out/torch_$preset.json" > "$out/torch_$preset.log" 2>&1
    stamp "torch $preset exit $?: $(grep -E 'median step' "$out/torch_$preset.log" | tr -s ' ')"
  done
else
  stamp "torch: no CUDA build of PyTorch importable, no side-by-side"
fi

timeout 300 $py -m stvae_np.train --device gpu --steps 1000 --out "$out/train_tiny" \
    > "$out/train_tiny.log" 2>&1
stamp "train tiny 1000 steps on the GPU exit $?: $(tail -1 "$out/train_tiny.log")"
