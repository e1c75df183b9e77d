#!/usr/bin/env bash
# A real single-node Kubernetes v1.20.2 on loopback ONLY, for the test suite and benchmarks:
# etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kubelet (built-in dockershim)
# against a PRIVATE dockerd (--bridge=none --iptables=false, runc wrapper), a fake CNI plugin
# that gives each pod its own netns with a 127.201.x.y address and no link out, and fake GPUs
# (extended resources on the node status). Pods really run: exit codes, logs, deadlines and
# foreground deletion are the real ones.
#
# usage: k8s-node.sh build | rootfs | up | ready | testimage FILE TAG | down
#   build     the binaries, once, into $WF_K8S_CACHE (default /opt/wf-lab-tools/k8s), from
#             Debian bookworm's `kubernetes` source package with Debian's golang-1.19
#             (10-15 min cold on 2 cores; a no-op when they exist)
#   rootfs    a Debian minbase rootfs with Python 3.11 (debootstrap, ~40 s), once, into
#             $WF_ROOTFS_CACHE/python3.11 (default /opt/wf-lab-tools/rootfs/python3.11)
#   up        dockerd + control plane + kubelet + fake GPUs; node Ready and schedulable
#   testimage the Python rootfs plus FILE as /opt/warpforge/bin/snakegrinder, tagged TAG
#   down      stop what `up` started (by pid file), remove what kubelet left behind
# Run state (certs, tokens, kubeconfigs, etcd data, logs, dockerd) lives under $WF_LAB/k8s
# and $WF_LAB/kd (default WF_LAB=/tmp/wf-lab; short paths for unix sockets).
set -euo pipefail
CACHE=${WF_K8S_CACHE:-${WF_LAB_TOOLS:-/opt/wf-lab-tools}/k8s}
ROOTFS_CACHE=${WF_ROOTFS_CACHE:-${WF_LAB_TOOLS:-/opt/wf-lab-tools}/rootfs}
ROOTFS=$ROOTFS_CACHE/python3.11
L=${WF_LAB:-/tmp/wf-lab}
R=$L/k8s                          # certs, tokens, kubeconfigs, etcd data, logs, pid files
B=$L/kd                           # the private dockerd (short path: unix socket < 108 chars)
BIN=$CACHE/bin
SRC=$CACHE/src/kubernetes-1.20.2
NODE=wf-node
API=https://127.0.0.1:16443
DSOCK=unix://$B/docker.sock
D="/usr/bin/docker -H $DSOCK"
DEAD_PROXY=(HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 http_proxy=http://127.0.0.1:9
            https_proxy=http://127.0.0.1:9 NO_PROXY=localhost,127.0.0.0/8,::1 no_proxy=localhost,127.0.0.0/8,::1)
log() { echo "[$(date +%T)] $*" >&2; }
wait_for() { local n=$1; shift; for _ in $(seq 1 $((n*4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done; echo "timeout: $*" >&2; return 1; }

have_binaries() {
  [ -x $BIN/kubelet ] && [ -x $BIN/kube-scheduler ] && [ -x $BIN/kubectl ] && [ -x $BIN/kube-apiserver ] \
    && [ -x $BIN/kube-controller-manager ] && [ -x $BIN/etcd ] && [ -x $CACHE/pause/rootfs/pause ]
}

apt_uri() {                       # the machine's own Debian mirror
  local u; u=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
  [ -n "$u" ] || u=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "$u"
}

build() {
  have_binaries && return 0
  local K=$CACHE
  mkdir -p $K/apt/lists/partial $K/apt/cache/archives/partial $K/src $K/debs $K/root $K/home
  printf 'deb-src %s bookworm main\n' "$(apt_uri)" > $K/apt/sources.list
  local O="-o Dir::Etc::SourceList=$K/apt/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$K/apt/lists -o Dir::Cache=$K/apt/cache"
  [ -d $SRC ] || { apt-get $O update -qq && (cd $K/src && apt-get $O source --download-only kubernetes >/dev/null && tar xzf kubernetes_*.orig.tar.gz); }
  apt-cache show golang-1.19-go >/dev/null 2>&1 || apt-get -o DPkg::Lock::Timeout=600 update -qq
  [ -x $K/root/usr/lib/go-1.19/bin/go ] && [ -x $K/root/usr/bin/etcd ] || (cd $K/debs && apt-get download golang-1.19-go golang-1.19-src etcd-server etcd-client \
      && for d in *.deb; do dpkg -x $d $K/root; done)
  # The vendored github.com/modern-go/reflect2 v1.0.1 crashes kube-apiserver under Go >= 1.18
  # (SIGSEGV whenever it pretty-prints a map); Debian's 1.0.2 drops in.
  if ! [ -f $SRC/vendor/github.com/modern-go/reflect2/go_above_118.go ]; then
    (cd $K/debs && apt-get download golang-github-modern-go-reflect2-dev && rm -rf $K/reflect2 && dpkg -x golang-github-modern-go-reflect2-dev_*.deb $K/reflect2)
    rm -rf $SRC/vendor/github.com/modern-go/reflect2 && cp -a $K/reflect2/usr/share/gocode/src/github.com/modern-go/reflect2 $SRC/vendor/github.com/modern-go/
    rm -f $SRC/vendor/github.com/modern-go/reflect2/go.mod
  fi
  (cd $SRC && env -u GOPATH -u GO111MODULE GOROOT=$K/root/usr/lib/go-1.19 PATH=$K/root/usr/lib/go-1.19/bin:$PATH \
    CGO_ENABLED=0 GOPROXY=off HOME=$K/home KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean \
    make WHAT="cmd/kubelet cmd/kube-scheduler cmd/kubectl cmd/kube-apiserver cmd/kube-controller-manager")
  mkdir -p $BIN && cp $SRC/_output/bin/{kubelet,kube-scheduler,kubectl,kube-apiserver,kube-controller-manager} $BIN/
  cp $K/root/usr/bin/etcd $K/root/usr/bin/etcdctl $BIN/
  # the pod sandbox ("pause") image binary, from the source tree: no registry needed
  mkdir -p $K/pause/rootfs && gcc -Os -Wall -Werror -static -DVERSION=v3.4-wf -o $K/pause/rootfs/pause $SRC/build/pause/linux/pause.c \
    && strip $K/pause/rootfs/pause
}

rootfs() {                        # Debian minbase + Python 3.11; shared by path with other lab images
  [ -f $ROOTFS/.complete ] && return 0
  mkdir -p $ROOTFS_CACHE
  exec 9>$ROOTFS.lock; flock 9
  [ -f $ROOTFS/.complete ] && return 0
  rm -rf $ROOTFS.partial
  debootstrap --variant=minbase --include=python3.11-minimal,libpython3.11-stdlib bookworm $ROOTFS.partial "$(apt_uri)" >$ROOTFS_CACHE/debootstrap.log 2>&1 \
    || { tail -5 $ROOTFS_CACHE/debootstrap.log >&2; return 1; }
  rm -rf $ROOTFS.partial/var/cache/apt/archives/*.deb
  touch $ROOTFS.partial/.complete && rm -rf $ROOTFS && mv $ROOTFS.partial $ROOTFS
}

docker_up() {
  if [ -S $B/docker.sock ] && $D info >/dev/null 2>&1; then return 0; fi
  mkdir -p $B/data $B/exec
  # root here lacks CAP_SYS_RESOURCE: runc cannot set the negative oom_score_adj dockershim asks
  # for the sandbox, so the wrapper clamps it to 0 in the bundle's config.json
  cat >$B/runc-wrap <<'EOW'
#!/bin/sh
prev=
for a in "$@"; do
  case "$prev" in --bundle|-b) b=$a ;; esac
  case "$a" in --bundle=*) b=${a#--bundle=} ;; esac
  prev=$a
done
[ -n "$b" ] && [ -f "$b/config.json" ] && sed -i -E 's/"oomScoreAdj": *-[0-9]+/"oomScoreAdj":0/' "$b/config.json"
exec /usr/sbin/runc "$@"
EOW
  chmod 755 $B/runc-wrap
  env "${DEAD_PROXY[@]}" nohup dockerd --storage-driver=overlay2 --bridge=none --iptables=false --ip6tables=false \
    --ip-forward=false --ip-masq=false --host $DSOCK --data-root $B/data \
    --exec-root $B/exec --pidfile $B/docker.pid --add-runtime wf-runc=$B/runc-wrap --default-runtime wf-runc \
    </dev/null >$B/dockerd.log 2>&1 &
  wait_for 30 $D info
  $D image inspect k8s.gcr.io/pause:3.2 >/dev/null 2>&1 || \
    tar -C $CACHE/pause/rootfs -c pause | $D import -c 'ENTRYPOINT ["/pause"]' - k8s.gcr.io/pause:3.2 >/dev/null
}

start() {                         # start NAME CMD... : detached, pid file, log file
  local n=$1; shift; nohup "$@" </dev/null >$R/logs/$n.log 2>&1 & echo $! >$R/$n.pid
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

kubeconfig() {                    # kubeconfig FILE TOKEN
  cat >$1 <<EOK
apiVersion: v1
kind: Config
clusters: [{name: wf, cluster: {server: "$API", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: "$2"}}]
contexts: [{name: wf, context: {cluster: wf, user: u, namespace: warpforge}}]
current-context: wf
EOK
  chmod 600 $1
}

control_plane_up() {
  mkdir -p $R/certs $R/etcd $R/logs $R/kubelet
  chmod 700 $R
  if [ ! -s $R/tokens.csv ]; then
    openssl genrsa -out $R/sa.key 2048 2>/dev/null && openssl rsa -in $R/sa.key -pubout -out $R/sa.pub 2>/dev/null
    local adm node nobody
    adm=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n'); node=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    nobody=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    # kubelet in system:masters too (no Node authorizer needed for a test node); "nobody" is
    # authenticated but has no RBAC rights at all (the forbidden-token tests)
    printf '%s,admin,admin,"system:masters"\n%s,system:node:%s,%s,"system:nodes,system:masters"\n%s,nobody,nobody\n' \
      $adm $node $NODE $NODE $nobody >$R/tokens.csv
    chmod 600 $R/tokens.csv
    kubeconfig $R/kubeconfig $adm; kubeconfig $R/kubelet.kubeconfig $node; kubeconfig $R/nobody.kubeconfig $nobody
  fi
  alive $R/etcd.pid || start etcd $BIN/etcd --name wf --data-dir $R/etcd \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster wf=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810
  wait_for 30 curl -fsS --noproxy '*' http://127.0.0.1:23790/health
  # --kubelet-preferred-address-types=InternalIP: logs/exec dial the node by its (patched) IP,
  # never by a host name
  alive $R/kube-apiserver.pid || start kube-apiserver $BIN/kube-apiserver \
    --etcd-servers=http://127.0.0.1:23790 \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port=16443 --insecure-port=0 \
    --cert-dir=$R/certs --token-auth-file=$R/tokens.csv --authorization-mode=RBAC --anonymous-auth=false \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file=$R/sa.pub --service-account-signing-key-file=$R/sa.key \
    --service-cluster-ip-range=10.96.0.0/24 \
    --kubelet-preferred-address-types=InternalIP \
    --feature-gates=TTLAfterFinished=true \
    --disable-admission-plugins=ServiceAccount \
    --profiling=false --v=1
  wait_for 60 kc get --raw /readyz
  # nodelifecycle removes the not-ready taint once the node is Ready; no serving ports at all
  alive $R/kube-controller-manager.pid || start kube-controller-manager $BIN/kube-controller-manager --kubeconfig=$R/kubeconfig \
    --controllers=job,ttl-after-finished,garbagecollector,namespace,podgc,nodelifecycle \
    --feature-gates=TTLAfterFinished=true --leader-elect=false --use-service-account-credentials=false \
    --bind-address=127.0.0.1 --port=0 --secure-port=0 --v=1
  alive $R/kube-scheduler.pid || start kube-scheduler $BIN/kube-scheduler --kubeconfig=$R/kubeconfig --leader-elect=false \
    --bind-address=127.0.0.1 --address=127.0.0.1 --port=0 --secure-port=0 --v=1
}

cni_setup() {
  # kubelet v1.20 kills every non-hostNetwork pod whose sandbox has no IP. This plugin puts a
  # port-less bridge "eth0" with a 127.201.x.y/32 address into the sandbox's own netns: the
  # pod has an IP and no way out (no veth to the host, no routes, no iptables).
  mkdir -p $R/cni/bin $R/cni/conf $R/cni/cache
  cat >$R/cni/bin/wf-cni <<'EOC'
#!/bin/sh
cat >/dev/null
N="/usr/bin/nsenter --net=$CNI_NETNS --"; ST=${WF_CNI_STATE:-/tmp/wf-cni-state}
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"0.4.0","supportedVersions":["0.2.0","0.3.0","0.3.1","0.4.0"]}' ;;
ADD)
  if [ "${0##*/}" = loopback ]; then $N /usr/sbin/ip link set lo up; echo '{"cniVersion":"0.2.0","ip4":{"ip":"127.0.0.1/8"}}'; exit 0; fi
  n=$( (flock 9; n=$(( $(cat $ST 2>/dev/null || echo 0) + 1 )); echo $n >$ST; echo $n) 9>>$ST.lock )
  ip=127.201.$(( n / 250 % 250 )).$(( n % 250 + 1 ))
  $N /usr/sbin/ip link add "$CNI_IFNAME" type bridge && $N /usr/sbin/ip addr add $ip/32 dev "$CNI_IFNAME" scope global \
    && $N /usr/sbin/ip link set "$CNI_IFNAME" up || { echo '{"code":11,"msg":"wf-cni: ip failed"}'; exit 1; }
  echo '{"cniVersion":"0.3.1","interfaces":[{"name":"'$CNI_IFNAME'","sandbox":"'$CNI_NETNS'"}],"ips":[{"version":"4","address":"'$ip'/32","interface":0}],"dns":{}}' ;;
*) ;;
esac
EOC
  chmod 755 $R/cni/bin/wf-cni; ln -sf wf-cni $R/cni/bin/loopback
  echo '{"cniVersion":"0.3.1","name":"wf-lo","type":"wf-cni"}' >$R/cni/conf/10-wf.conf
}

kubelet_up() {
  mkdir -p $R/kubelet $R/dockershim
  cni_setup
  # AWS_EC2_METADATA_DISABLED + dead proxies: kubelet's in-tree credential providers must not
  # try the link-local metadata address or anything beyond loopback
  alive $R/kubelet.pid || (export WF_CNI_STATE=$R/cni/ipcount AWS_EC2_METADATA_DISABLED=true "${DEAD_PROXY[@]}"
  start kubelet $BIN/kubelet --kubeconfig=$R/kubelet.kubeconfig \
    --container-runtime=docker --docker-endpoint=$DSOCK --docker=$DSOCK \
    --container-runtime-endpoint=unix://$R/dockershim.sock --image-service-endpoint=unix://$R/dockershim.sock \
    --experimental-dockershim-root-directory=$R/dockershim \
    --pod-infra-container-image=k8s.gcr.io/pause:3.2 \
    --root-dir=$R/kubelet --cert-dir=$R/kubelet/pki --seccomp-profile-root=$R/kubelet/seccomp \
    --volume-plugin-dir=$R/kubelet/volume-plugins \
    --hostname-override=$NODE --node-ip=127.0.0.1 --address=127.0.0.1 --port=20250 --read-only-port=0 \
    --healthz-bind-address=127.0.0.1 --healthz-port=20248 \
    --register-node=true --fail-swap-on=false \
    --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= \
    --network-plugin=cni --cni-bin-dir=$R/cni/bin --cni-conf-dir=$R/cni/conf --cni-cache-dir=$R/cni/cache \
    --make-iptables-util-chains=false --resolv-conf= \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard='memory.available<50Mi,nodefs.available<1%,imagefs.available<1%' \
    --node-labels=accelerator=nvidia,warpforge.test/amd=true \
    --v=2)
  wait_for 90 sh -c "$BIN/kubectl --kubeconfig $R/kubeconfig get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  # kubelet refuses a loopback --node-ip and then sets no address at all (but never overwrites
  # one): give the node its InternalIP so the apiserver reaches kubelet for logs
  api PATCH /api/v1/nodes/$NODE/status -H 'Content-Type: application/merge-patch+json' \
    --data '{"status":{"addresses":[{"type":"InternalIP","address":"127.0.0.1"},{"type":"Hostname","address":"'$NODE'"}]}}' >/dev/null
  wait_for 60 sh -c "[ -z \"\$($BIN/kubectl --kubeconfig $R/kubeconfig get node $NODE -o jsonpath='{.spec.taints}')\" ]"
}

kc() { $BIN/kubectl --kubeconfig $R/kubeconfig "$@"; }
# a non-curl User-Agent: the apiserver pretty-prints for curl, a code path that was fragile
api() { local m=$1 p=$2; shift 2; curl --noproxy '*' -A wf-lab -ksS -X $m -H "Authorization: Bearer $(cut -d, -f1 $R/tokens.csv | head -1)" "$@" "$API$p"; }

gpu() {                           # fake GPUs: extended resources on the node status (accounting only)
  api PATCH /api/v1/nodes/$NODE/status -H 'Content-Type: application/json-patch+json' --data \
    '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"1"},{"op":"add","path":"/status/capacity/amd.com~1gpu","value":"1"}]' >/dev/null
  wait_for 30 sh -c "$BIN/kubectl --kubeconfig $R/kubeconfig get node $NODE -o jsonpath='{.status.allocatable.amd\.com/gpu}' | grep -qx 1"
}

ready() {                         # node Ready, untainted, GPUs advertised
  kc get --raw /readyz >/dev/null 2>&1 || return 1
  [ "$(kc get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}/{.status.allocatable.nvidia\.com/gpu}' 2>/dev/null)" = "True//1" ]
}

testimage() {                     # testimage FILE TAG
  local file=$1 tag=$2 ctx=$B/ctx-$$
  $D image inspect wf-test/python:3.11 >/dev/null 2>&1 || tar -C $ROOTFS -c . | $D import - wf-test/python:3.11 >/dev/null
  mkdir -p $ctx && cp "$file" $ctx/snakegrinder
  printf 'FROM wf-test/python:3.11\nENV WF_FAKE_RECORD=out\nCOPY snakegrinder /opt/warpforge/bin/snakegrinder\nRUN ["/bin/chmod","0755","/opt/warpforge/bin/snakegrinder"]\n' >$ctx/Dockerfile
  DOCKER_BUILDKIT=1 $D build -q --network none -t "$tag" $ctx >/dev/null
  rm -rf $ctx
}

testdist() {                      # testdist DIR TAG: the Python rootfs plus a whole dist at /opt/warpforge
  local dist=$1 tag=$2
  $D image inspect wf-test/python:3.11 >/dev/null 2>&1 || tar -C $ROOTFS -c . | $D import - wf-test/python:3.11 >/dev/null
  printf 'FROM wf-test/python:3.11\nCOPY . /opt/warpforge\n' | DOCKER_BUILDKIT=1 $D build -q --network none -t "$tag" -f - "$dist" >/dev/null
}

stop_pid() {                      # TERM, wait up to 20 s, then KILL: only our own pid files
  local f=$1 p; [ -s "$f" ] || return 0; p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p"; for _ in $(seq 1 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p"
  fi
  rm -f "$f"
}

down() {
  stop_pid $R/kubelet.pid
  [ -S $B/docker.sock ] && $D ps -aq --filter label=io.kubernetes.pod.namespace | xargs -r $D rm -f >/dev/null 2>&1 || true
  stop_pid $B/docker.pid
  for n in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid $R/$n.pid; done
  # kubelet v1.20 hard-codes /var/log/pods, /var/log/containers and its device-plugin socket:
  # remove only the links into OUR docker data root, then empty dirs
  local l; for l in /var/log/containers/*.log /var/log/pods/*/*/*.log; do
    [ -L "$l" ] && case "$(readlink -m "$l")" in $B/*) rm -f "$l" ;; esac; done
  [ -d /var/log/pods ] && find /var/log/pods -mindepth 1 -depth -type d -empty -delete
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  grep -oE " ($B|$R)/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}

case "${1:-}" in
  build) build ;;
  rootfs) rootfs ;;
  up) have_binaries || { echo "no Kubernetes binaries in $BIN: run $0 build" >&2; exit 4; }
      T=$(date +%s); docker_up; control_plane_up; kubelet_up; gpu; log "cluster ready in $(( $(date +%s)-T )) s" ;;
  ready) ready ;;
  testimage) [ $# -eq 3 ] || { echo "usage: $0 testimage FILE TAG" >&2; exit 2; }; testimage "$2" "$3" ;;
  testdist) [ $# -eq 3 ] || { echo "usage: $0 testdist DIR TAG" >&2; exit 2; }; testdist "$2" "$3" ;;
  down) down ;;
  *) echo "usage: $0 build|rootfs|up|ready|testimage FILE TAG|testdist DIR TAG|down" >&2; exit 2 ;;
esac
