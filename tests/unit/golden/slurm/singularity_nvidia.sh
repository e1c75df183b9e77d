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
#SBATCH --gres=gpu:nvidia:1
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

exec singularity exec --nv --bind "$WORK_DIR" /shared/containers/warpforge-nvidia.sif /opt/warpforge/bin/snakegrinder --trace-with-values --source /models/simple_mlp.py --class SimpleMLP --inputs '[(1, 8, '"'"'f32'"'"'), (1, 128, '"'"'i64'"'"')]' --seed 42 --out "$OUT_DIR"
