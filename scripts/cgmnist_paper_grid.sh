#!/bin/bash
# The CG-MNIST paper-scale protocol grid of issue 31 (docs/results.md, "CG-MNIST at the paper's scale"):
# clean and released protocol, naive and PMR (the released step rule, and the paper's Eq. 11 rule), colored-
# and gray-only rows, seeds 0..2, seed 0 of every cell first.
#
#   scripts/cgmnist_paper_grid.sh G [COMMIT]      # G: the grid folder; COMMIT: the code to freeze (default HEAD)
#
# Run it twice (two processes, one per core): a run the other process trains is skipped (its lock); finished
# runs are skipped and a partial one resumes from its last.pt, so re-running it after a kill goes on where it
# stopped. The code is a frozen `git archive` of COMMIT in G/code (made once), so editing the checkout does not
# change a running grid. Each process uses one torch thread (encoder_threads=1: with two processes on two
# cores, -c cgmnist_paper's second encoder thread would only oversubscribe them; the numbers are identical).
set -u
G=$(realpath -m "$1")
COMMIT=${2:-HEAD}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$G"
if [ ! -d "$G/code" ]; then
  mkdir -p "$G/code.tmp" && git -C "$REPO" archive "$COMMIT" | tar -x -C "$G/code.tmp" && mv "$G/code.tmp" "$G/code"
  git -C "$REPO" rev-parse "$COMMIT" > "$G/code/COMMIT"
fi
D=$G/cg60k-m0.h5
export PYTHONPATH=$G/code OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-python}
[ -f "$D" ] || $PY -m avel cgmnist "$D" --no-progress
ab() { $PY -m avel ablate fusions "$@" --config cgmnist_paper --data "$D" --model cgmnist --no-progress --set encoder_threads=1; }
RELSET=(--set protocol=released --set pmr_subset=test)
EQ11=(--set pmr_coef=paper)
for S in 1 2 3; do
  ab "$G/paper_clean" --seeds $S --row concat --column baseline
  ab "$G/paper_clean" --seeds $S --row concat --column PMR
  ab "$G/paper_clean_eq11" --seeds $S --row concat --column PMR "${EQ11[@]}"
  ab "$G/paper_released" --seeds $S --row concat --column PMR "${RELSET[@]}"
  ab "$G/paper_released" --seeds $S --row concat --column baseline "${RELSET[@]}"
  ab "$G/paper_clean" --seeds $S --row "colored only" --row "gray only"
done
echo "grid finished $(date -u)"
