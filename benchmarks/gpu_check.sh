#!/usr/bin/env bash
# GPU check of scoring at the hardware's limit (issues 5 and 21), one short run (< 8 min) on a CUDA machine.
#
# ResNet-50-shaped plain torch.nn model, random weights, on generated 224x224 RGB images, scored by
# validate.scoring.evaluator on CUDA. In each run (benchmarks/bench_scoring.py) the ceiling is
# min(model only on preloaded GPU tensors, decode only on all cores), and the script prints every ratio:
#   cold/ceiling        PNG decoded by Pillow in DataLoader workers (fp32 and bf16)
#   cached/model-only   the decoded inputs read back from --cache-inputs shards
#   GPU decode          JPEG and JPEG 2000 decoded on the GPU by nvImageCodec (validate[gpu-decode]),
#                       cold/ceiling and its throughput over the CPU decoders' on all cores
# Needs python3 with torch, numpy and Pillow (no pandas, pydantic or pydicom). The GPU-decode runs need
# nvidia-nvimgcodec-cu12 with its nvJPEG / nvJPEG2000 wheels: installed from $WHEELS (a folder of wheels,
# pip --no-index) when given, skipped with the reason when absent. Writes gpu_check.log and one JSON per
# run into $OUT (default /tmp/gpu_check).
#
# Run from the repository root:  bash benchmarks/gpu_check.sh
set -uo pipefail
OUT="${OUT:-/tmp/gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
IMAGES=/tmp/validate-bench-224
CPUS=$(nproc)
W_ALL=$(( CPUS > 17 ? 16 : CPUS - 1 ))
N="${N:-4096}"
run() {  # name, then bench_scoring.py arguments
  local name=$1; shift
  echo "== $name"
  timeout 200 "$PY" benchmarks/bench_scoring.py --part resnet --arch resnet50 --device cuda --n "$N" --unique 512 \
    --images "$IMAGES" --batch-size 128 --repeats 2 --json "$OUT/$name.json" "$@" || echo "$name: exit $?"
}
{
  echo "== machine"; date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "cpus: $CPUS"; df -h /dev/shm | tail -1
  "$PY" -c "import sys, torch, numpy, PIL; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'pillow', PIL.__version__)"
  if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" 'nvidia-nvimgcodec-cu12[all]' || echo "gpu-decode: install from $WHEELS failed"
  fi
  for AMP in none bf16; do
    run "resnet50_png_$AMP" --format png --amp "$AMP" --workers 8 --workers "$W_ALL"
  done
  if "$PY" -c "from nvidia import nvimgcodec" 2>/dev/null; then
    for FMT in jpeg jpeg2000; do
      run "resnet50_${FMT}_bf16" --format "$FMT" --amp bf16 --workers "$W_ALL" --device-decode
    done
  else
    echo "== GPU decode: skipped, nvidia-nvimgcodec is not installed (pip install 'validate[gpu-decode]', or WHEELS=folder)"
  fi
  echo "== ratios (target: cold/ceiling >= 0.9, cached/model-only >= 0.9)"
  "$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("resnet50_*.json")):
    r = json.loads(path.read_text()).get("resnet")
    if not r:
        continue
    cold = max(r["evaluator"].items(), key=lambda kv: kv[1]["cases_per_s"])
    line = (f"{path.stem:24} ceiling {r['ceiling_cases_per_s']:8.0f}/s ({r['ceiling_is']}), model {r['model_only_cases_per_s']:8.0f}/s, "
            f"decode {r['decode_only_cases_per_s']:8.0f}/s | cold/ceiling {cold[1]['cold_over_ceiling']:.3f} (workers {cold[0]})")
    if "evaluator_inputs_cached" in r:
        line += f" | cached/model-only {r['evaluator_inputs_cached']['cached_over_model_only']:.3f}"
    if "evaluator_device_decode" in r:
        d = r["evaluator_device_decode"]
        line += f" | GPU decode: cold/ceiling {d['cold_over_ceiling']:.3f}, x{d['over_cpu_decode_only']:.2f} the CPU decoders"
    print(line)
EOF
  echo "== done"; date -u
} 2>&1 | tee "$OUT/gpu_check.log"
