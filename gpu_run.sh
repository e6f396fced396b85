#!/usr/bin/env bash
# Everything we run on a lent GPU machine, in one go (the device tool runs it in the repo root,
# with the data carried as .devdata/xmrec.tgz and results written under $OUT):
#   1. a smoke run on the GPU, a GPU-vs-CPU check of the model's function, and the CUDA-graph
#      tests (tests/test_cuda_graphs.py; if they fail, everything after runs with eager steps);
#   2. bench.py on uk (data preparation, one pre-training epoch, one validation pass, the
#      padded nn.TransformerEncoder baseline), then uk seed 0 alone, timed (log/results);
#   3. sweep.py over plans/gpu.txt, JOBS at a time, until DEADLINE_S seconds after the start;
#   4. the finished run folders (no checkpoints, no candidate files) packed into $OUT/runs.tgz.
# The logs and the bench JSON go into $OUT/logs.tgz after each step (the tool returns at most
# eight files, so they travel as one).
# Dry run on CPU: DEVICE=cpu PLAN=... EXTRA="--num_epochs=1 --max_batches_per_epoch=2" ./gpu_run.sh
set -u
OUT=${OUT:-/tmp/gpu_out}; DEVICE=${DEVICE:-cuda}; PLAN=${PLAN:-plans/gpu.txt}
JOBS=${JOBS:-12}; DEADLINE_S=${DEADLINE_S:-470}; EXTRA=${EXTRA:-}; BENCH=${BENCH:-1}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 XMREC_DIR=$PWD/.devdata/xmrec
LOGS=/tmp/gpu_logs
save_logs() { tar czf "$OUT/logs.tgz" -C "$(dirname $LOGS)" "$(basename $LOGS)"; }
mkdir -p "$OUT" "$LOGS" "$XMREC_DIR" && tar xzf .devdata/xmrec.tgz -C "$XMREC_DIR" || exit 1
$PYTHON -c "import torch, numpy, pandas, sklearn, tqdm, matplotlib as m; print('torch', torch.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'matplotlib', m.__version__, 'cuda', torch.cuda.is_available())"
nvidia-smi -L 2>/dev/null; nproc

if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then  # kernels of the jobs run side by side
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps /tmp/mps-log && nvidia-cuda-mps-control -d
  if ! timeout 60 $PYTHON -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
    echo "MPS did not work: going on without it"; echo quit | nvidia-cuda-mps-control
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  else echo "MPS on"; fi
fi

touch /tmp/sweep_start
if [ "$BENCH" = 1 ]; then
echo "== 1. smoke run and function check ($SECONDS s)"
$PYTHON train_model.py --device=$DEVICE --target_market=in --seeds=1 --num_epochs=1 --max_batches_per_epoch=3 \
  --log_dir=/tmp/smoke >"$LOGS/smoke.log" 2>&1 || { tail -30 "$LOGS/smoke.log"; save_logs; exit 1; }
grep "test" "$LOGS/smoke.log" | tail -2
echo "in seed 0 test candidates sha256: $(zcat /tmp/smoke/in-*/seed0/test_candidates.tsv.gz | sha256sum)"
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
  $PYTHON -m pytest -q -p no:cacheprovider tests/test_cuda_graphs.py 2>&1 | tee "$LOGS/test_cuda_graphs.log" | tail -3
  if [ "${PIPESTATUS[0]}" != 0 ]; then echo "CUDA GRAPH TESTS FAILED: eager steps from here on"; EXTRA="$EXTRA --cuda_graphs=false"; fi
fi
save_logs

echo "== 2. bench uk ($SECONDS s)"
$PYTHON bench.py --device=$DEVICE --target_market=uk --baseline_batches=${BASELINE_BATCHES:-5} --json="$LOGS/bench_uk.json" $EXTRA \
  2>&1 | grep -v "it/s\]" | tail -12
started=$SECONDS  # one whole (market, seed) run, alone on the device: uk seed 0 of the results
timeout ${SOLO_S:-180} $PYTHON train_model.py --device=$DEVICE --target_market=uk --seeds=1 --log_dir=log/results $EXTRA \
  >"$LOGS/uk_solo.log" 2>&1 && echo "uk seed 0 alone: $((SECONDS - started)) s wall, $(grep -c epoch log/results/uk-*/metrics.jsonl) epochs"

fi

save_logs
echo "== 3. sweep ($SECONDS s)"
MINUTES=$($PYTHON -c "print(max(0.5, ($DEADLINE_S - $SECONDS) / 60))")
$PYTHON sweep.py --plan=$PLAN --jobs=$JOBS --deadline_minutes=$MINUTES --device=$DEVICE $EXTRA 2>&1 | tee "$LOGS/sweep.log" | tail -40
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control

save_logs
echo "== 4. pack ($SECONDS s)"
new_folders=$(find log -mindepth 2 -maxdepth 2 -type d -newer /tmp/sweep_start)
finished=$(for f in $new_folders; do [ -f $f/results.json ] && echo $f; done)
tar czf "$OUT/runs.tgz" --exclude='*_candidates.tsv.gz' --exclude=checkpoint.pt $finished
echo "packed $(echo $finished | wc -w) finished run folders"
# interrupted runs, most epochs first, with their checkpoints (to finish elsewhere with --resume)
total=0; count=0
for folder in $(for f in $new_folders; do
    [ -f $f/checkpoint.pt ] && [ ! -f $f/results.json ] && echo "$(wc -l <$f/metrics.jsonl 2>/dev/null || echo 0) $f"
  done | sort -rn | cut -d' ' -f2); do
  name=resume_$(basename $folder).tgz
  tar czf "$OUT/$name" --exclude='*_candidates.tsv.gz' $folder
  size=$(stat -c %s "$OUT/$name")
  if [ $count -ge 4 ] || [ $((total + size)) -gt 50000000 ] || [ $size -gt 16000000 ]; then rm "$OUT/$name"; continue; fi
  total=$((total + size)); count=$((count + 1)); echo "packed $folder for resuming ($size bytes)"
done
echo "done at $SECONDS s"
