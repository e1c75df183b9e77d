#!/usr/bin/env bash
# The main job on a fresh machine, no lab needed: set up the venv, then `invoke pipeline` on
# the built-in default inventory (this machine as the only box, the Local scheduler): build the
# stand-in snakegrinder, distribute it to the local box, smoke-test it, trace the example model
# as a job, wait, and print the result. Stages whose output is current are skipped, so a second
# run only pays for the trace job. Extra arguments go to `invoke pipeline` (e.g. --force).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# the package, and the PyTorch + numpy the stand-in's dist bundles (pinned); pip runs again
# only when pyproject.toml or the pins changed since the last install
stamp=.venv/.main-job-installed
want=$(cat pyproject.toml examples/snakegrinder/pins.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/invoke ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q -e . -r examples/snakegrinder/pins.txt
  printf '%s\n' "$want" >"$stamp"
fi
exec .venv/bin/invoke pipeline --inventory builtin "$@"
