#!/usr/bin/env bash
# Container lab packages: Docker engine and Debian's docker client (/usr/bin/docker; BuildKit
# builds need it, a newer client elsewhere on PATH may lack buildx), the distribution registry
# v2 (docker-registry), busybox-static (FROM-scratch test images), squashfs-tools + siftool
# (SIF assembly without apptainer) and debootstrap (the Python 3.11 base rootfs the image
# tests build once and cache). Installs only; the test fixtures (tests/testlab/docker.py)
# start a private dockerd and registry themselves. Idempotent; other setup scripts may run
# apt at the same time, hence the lock timeout.
set -euo pipefail
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v mksquashfs >/dev/null 2>&1 || need+=(squashfs-tools)
command -v siftool >/dev/null 2>&1 || need+=(siftool)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  # policy-rc.d on these machines keeps apt from starting dockerd or the registry service
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
fi
echo "container lab packages ready: docker $(dpkg-query -W -f='${Version}' docker.io 2>/dev/null || echo '?')"

# The Python 3.11 base rootfs for image, SIF and pod tests (the vendors' CUDA/ROCm images cannot
# be pulled here): Debian minbase from the machine's own Debian mirror, built once per machine
# outside the repository (about 40 s, 250 MB). WF_ROOTFS_CACHE moves it.
rootfs=${WF_ROOTFS_CACHE:-/opt/wf-lab-tools/rootfs}/py311-bookworm
if [ ! -x "$rootfs/usr/bin/python3.11" ]; then
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "60-docker: no Debian mirror found in the apt sources" >&2; exit 1; }
  rm -rf "$rootfs.tmp" && mkdir -p "$(dirname "$rootfs")"
  debootstrap --variant=minbase --include=python3.11-minimal,libpython3.11-stdlib \
    bookworm "$rootfs.tmp" "$mirror" >/dev/null
  rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/*
  mv "$rootfs.tmp" "$rootfs"
fi
echo "python 3.11 base rootfs ready: $rootfs"
