#!/usr/bin/env bash
# Slurm 22.05 test lab packages: slurmctld/slurmd, munge, slurmdbd and MariaDB for real
# accounting (sacct), OpenSSH for the loopback login node, iproute2/util-linux for the
# network namespace of the accounting-disabled variant. Installs only; the test
# fixtures (tests/testlab/slurm.py) configure and start the daemons by hand (no systemd).
# Idempotent; other setup scripts may run apt at the same time, hence the lock timeout.
set -euo pipefail
need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurm-wlm)
command -v munged    >/dev/null 2>&1 || need+=(munge)
command -v slurmdbd  >/dev/null 2>&1 || need+=(slurmdbd)
command -v mariadbd  >/dev/null 2>&1 || need+=(mariadb-server)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh       >/dev/null 2>&1 || need+=(openssh-client)
command -v ip        >/dev/null 2>&1 || need+=(iproute2)     # netns of the no-accounting variant
command -v nsenter   >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -q
  # policy-rc.d (exit 101) on these machines keeps apt from starting the services
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}"
fi
# Slurm clients and daemons need the node name to resolve to loopback
node=$(hostname -s)
getent hosts "$node" | grep -q '^127\.' || echo "127.0.1.1 $node" >> /etc/hosts
mkdir -p /run/sshd && chmod 755 /run/sshd
# no Slurm client here: without SLURM_CONF every client does a DNS SRV lookup (off loopback)
echo "slurm lab packages ready: $(dpkg-query -W -f='${Version}' slurm-client 2>/dev/null || echo '?')"
