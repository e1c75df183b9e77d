#!/bin/bash
# warpforge-launch job 1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d (x'; touch /tmp/PWNED-name #?touch /tmp/PWNED-newline): generated, do not edit.
#SBATCH --job-name=warpforge-1a2b3c4d
#SBATCH --comment=warpforge:1a2b3c4d-5e6f-4a0b-8c9d-0e1f2a3b4c5d
#SBATCH --chdir="/scratch/my work"
#SBATCH --output="/scratch/my work/warpforge-%j.out"
#SBATCH --error="/scratch/my work/warpforge-%j.err"
#SBATCH --partition="gpu\" --uid=0 \""
#SBATCH --account="a b#c"
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16384M
#SBATCH --gres=gpu:nvidia:1
#SBATCH --nodelist=node-1.cluster
#SBATCH --time=30

set -euo pipefail
umask 077
WORK_DIR='/scratch/my work'
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
export EMPTY=''
export USER_NOTE='line1
line2 '"'"'single'"'"' "double" $(id) `id` ${HOME} \ ; | &'

exec singularity exec --nv --bind "$WORK_DIR" /shared/containers/warpforge-nvidia.sif /opt/warpforge/bin/snakegrinder --trace-with-values --source '/models/my model'"'"'s $(touch /tmp/PWNED-src).py' --class 'Evil"; `touch /tmp/PWNED-class`; echo "' --inputs '[(1, 8, '"'"'f32'"'"'), (1, 128, '"'"'i64'"'"')]' --seed 42 --out "$OUT_DIR"
