#!/usr/bin/env bash
# Flow study, sweep 1: fourteen 1,000-step runs of the tiny preset side by side, one
# core each (taskset), as run on a 16-core machine. Each line is an ordinary
#   python -m stvae_np.train --steps 1000 --eval-every 250 --out <dir> --set ...
# Usage: bash docs/flow_study/sweep1.sh OUT_DIR [FIRST_CORE]
set -u
out=${1:?out dir}; core=${2:-0}
mkdir -p "$out"
py=${PYTHON:-python3}
pin="taskset -c "; command -v taskset >/dev/null || pin="env CORE="   # one core per run
run() {
  name=$1; shift
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONUNBUFFERED=1 MPLBACKEND=Agg \
    timeout "${RUN_TIMEOUT:-480}" $pin$core $py -m stvae_np.train --device cpu \
    --steps 1000 --eval-every 250 --out "$out/$name" "$@" > "$out/$name.log" 2>&1 &
  core=$((core + 1))
}
run s01_p3_b1     --set photo_weight=3 --set photo_blur=1
run s02_p3_b2     --set photo_weight=3 --set photo_blur=2
run s03_p10_b1    --set photo_weight=10 --set photo_blur=1
run s04_p30_b1    --set photo_weight=30 --set photo_blur=1
run s05_p3_b1_r0  --set photo_weight=3 --set photo_blur=1 --set recon_flow_grad=0
run s06_p1_r0     --set photo_weight=1 --set recon_flow_grad=0
run s07_p10_b1_r0 --set photo_weight=10 --set photo_blur=1 --set recon_flow_grad=0
run s08_p3_b1_h1  --set photo_weight=3 --set photo_blur=1 --set huber_weight=1 --set huber_delta=0.1
run s09_p3_b1_h10 --set photo_weight=3 --set photo_blur=1 --set huber_weight=10 --set huber_delta=0.01
run s10_p3_b1_lr1 --set photo_weight=3 --set photo_blur=1 --lr 1e-3
run s11_p3_b1_lr4 --set photo_weight=3 --set photo_blur=1 --lr 4e-3
run s12_p3_b1_m32 --set photo_weight=3 --set photo_blur=1 --set mem_filters=32
run s13_p10_b2_r0 --set photo_weight=10 --set photo_blur=2 --set recon_flow_grad=0
run s14_p3_b1_shapes --set photo_weight=3 --set photo_blur=1 --data shapes
wait
