#!/usr/bin/env bash
# zsh, so the completion tests run the generated zsh script in a real zsh (bash is always
# there). Idempotent, install only.
set -euo pipefail
if ! command -v zsh >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends zsh >/dev/null
fi
