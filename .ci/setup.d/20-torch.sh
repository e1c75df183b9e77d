#!/usr/bin/env bash
# PyTorch for the stand-in snakegrinder (its tests and its dist build reuse this install),
# plus jaxlib, whose XLA CPU client the tests use to execute the stand-in's StableHLO.
# torch 2.13.0 (CPU, cp311) is the release this machine installs offline from a local file;
# keep it in step with examples/snakegrinder/pins.txt. binutils' strip trims the dist.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
want_torch=$(sed -n 's/^torch==//p' examples/snakegrinder/pins.txt)
want_numpy=$(sed -n 's/^numpy==//p' examples/snakegrinder/pins.txt)
want_jaxlib=0.10.2
have() { "$PY" -c "import importlib.metadata as m, sys; v = m.version('$1'); sys.exit(v.split('+')[0] != '$2')" 2>/dev/null; }
if have torch "$want_torch" && have numpy "$want_numpy" && have jaxlib "$want_jaxlib"; then
  echo "torch $want_torch, numpy $want_numpy, jaxlib $want_jaxlib already installed"
else
  .venv/bin/pip install -q "torch==$want_torch" "numpy==$want_numpy" "jaxlib==$want_jaxlib"
fi
if ! command -v strip >/dev/null 2>&1; then
  apt-get -o DPkg::Lock::Timeout=600 update -q && apt-get -o DPkg::Lock::Timeout=600 install -y -q binutils
fi
