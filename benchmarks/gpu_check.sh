#!/usr/bin/env bash
# Every GPU check in one call: the benchmarks of the README's GPU table, the CUDA tests, a profile.
# Full logs go to $OUT (or benchmarks/results/gpu-check); the JSON lines are printed.
#   bash benchmarks/gpu_check.sh
set -u
out="${OUT:-benchmarks/results/gpu-check}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi -L | tee "$out/device.txt"
$py -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)" | tee -a "$out/device.txt"

timeout 240 $py benchmarks/throughput.py --modes alternating_fp32,fused_eager,fused_fast \
  > "$out/throughput.log" 2>&1; grep '^{' "$out/throughput.log" || tail -20 "$out/throughput.log"
timeout 240 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$out/tests.txt" 2>&1
tail -3 "$out/tests.txt"
timeout 150 $py benchmarks/profile_step.py --rows 30 > "$out/profile.txt" 2>&1
tail -1 "$out/profile.txt"
timeout 200 $py benchmarks/throughput.py --resize-before-projection > "$out/throughput_rbp.log" 2>&1
grep '^{' "$out/throughput_rbp.log" || tail -20 "$out/throughput_rbp.log"
