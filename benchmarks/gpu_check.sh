#!/usr/bin/env bash
# One command for a GPU machine (issue 29): the GPU tests with every fused-kernel fallback
# an error, the bench of both presets (host and device time, the pool's peak, TF32, the
# same card's cuBLAS matmul, which kernels ran), PyTorch + cuDNN on the same step when a
# CUDA build of torch imports (TF32 off on both sides), and the 64×64 model trained with
# the tiny preset's flow recipe for about 4 minutes, then scored on held-out clips.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]             # default: gpu_check_out/
#   bash benchmarks/gpu_check.sh --dry-run [OUT_DIR]   # the same steps on the CPU, tiny sizes:
#                                                       # proves the script end to end
#
# Needs the requirements plus the GPU extra (README). CuPy compiles each kernel on first
# use and caches it in CUPY_CACHE_DIR (default ~/.cupy/kernel_cache): a cold cache costs
# a minute or so of the first run, which the bench's warm-up steps absorb.
set -u
cd "$(dirname "$0")/.."
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
out=${1:-gpu_check_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
py=${PYTHON:-python3}
stamp() { echo "[$(date +%T)] $*" | tee -a "$out/summary.txt"; }

if [ $dry = 1 ]; then
  device=cpu; bench_steps="--steps 1 --warmup 0 --batch-size 2 --seq-len 3 --no-stages --no-memory"
  train_limit=20; train_args="--preset tiny --steps 4 --batch-size 2 --seq-len 4 --eval-clips 4 --eval-every 2"
  eval_clips=4; stamp "dry run: every step on the CPU at tiny sizes (no GPU figures)"
else
  device=gpu; bench_steps="--steps 10 --warmup 3"
  train_limit=240
  # the paper's 64×64 model with the tiny preset's flow recipe (docs/DESIGN.md section 3)
  train_args="--preset paper --steps 100000 --eval-every 500 --eval-clips 32 --lr 1e-3
    --set photo_weight=3 --set photo_blur=1 --set photo_loss=geman_mcclure
    --set photo_weighting=next_frame --set flow_act=tanh --set flow_filters=16"
  eval_clips=64
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $py -c "import cupy, numpy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), 'numpy', numpy.__version__)"
  echo "CUPY_TF32=${CUPY_TF32:-unset}"; } > "$out/device.txt" 2>&1
stamp "device: $(head -1 "$out/device.txt")"

# a fused kernel that falls back warns (RuntimeWarning): here that is an error
timeout 300 $py -m pytest -q -p no:cacheprovider -W error::RuntimeWarning \
    tests/test_gpu.py tests/test_kernels.py > "$out/test_gpu.log" 2>&1
stamp "tests/test_gpu.py tests/test_kernels.py exit $?: $(tail -1 "$out/test_gpu.log")"

for preset in tiny paper; do
  PYTHONWARNINGS=error::RuntimeWarning timeout 150 $py -m benchmarks.bench --device $device \
      --preset "$preset" $bench_steps --json "$out/bench_$preset.json" > "$out/bench_$preset.log" 2>&1
  stamp "bench $preset exit $?: $(grep -E 'median step|ratio|fused kernels|FELL BACK' "$out/bench_$preset.log" | tr -s ' ' | tr '\n' ';')"
done

# PyTorch + cuDNN on the same card, TF32 off, when a CUDA build of torch is importable
if [ $dry = 0 ] && $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  for preset in tiny paper; do
    timeout 150 $py benchmarks/torch_reference.py --device cuda --preset "$preset" --steps 10 --warmup 3 \
        --json "$out/torch_$preset.json" > "$out/torch_$preset.log" 2>&1
    stamp "torch $preset exit $?: $(grep -E 'median step' "$out/torch_$preset.log" | tr -s ' ')"
  done
else
  stamp "torch: no CUDA build of PyTorch importable (or a dry run), no side-by-side"
fi

# as many steps as fit in train_limit seconds: SIGTERM then makes the trainer finish its
# step, write its checkpoint and stop (exit 143); the held-out clips are scored after it
rm -rf "$out/train"
PYTHONWARNINGS=error::RuntimeWarning timeout -s TERM $train_limit $py -m stvae_np.train \
    --device $device $train_args --no-figures --quiet --out "$out/train" > "$out/train.log" 2>&1
stamp "train ($train_limit s) exit $? (124: stopped by the time limit; the trainer wrote its checkpoint first): $(tail -1 "$out/train.log")"
PYTHONWARNINGS=error::RuntimeWarning timeout 300 $py -m stvae_np.evaluate "$out/train/checkpoint.npz" \
    --device $device --clips $eval_clips --out "$out/eval" --overwrite --quiet > "$out/eval.log" 2>&1
stamp "evaluate exit $?"
$py - "$out/eval/metrics.json" <<'EOF' | tee -a "$out/summary.txt"
import json, sys
m = json.load(open(sys.argv[1]))
one = m.get("one_step", m)
def g(k):
    v = one.get(k)
    return float("nan") if v is None else v
print(f"held-out: EPE t>=2 {g('epe_t2'):.3f} px = {g('epe_t2') / g('zero_flow_epe_t2'):.2f} x zero flow, "
      f"gain {g('flow_gain_t2'):.2f}, MSE {g('mse') / g('copy_last_mse'):.2f} x copy-last")
EOF
