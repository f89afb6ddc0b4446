#!/usr/bin/env bash
# Flow study, batch 3: does the photometric recipe keep improving with steps (3,000), and
# does a robust (Charbonnier) error inside P raise the gain? One core each.
# Usage: bash docs/flow_study/batch3.sh OUT_DIR
set -u
out=${1:?out dir}; mkdir -p "$out"
run() {  # core name args...
  core=$1; name=$2; shift 2
  [ -f "$out/$name/metrics.json" ] && return
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg taskset -c "$core" \
    python -m stvae_np.train --eval-every 250 --out "$out/$name" "$@" > "$out/$name.log" 2>&1
}
P="--set photo_weight=3 --set photo_blur=1"
run 0 c01_p3_b1_3000 $P --steps 3000 &
( run 1 c02_p3_b1_charb $P --set photo_loss=charbonnier --steps 1000
  run 1 c03_p10_b1_charb_r0 --set photo_weight=10 --set photo_blur=1 --set photo_loss=charbonnier --set recon_flow_grad=0 --steps 1000 ) ; wait
