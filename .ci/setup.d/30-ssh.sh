#!/usr/bin/env bash
# The SSH "GPU box" lab: OpenSSH server + client, rsync (the benchmark's peer and a fallback),
# util-linux (unshare/mount for the per-box /opt overlay). Idempotent; the boxes themselves are
# started and stopped by the test suite's session fixtures (tests/integration/lab/conftest.py).
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd && chmod 755 /run/sshd   # sshd's privilege-separation dir (missing in containers)
mkdir -p /opt                               # each box overlays its own layer on /opt
# Debian's package may have started a system sshd on port 22 under an init; the lab never uses it.
