#!/usr/bin/env bash
# The main job on a fresh machine, no lab needed: set up, build the stand-in snakegrinder,
# trace a sample model with the Local scheduler, wait, and print the result.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# the package, and the PyTorch + numpy the stand-in's dist bundles (pinned)
.venv/bin/pip install -q -e . -r examples/snakegrinder/pins.txt
.venv/bin/invoke build --inventory examples/snakegrinder/inventory.yaml
exec .venv/bin/warpforge-launch --inventory examples/snakegrinder/inventory.yaml submit \
  --source examples/models/simple_mlp.py --class SimpleMLP --inputs '[(1, 8)]' --wait
