#!/usr/bin/env bash
# A dynsweep sweep on SLURM nodes: a Ray head on the first node, workers on the others, the
# sweep driven from the head, an MLflow server beside it.
#   sbatch clusters/slurm/ray-on-slurm.sh configs/heat_mnist.yaml [--set key=value ...]
#SBATCH --job-name=dynsweep
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
#SBATCH --output=dynsweep-%j.log
set -euo pipefail

config="${1:?usage: sbatch ray-on-slurm.sh CONFIG [dynsweep sweep options]}"
shift
port=6379
mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
head="${nodes[0]}"
head_ip="$(srun --nodes=1 --ntasks=1 -w "$head" hostname --ip-address | awk '{print $1}')"
export MLFLOW_TRACKING_URI="http://${head_ip}:5000"

srun --nodes=1 --ntasks=1 -w "$head" \
  ray start --head --node-ip-address="$head_ip" --port="$port" \
  --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_PER_TASK:-0}" --block &
sleep 10
for node in "${nodes[@]:1}"; do
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="${head_ip}:${port}" \
    --num-cpus="$SLURM_CPUS_PER_TASK" --num-gpus="${SLURM_GPUS_PER_TASK:-0}" --block &
done
sleep 10

# The tracking server (sqlite on the shared file system; use PostgreSQL for many nodes).
dynsweep server --host 0.0.0.0 --port 5000 --workers 4 --allowed-hosts "${head}:5000,${head}" \
  --backend-store-uri "sqlite:///${SLURM_SUBMIT_DIR}/mlflow.db" \
  --artifacts-destination "${SLURM_SUBMIT_DIR}/mlartifacts" &
server=$!
trap 'kill "$server" 2>/dev/null || true; ray stop || true' EXIT

# Sweep state and checkpoints where every node reaches them (a shared path, or s3://…).
storage="${DYNSWEEP_STORAGE:-$HOME/dynsweep_runs}"
dynsweep sweep "$config" --address "${head_ip}:${port}" --tracking-uri "$MLFLOW_TRACKING_URI" \
  --storage "$storage" "$@"
