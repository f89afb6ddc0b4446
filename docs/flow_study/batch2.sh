#!/usr/bin/env bash
# Flow study, batch 2 (the flow head's reach): 1,000-step tiny runs, two at a time, one
# core each. Usage: bash docs/flow_study/batch2.sh OUT_DIR
set -u
out=${1:?out dir}; mkdir -p "$out"
run() {  # core name args...
  core=$1; name=$2; shift 2
  [ -f "$out/$name/metrics.json" ] && return
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg taskset -c "$core" \
    python -m stvae_np.train --steps 1000 --eval-every 250 --out "$out/$name" "$@" \
    > "$out/$name.log" 2>&1
}
P="--set photo_weight=3 --set photo_blur=1"
run 0 b01_p3_b1_k3 $P --set flow_kernel=3 &
run 1 b02_p3_b1_k5 $P --set flow_kernel=5 ; wait
run 0 b03_p3_b1_k3_f16 $P --set flow_kernel=3 --set flow_filters=16 &
run 1 b04_k3 --set flow_kernel=3 ; wait
run 0 b05_p3_b1_k1 $P --set flow_kernel=1 &
run 1 b06_p3_b1_f16 $P --set flow_filters=16 ; wait
