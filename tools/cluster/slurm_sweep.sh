#!/usr/bin/env bash
# A Ray cluster inside a SLURM allocation, and tools/sweep.py's grid on it (docs/RUNNING.md, "On a cluster"):
#   sbatch tools/cluster/slurm_sweep.sh --plan=plans/paper.txt --gpus_per_job=0.125 --deadline_minutes=230
# Every argument goes to tools/sweep.py. Submit from the repository: it, its Python environment, the
# data ($XMREC_DIR) and the log folder must be on storage that every node sees at the same path.
# The first node runs the Ray head and the sweep, every node runs jobs. A deadline a few minutes
# under --time stops the jobs at their checkpoints; submitting the same command again skips the
# finished jobs and resumes the others.
#SBATCH --job-name=acmr-sweep
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
##SBATCH --gpus-per-task=1      # remove one '#' for a GPU per node
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-.}"
# source .venv/bin/activate     # the environment of requirements.txt, if not the default python
export XMREC_DIR="${XMREC_DIR:-$PWD/data}"
export PYTHONUNBUFFERED=1

# Token authentication: a fresh token for this allocation, known to its processes only (srun
# hands the environment to every node). Ray refuses a client or node without it.
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN=$(python -c "import secrets; print(secrets.token_hex(32))")
export RAY_AUTH_TOKEN

nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
head_ip=$(srun --nodes=1 --ntasks=1 -w "${nodes[0]}" hostname --ip-address | awk '{print $1}')
port=6379
echo "Ray head on ${nodes[0]} ($head_ip:$port), $((${#nodes[@]} - 1)) worker node(s)"
srun --nodes=1 --ntasks=1 -w "${nodes[0]}" ray start --head --block --node-ip-address="$head_ip" \
  --port=$port --num-cpus="$SLURM_CPUS_PER_TASK" --include-dashboard=false &
for _ in $(seq 90); do  # up to 3 minutes; if it never answers, the sweep says so
  python -c "import socket; socket.create_connection(('$head_ip', $port), 2)" 2>/dev/null && break
  sleep 2
done
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" ray start --block --address="$head_ip:$port" \
    --num-cpus="$SLURM_CPUS_PER_TASK" &
done
sleep 10  # the workers join; the sweep also uses nodes that join later

# The Ray steps end with the allocation, when the sweep has written its report.
python -m tools.sweep --ray_address="$head_ip:$port" "$@"
