#!/usr/bin/env bash
# `mcl-fast prepare` on a Slurm cluster: one torchrun agent per node, one rank per GPU, c10d
# rendezvous on the first node. Every rank takes its share of the videos (balanced by frame
# count), writes its own shards and journal into the store, and rank 0 merges them into the one
# index and errors.json at the end.
#
#   sbatch scripts/slurm_prepare.sh /nfs/kinetics400/videos /nfs/kinetics400/store [--flow tvl1 ...]
#
# The videos and the store must be on a filesystem every node sees. Extra arguments go to
# `prepare` (the defaults below: --device cuda, TV-L1). A killed or requeued job resumes by itself:
# rerun it with any number of nodes or GPUs and no finished video is computed again.
# CPU-only nodes: DEVICE=cpu WORKERS=16 GPUS_PER_NODE=4 sbatch ... (4 ranks x 16 worker processes a node).
#SBATCH --job-name=mcl-prepare
#SBATCH --nodes=8
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

VIDEOS=${1:?usage: sbatch scripts/slurm_prepare.sh VIDEOS STORE [prepare options]}
STORE=${2:?usage: sbatch scripts/slurm_prepare.sh VIDEOS STORE [prepare options]}
shift 2
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-0}   # --device cuda computes in the rank's process; on CPU nodes use worker processes
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${MCL_RDZV_PORT:-29500}
PYTHON=${PYTHON:-python}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# A rank that dies (a crashed decoder is only its video's error; this is the process itself) makes
# torchrun restart every rank (--max-restarts); each restart resumes the store where it stands.
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
    --nnodes "$SLURM_JOB_NUM_NODES" \
    --nproc-per-node "$GPUS_PER_NODE" \
    --rdzv-backend c10d \
    --rdzv-endpoint "$HEAD_NODE:$PORT" \
    --rdzv-id "mcl-prepare-$SLURM_JOB_ID" \
    --max-restarts 3 \
    -m mcl_fast.motion.prepare --videos "$VIDEOS" --out "$STORE" --device "$DEVICE" --workers "$WORKERS" "$@"
