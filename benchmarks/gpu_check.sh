#!/usr/bin/env bash
# GPU check of the batch evaluator (issue 5), one short run (< 5 min) on a CUDA machine.
#
# ResNet-50-shaped plain torch.nn model, random weights, 224x224 RGB PNGs decoded by Pillow in
# DataLoader workers, scored by validate.scoring.evaluator on CUDA; compared with a bare loop over the
# same inputs preloaded on the GPU (the ceiling), fp32 and bf16 autocast, two worker counts.
# Needs only python3 with torch, numpy and Pillow (no pandas, pydantic or pydicom; nothing is
# installed). Writes gpu_check.log and one JSON per run into $OUT (default /tmp/gpu_check).
#
# Run from the repository root:  bash benchmarks/gpu_check.sh
set -uo pipefail
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
IMAGES=/tmp/validate-bench-png224
CPUS=$(nproc)
W_ALL=$(( CPUS > 17 ? 16 : CPUS - 1 ))
N="${N:-4096}"
{
  echo "== machine"; date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "cpus: $CPUS"; df -h /dev/shm | tail -1
  "$PY" -c "import sys, torch, numpy, PIL; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'pillow', PIL.__version__)"
  for AMP in none bf16; do
    echo "== resnet50, amp $AMP, workers 8 and $W_ALL"
    timeout 200 "$PY" benchmarks/bench_scoring.py --part resnet --arch resnet50 --device cuda --n "$N" --unique 512 \
      --images "$IMAGES" --batch-size 128 --repeats 2 --amp "$AMP" --workers 8 --workers "$W_ALL" \
      --json "$OUT/resnet50_$AMP.json" || echo "resnet50 amp $AMP: exit $?"
  done
  echo "== done"; date -u
} 2>&1 | tee "$OUT/gpu_check.log"
