#!/usr/bin/env bash
# MCL pretraining on a Slurm cluster: one torchrun agent per node, c10d rendezvous on the first node.
#
#   sbatch scripts/slurm_pretrain.sh ucf101_r2plus1d data.store=/nfs/ucf101/store
#
# Every extra argument is passed to `mcl_fast.train` (a config name, then key=value overrides).
# The output folder (config key `output`) must be on a filesystem every node sees: rank 0 writes
# the checkpoints and every rank resumes from them. A requeued or restarted job resumes by itself
# (--resume, and torchrun's --max-restarts for crashed workers).
#SBATCH --job-name=mcl-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

CONFIG=${1:-ucf101_r2plus1d}
shift || true
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${MCL_RDZV_PORT:-29500}
PYTHON=${PYTHON:-python}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export NCCL_ASYNC_ERROR_HANDLING=1

srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$HEAD_NODE:$PORT" \
    --rdzv-id "mcl-$SLURM_JOB_ID" \
    --max-restarts 3 \
    -m mcl_fast.train --config "$CONFIG" --resume "$@"
