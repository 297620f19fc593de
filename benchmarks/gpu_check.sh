#!/usr/bin/env bash
# Every GPU check in one call: the throughput of docs/performance.md's GPU table (with the
# compiled-heads mode and FLOP rates), the CUDA tests, where a step's time goes (eager, then heads
# compiled), the input pipeline end to end, peak training memory per backbone with and without
# gradient checkpointing (benchmarks/memory.py), and the README's Backbones table (one fused_fast
# line per backbone family at 448 px with the full heads, last, so that the time left decides).
# Full logs go to $OUT (or benchmarks/results/gpu-check); the JSON lines and tables are printed.
#   bash benchmarks/gpu_check.sh
# Each step runs under the smaller of its own limit and the time left of GPU_CHECK_SECONDS
# (default 530), so that the whole check ends within about 9 minutes even when a step hangs.
set -u
out="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
budget=${GPU_CHECK_SECONDS:-530}

# step LIMIT LOG COMMAND...: COMMAND's output into LOG, killed after LIMIT or the time left
step() {
  local limit=$1 log=$2 left=$((budget - SECONDS))
  shift 2
  if ((left < limit)); then limit=$left; fi
  if ((limit < 20)); then
    echo "skipped, ${left}s left: $*" > "$log"
    return
  fi
  local start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  echo "# exit $? after $((SECONDS - start))s (limit ${limit}s): $*"
}

# where LOG: profile_step.py's table and JSON line, or the end of LOG
where() {
  sed -n '/^Where the time goes/,$p' "$1" | grep . || tail -20 "$1"
}

nvidia-smi -L | tee "$out/device.txt"
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$out/device.txt"

# first, while the compile cache is cold; the compiled-heads profile below runs the same
# shapes and can reuse the kernels Inductor cached on disk
step 270 "$out/throughput.log" $py benchmarks/throughput.py \
  --modes alternating_fp32,fused_fast,fused_regions
grep '^{' "$out/throughput.log" || tail -20 "$out/throughput.log"

step 150 "$out/tests.txt" $py -m pytest -q -p no:cacheprovider tests/cuda/test_cuda.py
tail -3 "$out/tests.txt"

step 120 "$out/profile_eager.txt" $py benchmarks/profile_step.py --rows 30
where "$out/profile_eager.txt"
step 150 "$out/profile_compile_heads.txt" $py benchmarks/profile_step.py --rows 30 --compile-heads
where "$out/profile_compile_heads.txt"

step 150 "$out/end_to_end.log" $py benchmarks/end_to_end.py --device cuda --workers 0,1,4,8
grep '^{' "$out/end_to_end.log" || tail -20 "$out/end_to_end.log"
# docs/backbones.md's memory table: peak training memory per image at 448 px, with and
# without gradient checkpointing, five backbones
step 150 "$out/memory.log" $py benchmarks/memory.py --device cuda
sed -n '/^| backbone/,$p' "$out/memory.log" | grep . || tail -20 "$out/memory.log"
# the Backbones table's GPU column: full heads (D=2048, M=1024), 448 px, as mgmrn train runs
for backbone in resnet101 convnext_tiny swin_tiny_patch4_window7_224 maxvit_tiny_tf_224 \
    vit_small_patch14_dinov2 vit_base_patch14_dinov2; do
  step 60 "$out/backbone_$backbone.log" $py benchmarks/throughput.py --backbone "$backbone" \
    --modes fused_fast --steps 10
  grep '^{"mode"' "$out/backbone_$backbone.log" || tail -3 "$out/backbone_$backbone.log"
done
echo "# gpu_check: ${SECONDS}s"
