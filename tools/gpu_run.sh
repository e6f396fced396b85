#!/usr/bin/env bash
# Rebuilds the GPU measurements of docs/SPEED.md ("On one GPU") on a machine with a CUDA GPU. The
# committed ones (results/bench/h100_eager, results/bench/h100_cuda_graphs) come from one NVIDIA
# H100 80GB with 16 CPU cores.
#   tools/gpu_run.sh                               # checks, benchmarks, uk seed 0 alone
#   PLAN=plans/paper.txt JOBS=8 tools/gpu_run.sh   # the same, then JOBS runs of PLAN at once
# Steps:
#   1. a smoke run, the GPU's float32 forward against the CPU's float64, and
#      tests/test_cuda_graphs.py (if they fail, every later step runs eager steps);
#   2. tools/bench.py on uk with CUDA graphs and with eager steps (OUT/bench_uk_graphs.json,
#      OUT/bench_uk_eager.json), then uk seed 0 alone, timed (OUT/uk_seed0_alone.log);
#   3. with PLAN set: tools/sweep.py over it, JOBS jobs at once, under CUDA MPS where the machine has
#      it (the kernels of several processes then share the GPU), output in OUT/sweep.log.
# OUT defaults to log/gpu_run (git-ignored). A dry run on CPU:
#   DEVICE=cpu EXTRA="--pretrain_epochs=1 --finetune_epochs=1 --max_batches_per_epoch=2" tools/gpu_run.sh
set -u
cd "$(dirname "$0")/.." || exit 1  # the repository root
OUT=${OUT:-log/gpu_run}; DEVICE=${DEVICE:-cuda}; PLAN=${PLAN:-}; JOBS=${JOBS:-8}; EXTRA=${EXTRA:-}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" || exit 1
$PYTHON -c "import torch, numpy, pandas; print('torch', torch.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi -L 2>/dev/null; nproc

echo "== 1. smoke run and checks ($SECONDS s)"
$PYTHON train_model.py --device=$DEVICE --target_market=in --seeds=1 --pretrain_epochs=1 --finetune_epochs=1 \
  --max_batches_per_epoch=3 --log_dir="$OUT/smoke" >"$OUT/smoke.log" 2>&1 || { tail -30 "$OUT/smoke.log"; exit 1; }
echo "in seed 0 test candidates sha256: $(zcat "$OUT"/smoke/acmr-in-seed0-*/seed0/test_candidates.tsv.gz | sha256sum)"
$PYTHON - "$DEVICE" <<'PY' || exit 1
import sys, torch
from model import ACMR
torch.manual_seed(0)
model = ACMR(500, 7).eval()
history = torch.randint(0, 501, (256, 12)); history[:, 0] = 1
candidate, markets = torch.randint(1, 501, (256,)), torch.randint(0, 7, (256,))
with torch.inference_mode():
    reference = model.double()(None, history, candidate, markets)
    device = torch.device(sys.argv[1])
    out = model.float().to(device)(None, history.to(device), candidate.to(device), markets.to(device)).cpu().double()
error = ((out - reference).norm() / reference.norm()).item()
print(f"{device} float32 forward vs CPU float64: relative error {error:.2e}")
sys.exit(0 if error < 1e-4 else 1)
PY
if [ "$DEVICE" = cuda ]; then
  $PYTHON -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tee "$OUT/test_cuda_graphs.log" | tail -3
  if [ "${PIPESTATUS[0]}" != 0 ]; then echo "CUDA graph tests failed: eager steps from here on"; EXTRA="$EXTRA --cuda_graphs=false"; fi
fi

echo "== 2. bench uk, then uk seed 0 alone ($SECONDS s)"
$PYTHON -m tools.bench --device=$DEVICE --target_market=uk --baseline_batches=0 --json="$OUT/bench_uk_graphs.json" $EXTRA \
  2>&1 | grep -v "it/s\]" | tail -8
$PYTHON -m tools.bench --device=$DEVICE --target_market=uk --baseline_batches=5 --json="$OUT/bench_uk_eager.json" $EXTRA \
  --cuda_graphs=false 2>&1 | grep -v "it/s\]" | tail -8
started=$SECONDS
$PYTHON train_model.py --device=$DEVICE --target_market=uk --seeds=1 --log_dir="$OUT/uk_alone" $EXTRA \
  >"$OUT/uk_seed0_alone.log" 2>&1
echo "uk seed 0 alone: $((SECONDS - started)) s wall" | tee -a "$OUT/uk_seed0_alone.log"

if [ -n "$PLAN" ]; then
  echo "== 3. sweep of $PLAN, $JOBS jobs at once ($SECONDS s)"
  if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
    mkdir -p /tmp/mps /tmp/mps-log && nvidia-cuda-mps-control -d
    if ! timeout 60 $PYTHON -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
      echo "MPS did not start: going on without it"; echo quit | nvidia-cuda-mps-control
      unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    fi
  fi
  $PYTHON -m tools.sweep --plan="$PLAN" --jobs=$JOBS --device=$DEVICE $EXTRA 2>&1 | tee "$OUT/sweep.log" | tail -20
  [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control
fi
echo "done at $SECONDS s; output in $OUT"
