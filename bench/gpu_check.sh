#!/usr/bin/env bash
# The GPU check (issue 16): the GPU tests, then minigrpo against TRL's GRPOTrainer at the GPT-2-small
# shape in bf16 with gradient checkpointing off and on, then a section in bench/RESULTS.md.
#
#   bash bench/gpu_check.sh                    # on a CUDA machine: about 6 minutes on one H100
#   GPU_CHECK_DRY=1 bash bench/gpu_check.sh    # the same pipeline on the CPU, tiny shape, temp RESULTS file
#
# Installs nothing but what `make setup` and `pip install -e '.[bench]'` (TRL 1.16.0) provide, and only
# when missing. Settings (environment): GPU_CHECK_OUT (folder for the JSON and logs, default
# runs/gpu-check), GPU_CHECK_RESULTS (the file the section goes into: bench/RESULTS.md, in dry mode
# $GPU_CHECK_OUT/RESULTS.md), GPU_CHECK_ROUNDS (runs per implementation per workload, default 2), PY.
#
# Time on one H100, estimated (no GPU was lent when this was written): a workload is 8 prompts × 16
# completions × 128 tokens, 21 TFLOP a step (10·N·tokens, N = 124 M with GPT-2's vocabulary). The
# passes run at a few hundred TFLOP/s (~0.1 s); 128 decode steps of 12 layers are launch-bound at a few
# ms each (~0.5-1 s; TRL's generate ~1-2 s). A run is a fresh process: ~25 s of imports, CUDA start and
# model build, plus 1 warm-up and 3 measured steps (~8 s). 2 workloads × 2 implementations × 2 rounds
# = 8 runs ≈ 4-5 min; the GPU tests ≈ 1 min (the CPU reference run included). Total ≈ 6 min < 8.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
say() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - start ))" "$*" >&2; }

PY=${PY:-.venv/bin/python}
DRY=${GPU_CHECK_DRY:-0}
OUT=${GPU_CHECK_OUT:-runs/gpu-check}
ROUNDS=${GPU_CHECK_ROUNDS:-2}
mkdir -p "$OUT"

if [ ! -x "$PY" ]; then
  say "no $PY: make setup TORCH=torch (the newest CUDA build of torch)"
  make setup TORCH=torch
fi
if ! "$PY" -c "import trl" 2>/dev/null; then
  say "installing the bench extra (TRL 1.16.0)"
  "$PY" -m pip install -q -e '.[bench]'
fi

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  RESULTS=${GPU_CHECK_RESULTS:-$OUT/RESULTS.md}
  # bf16 where this CPU has bf16 units; fp32 where bf16 would be emulated (and refused)
  PRECISION=$("$PY" -c "from minigrpo.lm.precision import bf16_support; print('bf16' if bf16_support('cpu').ok else 'fp32')")
  SHAPE=(--sizes tiny --vocab 64 --prompts 2 --group-size 2 --new-tokens 4 --steps 1 --warmup 0 --rounds 1 --threads 2)
  NAME=$("$PY" -c "from minigrpo.runs.speed import device_name; print(device_name('cpu'))")
  say "dry mode: CPU ($NAME), tiny shape, $PRECISION, results into $RESULTS"
else
  DEVICE=cuda
  RESULTS=${GPU_CHECK_RESULTS:-bench/RESULTS.md}
  PRECISION=bf16
  SHAPE=(--sizes gpt2 --vocab 50257 --prompts 8 --group-size 16 --new-tokens 128 --steps 3 --warmup 1 --rounds "$ROUNDS")
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: error: torch sees no CUDA GPU here (GPU_CHECK_DRY=1 runs the pipeline on the CPU)" >&2
    exit 2
  fi
  NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
  [ -n "$NAME" ] || NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name())")
  say "device: $NAME"
fi

say "GPU tests: pytest -q -m gpu tests/test_gpu.py"
tests_rc=0
"$PY" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" || tests_rc=$?
[ "$tests_rc" = 0 ] || say "the GPU tests failed (exit $tests_rc); the comparison runs anyway and the section says so"

say "minigrpo vs TRL: ${SHAPE[*]} $PRECISION, gradient checkpointing off and on"
"$PY" bench/trl_compare.py --only speed "${SHAPE[@]}" --precisions "$PRECISION" --checkpointing-too \
  --device "$DEVICE" --out "$OUT/trl-compare.json"

command="bash bench/gpu_check.sh"
[ "$DRY" = 1 ] && command="GPU_CHECK_DRY=1 $command"
"$PY" bench/gpu_results.py --compare "$OUT/trl-compare.json" --tests "$OUT/gpu-tests.txt" --results "$RESULTS" \
  --seconds "$(( $(date +%s) - start ))" --command "$command" >/dev/null
say "wrote the section into $RESULTS (logs and JSON in $OUT)"
exit "$tests_rc"
