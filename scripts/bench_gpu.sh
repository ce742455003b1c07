#!/usr/bin/env bash
# Every #19 and #30 benchmark on one CUDA device in one call, then all ratio lines and the earlier GPU
# targets. Under 10 minutes: each benchmark has its own time limit, 570 s in all. Run from the repository root:
#
#     bash scripts/bench_gpu.sh                # logs to $OUT/bench_gpu (or /tmp/bench_gpu)
#
# The machine needs torch with CUDA, h5py, numpy, typer and rich; bench_clip_data and bench_released_loop
# also import the preprocessing package (decord, PyAV) and bench_released_loop torchvision + Pillow (the
# released loader's transforms). Where those are missing, put their wheels in .whl/ first (see
# BENCHMARKS.md, "GPU") and they are installed into /tmp/site here; torchcodec (optional: the decoder
# comparison) needs FFmpeg 4-8 shared libraries on the machine, else its line says it is skipped.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
log="${OUT:-/tmp}/bench_gpu"
mkdir -p "$log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for m in decord av torchvision PIL torchcodec; do  # what the benchmarks below import
  python3 -c "import $m" 2>/dev/null && echo "   $m: yes" || echo "   $m: MISSING (carry its wheel in .whl/)"
done

run() {  # NAME SECONDS SCRIPT ARGS...
  local name=$1 limit=$2
  shift 2
  echo "== $name: python $*  (limit ${limit}s)"
  timeout "$limit" python3 "$@" >"$log/$name.txt" 2>&1
  echo "   exit $? ($(wc -l <"$log/$name.txt") lines)"
  tail -n 12 "$log/$name.txt"
}

# #30 first (what a lent device runs first): the released PMR CREMA-D loop beside avel (fp32, bf16; PMR's
# prototype pass per clip; the data path's share of the step, goal there <= 5 %), 224 px, width 64
run released_loop 140 scripts/bench_released_loop.py --device cuda --batch-size 64 --steps 4 --rounds 3
# the decoders beside the decord floor (torchcodec on CPU, then its NVDEC path; skipped lines if absent)
run decoders 40 scripts/bench_preprocess.py --videos 24 --repeat 2 --decoders decord,torchcodec
run decoders_cuda 30 scripts/bench_preprocess.py --videos 24 --repeat 2 --decoders torchcodec --decoder-device cuda
run avel_step 75 scripts/bench_avel_step.py --device cuda --steps 52 --repeat 3 --variants fp32,bf16
run eval 60 scripts/bench_eval.py --device cuda --videos 1024 --epochs 5 --amp
run clip_data 45 scripts/bench_clip_data.py --device cuda --videos 512 --batch-size 64 --amp
run load 30 scripts/bench_load.py --videos 600
run train_avel 45 scripts/bench_train.py avel --device cuda --videos 3339 --epochs 3 --amp --balancers none,pmr
run train_resnet18 45 scripts/bench_train.py resnet18 --device cuda --videos 1024 --amp --fusions concat \
  --balancers none,pmr
run avel_compile 60 scripts/bench_avel_step.py --device cuda --steps 52 --repeat 3 --fusions concat \
  --variants bf16,compile

echo "== ratios"
grep -H "^ratio" "$log"/*.txt
echo "== earlier targets: AVEL <= 0.08 s/epoch for 3,339 videos on an H100-class GPU (reference loop 1.57 s"
echo "   concat / 1.68 s DMRN there); ResNet18 >= 2,000 samples/s end to end with PMR"
grep -H -E "^\| (concat|dmrn) \| (none|pmr) " "$log"/train_*.txt
