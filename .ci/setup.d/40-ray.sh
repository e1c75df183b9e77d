#!/usr/bin/env bash
# The Ray test lab's tools: Ray with its dashboard (the Jobs REST API lives in the dashboard,
# plain `ray` has none) in a venv of its own, outside the project's venv, because the
# warpforge-launch CLI talks to Ray over HTTP and must never depend on the Ray SDK.
# Idempotent: returns at once when the venv already imports a working ray + dashboard.
set -euo pipefail
TOOLS=${WF_LAB_TOOLS:-/opt/wf-lab-tools}
VENV=$TOOLS/ray-venv
RAY_SPEC=${WF_RAY_SPEC:-ray[default]}

if [ -x "$VENV/bin/ray" ] && "$VENV/bin/python" -c 'import ray, ray.dashboard, aiohttp' 2>/dev/null; then
  echo "ray venv present: $("$VENV/bin/python" -c 'import ray; print(ray.__version__)') at $VENV"
  exit 0
fi
mkdir -p "$TOOLS"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$RAY_SPEC"
"$VENV/bin/python" -c 'import ray, ray.dashboard; print("ray", ray.__version__, "installed at", "'"$VENV"'")'
