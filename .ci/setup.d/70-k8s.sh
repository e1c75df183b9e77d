#!/usr/bin/env bash
# The Kubernetes test lab's tools, built once per machine into a cache OUTSIDE the repository
# and reused by every later run (a no-op when they exist):
#   $WF_K8S_CACHE (default $WF_LAB_TOOLS/k8s = /opt/wf-lab-tools/k8s): kubelet, kube-apiserver,
#     kube-controller-manager, kube-scheduler, kubectl, etcd built from Debian bookworm's
#     `kubernetes` source package (v1.20.2) with Debian's golang-1.19 - 10-15 minutes cold on
#     2 cores - plus the pause binary of the pod sandbox image;
#   $WF_ROOTFS_CACHE/python3.11 (default /opt/wf-lab-tools/rootfs): a Debian minbase rootfs
#     with Python 3.11 (debootstrap, ~40 s), the base of the test payload image.
# Installs only: tests/testlab/k8s.py starts (and stops) the cluster from the test session.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WF_K8S_CACHE=${WF_K8S_CACHE:-${WF_LAB_TOOLS:-/opt/wf-lab-tools}/k8s}
export WF_ROOTFS_CACHE=${WF_ROOTFS_CACHE:-${WF_LAB_TOOLS:-/opt/wf-lab-tools}/rootfs}
need=()
command -v dockerd >/dev/null 2>&1 && [ -x /usr/bin/docker ] || need+=(docker.io)
[ -x /usr/sbin/runc ] || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[ -x /usr/sbin/ip ] || need+=(iproute2)
[ -x /usr/bin/nsenter ] || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
fi
t0=$(date +%s)
bash tests/testlab/k8s-node.sh build
bash tests/testlab/k8s-node.sh rootfs
echo "kubernetes lab tools ready in $(( $(date +%s) - t0 )) s: $("$WF_K8S_CACHE/bin/kubectl" version --client --short 2>/dev/null || echo '?') in $WF_K8S_CACHE/bin, rootfs $WF_ROOTFS_CACHE/python3.11"
