#!/usr/bin/env bash
# Flow study, GPU sweep: 3,000-step tiny runs on one GPU, six processes side by side
# (the tiny step is launch-bound, so each process drives the card from its own cores).
# Usage: bash docs/flow_study/gpu_sweep.sh OUT_DIR
set -u
out=${1:?out dir}; mkdir -p "$out"
py=${PYTHON:-python3}
core=0
run() {
  name=$1; shift
  PYTHONUNBUFFERED=1 MPLBACKEND=Agg timeout "${RUN_TIMEOUT:-200}" taskset -c "$core,$((core + 1))" \
    $py -m stvae_np.train --device gpu --steps 3000 --eval-every 500 --no-figures \
    --out "$out/$name" "$@" > "$out/$name.log" 2>&1 &
  core=$((core + 2))
}
P="--set photo_weight=3 --set photo_blur=1"
run g1_p3_b1 $P
run g2_p3_b1_m32 $P --set mem_filters=32
run g3_p3_b1_seq20 $P --seq-len 20
run g4_p3_b1_charb $P --set photo_loss=charbonnier
run g5_p3_b1_lr1 $P --lr 1e-3
run g6_p10_b1_r0 --set photo_weight=10 --set photo_blur=1 --set recon_flow_grad=0
wait
