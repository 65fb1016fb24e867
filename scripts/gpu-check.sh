#!/usr/bin/env bash
# Every GPU check of sublim in one call on a lent GPU machine (issue: GPU path).
#   here:    bash scripts/device-wheels.sh
#   device:  run  command="bash scripts/gpu-check.sh"  carry=[".whl"]  timeout_s=600
# Steps (name some to run only those: bash scripts/gpu-check.sh tests bench):
#   env    GPU, Python packages, whether vLLM imports
#   tests  pytest tests/test_gpu.py tests/test_vllm_backend.py (gpu and vllm markers included)
#   smoke  one whole cell on the tiny model with sampler=auto, each stage in its own process
#   bench  python -m sublim.bench_gpu (Qwen2.5-7B shape, random weights)
# Logs, the JUnit report, the smoke cell's metrics and bench_gpu.json go to $OUT (or /tmp/gpu-check). Exit 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
steps=("$@"); [[ ${#steps[@]} -gt 0 ]] || steps=(env tests smoke bench)

if [[ -d .whl ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 WANDB_MODE=disabled HF_HUB_OFFLINE=1

failed=()
step() {  # step NAME COMMAND...: run it, log to $OUT/NAME.log, remember a failure
  local name=$1; shift
  echo "=== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
  [[ $rc -eq 0 ]] || failed+=("$name")
}

env_report() {
  nvidia-smi -L || true
  python3 - <<'PY'
import importlib, importlib.metadata as md, sys
print("python", sys.version.split()[0])
for p in ["torch", "transformers", "peft", "accelerate", "trl", "datasets", "hydra-core", "omegaconf",
          "pyarrow", "fsspec", "huggingface-hub", "vllm"]:
    try:
        print(f"{p:16s} {md.version(p)}")
    except md.PackageNotFoundError:
        print(f"{p:16s} (not installed)")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
from sublim.backends import resolve_backend
print("sampler=auto ->", resolve_backend("auto"))
PY
}

smoke() {  # isolate=always: the per-stage processes of a GPU job, also where CUDA is missing
  local dir=/tmp/gpu-check-smoke
  rm -rf "$dir"
  python3 -m sublim.tiny.cli --quiet "$dir/artifacts/tiny-model" &&
  python3 -m sublim.cli experiment=smoke sampler=auto isolate=always logger=none \
    paths.artifacts="$dir/artifacts" hydra.run.dir="$dir/job" &&
  cp "$dir/job/metrics.json" "$OUT/smoke-metrics.json"
}

for s in "${steps[@]}"; do
  case $s in
    env)   step env env_report ;;
    tests) step tests python3 -m pytest -p no:cacheprovider -rA --junitxml="$OUT/tests.xml" \
             tests/test_gpu.py tests/test_vllm_backend.py ;;
    smoke) step smoke smoke ;;
    bench) step bench python3 -m sublim.bench_gpu --out "$OUT/bench_gpu.json" ;;
    *)     echo "unknown step $s (env, tests, smoke, bench)" >&2; exit 2 ;;
  esac
done
if [[ ${#failed[@]} -gt 0 ]]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "all passed: ${steps[*]}"
