#!/usr/bin/env bash
# Every #19 and #30 benchmark on one CUDA device in one call, then all ratio lines and the earlier GPU
# targets. Under 10 minutes: each benchmark has its own time limit, 560 s in all. Run from the repository root:
#
#     bash scripts/bench_gpu.sh                # logs to $OUT/bench_gpu (or /tmp/bench_gpu)
#
# The machine needs torch with CUDA, h5py, numpy, typer and rich. The wheels to carry in .whl/ (installed
# into /tmp/site here; see BENCHMARKS.md, "GPU"), for the device's Python:
#   decord 0.6.0 and av 18.1.0      bench_clip_data, bench_released_loop, bench_preprocess (avel.preprocessing)
#   torchvision and pillow           bench_released_loop (the released loader's per-sample transforms)
#   torchcodec 0.13.0                bench_preprocess --decoders torchcodec (optional; the cu130 build from
#                                    download.pytorch.org/whl/cu130 for --decoder-device cuda, NVDEC)
# torchcodec needs FFmpeg 4-8 shared libraries: where the machine has none, PyAV's bundled FFmpeg 8 is put
# on LD_LIBRARY_PATH (scripts/pyav_ffmpeg_env.py); where it still cannot load, its lines say why and skip.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
log="${OUT:-/tmp}/bench_gpu"
mkdir -p "$log"
python3 -c "import torchcodec.decoders" 2>/dev/null \
  || eval "$(python3 scripts/pyav_ffmpeg_env.py --dir /tmp/pyav-ffmpeg 2>/dev/null)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for m in decord av torchvision PIL torchcodec.decoders; do  # what the benchmarks below import
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
run released_loop 150 scripts/bench_released_loop.py --device cuda --batch-size 64 --steps 2 --rounds 3
# the decoders beside the decord floor (torchcodec on CPU, 1 and 2 decoding threads, then its NVDEC path;
# skipped lines if absent)
run decoders 40 scripts/bench_preprocess.py --videos 24 --repeat 2 --decoders decord,torchcodec --threads 1,2
run decoders_cuda 30 scripts/bench_preprocess.py --videos 24 --repeat 2 --decoders torchcodec --decoder-device cuda
run avel_step 75 scripts/bench_avel_step.py --device cuda --steps 52 --repeat 3 --variants fp32,bf16
run eval 50 scripts/bench_eval.py --device cuda --videos 1024 --epochs 5 --amp
run clip_data 45 scripts/bench_clip_data.py --device cuda --videos 512 --batch-size 64 --amp
run load 30 scripts/bench_load.py --videos 600
run train_avel 45 scripts/bench_train.py avel --device cuda --videos 3339 --epochs 3 --amp --balancers none,pmr
run train_resnet18 45 scripts/bench_train.py resnet18 --device cuda --videos 1024 --amp --fusions concat \
  --balancers none,pmr
run avel_compile 50 scripts/bench_avel_step.py --device cuda --steps 52 --repeat 3 --fusions concat \
  --variants bf16,compile

echo "== ratios"
grep -H "^ratio" "$log"/*.txt
echo "== earlier targets: AVEL <= 0.08 s/epoch for 3,339 videos on an H100-class GPU (reference loop 1.57 s"
echo "   concat / 1.68 s DMRN there); ResNet18 >= 2,000 samples/s end to end with PMR"
grep -H -E "^\| (concat|dmrn) \| (none|pmr) " "$log"/train_*.txt
