#!/usr/bin/env bash
# git with its daemon (the CI tests serve a bare origin to the sshd boxes with `git daemon` on
# 127.0.0.1) and coreutils' timeout (box-build steps run under it). Install only; idempotent.
set -euo pipefail
need=()
command -v git >/dev/null 2>&1 && [ -x "$(git --exec-path)/git-daemon" ] || need+=(git)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
