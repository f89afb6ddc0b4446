#!/usr/bin/env bash
# Flow study, the chosen recipe (the tiny preset's defaults since commit 10faa94):
# a second seed, the moving shapes, and a run five times the default length, on the
# 2-core machine: the long run on one core, the two others in turn on the other.
# (The default run itself is plain `python -m stvae_np.train --out runs/final/default_seed0`.)
# Usage: bash docs/flow_study/final_runs.sh OUT_DIR
set -u
out=${1:?out dir}; mkdir -p "$out"
one() {  # core name args...
  core=$1; name=$2; shift 2
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg taskset -c "$core" \
    python -m stvae_np.train --out "$out/$name" "$@" > "$out/$name.log" 2>&1
}
one 0 long_10000 --steps 10000 &
( one 1 default_seed1 --seed 1
  one 1 shapes_seed0 --data shapes ) &
wait
