#!/bin/bash
# warpforge-launch job 1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d (simple_mlp): generated, do not edit.
#SBATCH --job-name=warpforge-1a2b3c4d
#SBATCH --comment=warpforge:1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d
#SBATCH --chdir=/scratch/warpforge
#SBATCH --output=/scratch/warpforge/warpforge-%j.out
#SBATCH --error=/scratch/warpforge/warpforge-%j.err
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16384M
#SBATCH --gres=gpu:1
#SBATCH --time=30

set -euo pipefail
umask 077
WORK_DIR=/scratch/warpforge
OUT_DIR="$WORK_DIR/output-$SLURM_JOB_ID"
# a new private directory; an existing one (a requeued job) only if it is ours and no symlink
if ! mkdir -m 700 -- "$OUT_DIR" 2>/dev/null; then
  if [ -L "$OUT_DIR" ] || [ ! -d "$OUT_DIR" ] || [ ! -O "$OUT_DIR" ]; then
    echo "warpforge: refusing $OUT_DIR: it exists and is not a directory of this user" >&2
    exit 3
  fi
fi
export WARPFORGE_CORRELATION_ID=1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d
export WARPFORGE_OUT_DIR="$OUT_DIR"

# any GPU vendor: pick the image and flag for the devices this node has
if [ -e /dev/nvidiactl ] || [ -e /dev/nvidia0 ]; then
  IMAGE=/shared/containers/warpforge-nvidia.sif; GPU_FLAGS=(--nv)
elif [ -e /dev/kfd ]; then
  IMAGE=/shared/containers/warpforge-amd.sif; GPU_FLAGS=(--rocm)
else
  echo "warpforge: no NVIDIA or AMD device on $(hostname)" >&2; exit 3
fi
exec apptainer exec "${GPU_FLAGS[@]}" --bind "$WORK_DIR" "$IMAGE" /opt/warpforge/bin/snakegrinder --trace-with-values --source /models/simple_mlp.py --class SimpleMLP --inputs '[(1, 8, '"'"'f32'"'"'), (1, 128, '"'"'i64'"'"')]' --seed 42 --out "$OUT_DIR"
