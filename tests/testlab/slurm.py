"""A real single-node Slurm 22.05 cluster on loopback, for the integration tests.

Two variants share this code:
- ``accounting=True``: munged + MariaDB + slurmdbd + slurmctld + slurmd, so ``sacct`` works.
- ``accounting=False``: munged + slurmctld + slurmd with ``accounting_storage/none`` (what
  many small sites run); ``sacct`` fails and the scheduler must fall back to ``scontrol``.
  It runs in a network namespace of its own (only ``lo`` inside), so it can use the same
  Slurm ports (6817/6818) as the accounting variant without clashing; its clients are run
  through ``nsenter --net``.

Fake GPUs: gres.conf names char devices made with mknod (195:0 for NVIDIA, 226:128 for AMD),
so ``--gres=gpu:nvidia:1`` really sets ``CUDA_VISIBLE_DEVICES``. Every wait has a deadline;
``stop`` ends only the daemons this process started, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CTLD_PORT, SLURMD_PORT, DBD_PORT = 6817, 6818, 6819
MYSQL_PORT = 3306
NETNS = "wf-slurm-noacct"
DAEMONS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")


class LabError(RuntimeError):
    """The lab cluster could not be started (the fixture turns this into lab_unavailable)."""


def lab_root() -> Path:
    """All Slurm lab state: ${WF_LAB:-/tmp/wf-lab}/slurm/{cluster,noacct,login,shared}."""
    return Path(os.environ.get("WF_LAB", "/tmp/wf-lab")) / "slurm"


def missing_binaries(accounting: bool = True) -> list[str]:
    need = ["slurmctld", "slurmd", "sbatch", "squeue", "sacct", "munged", "mungekey"]
    if accounting:
        need += ["slurmdbd", "mariadbd", "mariadb-install-db", "mariadb"]
    else:
        need += ["nsenter", "ip"]
    return [b for b in need if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


@dataclass
class SlurmLab:
    """Paths and processes of one lab cluster; ``started`` lists what *we* launched."""

    base: Path
    accounting: bool
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    started: list[tuple[str, int]] = field(default_factory=list)
    borrowed: set[str] = field(default_factory=set)  # reused daemons we stopped for a test

    @property
    def conf(self) -> Path:
        return self.base / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.base / "munge" / "run" / "munge.socket.2"

    @property
    def netns(self) -> str | None:
        return None if self.accounting else NETNS

    def client_prefix(self) -> list[str]:
        """argv prefix that runs a Slurm client against this cluster (env + namespace)."""
        prefix = ["env", f"SLURM_CONF={self.conf}"]
        if self.netns:
            prefix = ["nsenter", f"--net=/run/netns/{self.netns}", *prefix]
        return prefix

    def client_env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, timeout: float = 20,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client (squeue, sacct, scontrol, ...) against this cluster."""
        return subprocess.run(
            [*self.client_prefix(), *argv], capture_output=True, text=True,
            timeout=timeout, check=check, stdin=subprocess.DEVNULL,
        )

    def pidfile(self, daemon: str) -> Path:
        return {
            "slurmctld": self.base / "run" / "slurmctld.pid",
            "slurmd": self.base / "run" / "slurmd.pid",
            "slurmdbd": self.base / "run" / "slurmdbd.pid",
            "munged": self.base / "munge" / "run" / "munged.pid",
            "mariadbd": self.base / "mysql" / "run" / "mysqld.pid",
        }[daemon]

    def alive(self, daemon: str) -> int | None:
        return _alive_pidfile(self.pidfile(daemon))


def _alive_pidfile(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return None if stat.rsplit(")", 1)[1].split()[0] == "Z" else pid


def _wait(what: str, predicate, deadline_s: float, interval: float = 0.25,
          log: Path | None = None, died=None):
    """Poll ``predicate`` until true; fail at the deadline, or at once when ``died()``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if predicate():
            return
        if died is not None and died():
            deadline_s = 0
            break
        time.sleep(interval)
    tail = ""
    if log and log.exists():
        tail = " | " + " / ".join(log.read_text(errors="replace").splitlines()[-5:])
    raise LabError(f"timed out after {deadline_s:.0f}s waiting for {what}{tail}")


def _sh(argv: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    if "input" not in kw:
        kw["stdin"] = subprocess.DEVNULL
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def _port_open(port: int, netns: str | None = None) -> bool:
    if netns:
        probe = ["nsenter", f"--net=/run/netns/{netns}", "bash", "-c",
                 f"exec 3<>/dev/tcp/127.0.0.1/{port}"]
        try:
            return _sh(probe, timeout=3).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return min(int(int(line.split()[1]) / 1024 * 0.8), 16000)
    return 2000


def write_configs(lab: SlurmLab, cpus: int) -> None:
    b, msock = lab.base, lab.munge_socket
    if lab.accounting:
        acct = (
            "AccountingStorageType=accounting_storage/slurmdbd\n"
            "AccountingStorageTRES=gres/gpu,gres/gpu:nvidia,gres/gpu:amd\n"
            f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={DBD_PORT}\n"
            f"AccountingStoragePass={msock}\n"
        )
    else:
        acct = "AccountingStorageType=accounting_storage/none\n"
    (b / "etc" / "slurm.conf").write_text(f"""\
# generated by tests/testlab/slurm.py - single node, loopback only
ClusterName={"testlab" if lab.accounting else "testlabna"}
SlurmctldHost={lab.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={msock}
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
SlurmctldPort={CTLD_PORT}
SlurmdPort={SLURMD_PORT}
StateSaveLocation={b}/state/ctld
SlurmdSpoolDir={b}/state/d
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
SchedulerParameters=batch_sched_delay=0,sched_interval=2
ReturnToService=2
MinJobAge=300
KillWait=2
OverTimeLimit=0
InactiveLimit=0
DefMemPerCPU=100
GresTypes=gpu
{acct}JobCompType=jobcomp/filetxt
JobCompLoc={b}/log/jobcomp.txt
NodeName={lab.node} NodeAddr=127.0.0.1 NodeHostname={lab.node} CPUs={cpus} \
RealMemory={_mem_mb()} Gres=gpu:nvidia:1,gpu:amd:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=short Nodes=ALL Default=NO MaxTime=5 State=UP
""")
    (b / "etc" / "gres.conf").write_text(
        f"AutoDetect=off\nName=gpu Type=nvidia File={b}/dev/nvidia0\n"
        f"Name=gpu Type=amd File={b}/dev/renderD128\n"
    )
    if lab.accounting:
        dbd = b / "etc" / "slurmdbd.conf"
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={msock}
DbdHost={lab.node}
DbdAddr=127.0.0.1
DbdPort={DBD_PORT}
SlurmUser=root
DebugLevel=info
LogFile={b}/log/slurmdbd.log
PidFile={b}/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={MYSQL_PORT}
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)
        (b / "etc" / "my.cnf").write_text(f"""\
[mysqld]
datadir={b}/mysql/data
socket={b}/mysql/run/mysqld.sock
pid-file={b}/mysql/run/mysqld.pid
log-error={b}/mysql/log/mysqld.err
port={MYSQL_PORT}
bind-address=127.0.0.1
skip-name-resolve
user=mysql
innodb_buffer_pool_size=64M
innodb_log_file_size=32M
innodb_lock_wait_timeout=900
[client]
socket={b}/mysql/run/mysqld.sock
""")


def _spawn(lab: SlurmLab, daemon: str, argv: list[str], *, netns: bool = False) -> None:
    """Start a daemon that daemonizes itself (or a setsid'd foreground one); record its PID."""
    if netns and lab.netns:
        argv = ["nsenter", f"--net=/run/netns/{lab.netns}", *argv]
    log = lab.base / "log" / f"{daemon}.start.log"
    with open(log, "ab") as out:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                         start_new_session=True, env=lab.client_env())
    _wait(f"{daemon} pid file", lambda: lab.alive(daemon) is not None, 30, log=log)
    lab.started.append((daemon, lab.alive(daemon)))


def _ensure_netns() -> None:
    """The namespace of the no-accounting cluster: ``lo`` plus a veth pair whose both ends
    stay inside it. glibc's AI_ADDRCONFIG ignores loopback, so without one non-loopback IPv4
    address in the namespace slurmctld cannot resolve its own host name; the pair has no
    peer outside, so nothing can leave the namespace. IPv6 is off on it (no DAD/RS chatter)."""
    ns = ["ip", "-n", NETNS]
    if not Path(f"/run/netns/{NETNS}").exists():
        _sh(["ip", "netns", "add", NETNS], timeout=10).check_returncode()
    _sh([*ns, "link", "set", "lo", "up"], timeout=10).check_returncode()
    if _sh([*ns, "link", "show", "wfna0"], timeout=10).returncode != 0:
        _sh([*ns, "link", "add", "wfna0", "type", "veth", "peer", "name", "wfna1"],
            timeout=10).check_returncode()
        for dev in ("wfna0", "wfna1"):
            _sh(["ip", "netns", "exec", NETNS, "sysctl", "-qw",
                 f"net.ipv6.conf.{dev}.disable_ipv6=1"], timeout=10)
        _sh([*ns, "addr", "add", "10.231.99.1/32", "dev", "wfna0"], timeout=10).check_returncode()
        for dev in ("wfna0", "wfna1"):
            _sh([*ns, "link", "set", dev, "up"], timeout=10).check_returncode()


def remove_netns() -> None:
    """Delete the no-accounting namespace (its veth pair goes with it)."""
    if Path(f"/run/netns/{NETNS}").exists():
        _sh(["ip", "netns", "del", NETNS], timeout=10)


def _hosts_ok(node: str) -> bool:
    try:
        return socket.gethostbyname(node).startswith("127.")  # /etc/hosts: no DNS traffic
    except OSError:
        return False


_IN_USE: dict[tuple[Path, bool], list] = {}  # (base, accounting) -> [SlurmLab, users]


def start(base: Path | None = None, *, accounting: bool = True, cpus: int | None = None,
          deadline_s: float = 90) -> SlurmLab:
    """Start (or reuse) the lab cluster; returns it with ``started`` naming what we launched."""
    miss = missing_binaries(accounting)
    if miss:
        raise LabError(f"missing Slurm lab binaries: {', '.join(miss)} "
                       "(run .ci/setup.d/50-slurm.sh)")
    base = base or lab_root() / ("cluster" if accounting else "noacct")
    held = _IN_USE.get((base, accounting))
    # one object per cluster in this process: fixtures that import the session fixture into
    # other modules share it, so whatever one of them starts or restarts, the last stops
    lab = held[0] if held else SlurmLab(base=base, accounting=accounting)
    if not _hosts_ok(lab.node):
        raise LabError(f"host name {lab.node} must resolve to 127.x via /etc/hosts")
    if accounting:  # the session's clients talk to this one; the other variant uses a prefix
        os.environ["SLURM_CONF"] = str(lab.conf)
    b = base
    for d in ("etc", "state/ctld", "state/d", "log", "run", "dev", "munge/etc", "munge/lib",
              "munge/log", "munge/run", "mysql/data", "mysql/run", "mysql/log"):
        (b / d).mkdir(parents=True, exist_ok=True)
    b.chmod(0o755)
    b.parent.chmod(0o755)
    for name, major, minor in (("nvidia0", 195, 0), ("renderD128", 226, 128)):
        dev = b / "dev" / name
        if not dev.is_char_device():
            dev.unlink(missing_ok=True)
            os.mknod(dev, 0o666 | 0o020000, os.makedev(major, minor))
    write_configs(lab, cpus or max(4, os.cpu_count() or 2))
    if not accounting:
        _ensure_netns()

    # munge: the Slurm daemons and clients authenticate through this socket
    key = b / "munge" / "etc" / "munge.key"
    if not key.exists():
        _sh(["mungekey", "--create", f"--keyfile={key}"]).check_returncode()
    _sh(["chown", "-R", "munge:munge", str(b / "munge")]).check_returncode()
    for d, mode in (("etc", 0o700), ("lib", 0o700), ("log", 0o700), ("run", 0o755)):
        (b / "munge" / d).chmod(mode)
    (b / "munge").chmod(0o755)
    key.chmod(0o400)
    if lab.alive("munged") is None:
        _spawn(lab, "munged", [
            "runuser", "-u", "munge", "--", "munged", f"--socket={lab.munge_socket}",
            f"--key-file={key}", f"--log-file={b}/munge/log/munged.log",
            f"--pid-file={lab.pidfile('munged')}", f"--seed-file={b}/munge/lib/munged.seed",
            "--origin=127.0.0.1"])

    def munge_ok() -> bool:
        enc = _sh(["munge", "-S", str(lab.munge_socket), "-n"], timeout=5)
        return enc.returncode == 0 and _sh(
            ["unmunge", "-S", str(lab.munge_socket)], input=enc.stdout, timeout=5).returncode == 0

    _wait("munged", munge_ok, 15)

    if accounting:
        _start_mariadb_dbd(lab, deadline_s)

    if lab.alive("slurmctld") is None:
        _spawn(lab, "slurmctld", ["slurmctld", "-f", str(lab.conf)], netns=True)
    _wait("slurmctld port", lambda: _port_open(CTLD_PORT, lab.netns), deadline_s,
          log=b / "log" / "slurmctld.log", died=lambda: lab.alive("slurmctld") is None)
    jobcomp = b / "log" / "jobcomp.txt"
    jobcomp.touch()
    jobcomp.chmod(0o666)
    if lab.alive("slurmd") is None:
        _spawn(lab, "slurmd", ["slurmd", "-f", str(lab.conf), "-N", lab.node], netns=True)

    def node_idle() -> bool:
        try:
            r = lab.run("sinfo", "-h", "-n", lab.node, "-o", "%t", timeout=5, check=False)
        except subprocess.TimeoutExpired:
            return False
        return r.stdout.strip() in ("idle", "mix", "alloc")

    _wait("node idle", node_idle, deadline_s, interval=0.5, log=b / "log" / "slurmd.log",
          died=lambda: lab.alive("slurmd") is None)
    if held:
        held[1] += 1
    else:
        _IN_USE[(base, accounting)] = [lab, 1]
    return lab


def _start_mariadb_dbd(lab: SlurmLab, deadline_s: float) -> None:
    b, mycnf = lab.base, lab.base / "etc" / "my.cnf"
    _sh(["chown", "-R", "mysql:mysql", str(b / "mysql")]).check_returncode()
    if not (b / "mysql" / "data" / "mysql").exists():
        r = _sh(["mariadb-install-db", "--no-defaults", f"--datadir={b}/mysql/data",
                 "--user=mysql", "--auth-root-authentication-method=socket", "--skip-test-db"],
                timeout=180)
        if r.returncode != 0:
            raise LabError(f"mariadb-install-db failed: {r.stderr.strip()[-300:]}")
    if lab.alive("mariadbd") is None:
        _spawn(lab, "mariadbd", ["mariadbd", f"--defaults-file={mycnf}"])

    def sql(stmt: str) -> subprocess.CompletedProcess:
        return _sh(["mariadb", f"--defaults-file={mycnf}", "-uroot", "-e", stmt], timeout=10)

    _wait("mariadb", lambda: sql("select 1").returncode == 0, deadline_s,
          interval=0.5, log=b / "mysql" / "log" / "mysqld.err")
    r = sql("CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';"
            " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
    if r.returncode != 0:
        raise LabError(f"mariadb grant failed: {r.stderr.strip()}")
    if lab.alive("slurmdbd") is None:
        _spawn(lab, "slurmdbd", ["slurmdbd"])  # finds slurmdbd.conf beside $SLURM_CONF
    _wait("slurmdbd port", lambda: _port_open(DBD_PORT), deadline_s, log=b / "log" / "slurmdbd.log",
          died=lambda: lab.alive("slurmdbd") is None)


def stop_pid(pid: int, deadline_s: float = 20) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if _alive_pid(pid) is False:
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive_pid(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop(lab: SlurmLab) -> None:
    """Stop, in reverse start order, only the daemons this lab object started; a cluster
    ``start`` handed out more than once is stopped by the last ``stop``."""
    held = _IN_USE.get((lab.base, lab.accounting))
    if held and held[0] is lab:
        held[1] -= 1
        if held[1] > 0:
            return
        del _IN_USE[(lab.base, lab.accounting)]
    for _daemon, pid in reversed(lab.started):
        if pid:
            stop_pid(pid)
    lab.started.clear()


def stop_daemon(lab: SlurmLab, daemon: str) -> int | None:
    """Stop one daemon of the lab (e.g. slurmctld, to test a controller outage); returns its PID."""
    pid = lab.alive(daemon)
    if pid:
        if not any(p == pid for _d, p in lab.started):
            lab.borrowed.add(daemon)  # not ours: restart_daemon hands it back running
        stop_pid(pid)
        lab.started[:] = [(d, p) for d, p in lab.started if p != pid]
    return pid


def restart_daemon(lab: SlurmLab, daemon: str, deadline_s: float = 60) -> None:
    """Start slurmctld or slurmdbd again after ``stop_daemon`` and wait until it answers."""
    assert daemon in ("slurmctld", "slurmdbd")
    argv = ["slurmctld", "-f", str(lab.conf)] if daemon == "slurmctld" else ["slurmdbd"]
    port = CTLD_PORT if daemon == "slurmctld" else DBD_PORT
    if lab.alive(daemon) is None:
        _spawn(lab, daemon, argv, netns=daemon == "slurmctld")
        if daemon in lab.borrowed:  # it belonged to a reused cluster: leave it running
            lab.borrowed.discard(daemon)
            lab.started[:] = [(d, p) for d, p in lab.started if d != daemon]
    _wait(f"{daemon} port", lambda: _port_open(port, lab.netns), deadline_s)
    probe = ("sinfo", "-h") if daemon == "slurmctld" else ("sacct", "-n", "-X", "-j", "1")
    _wait(f"{daemon} answers", lambda: lab.run(*probe, timeout=10, check=False)
          .returncode == 0, deadline_s)


# -- a loopback sshd as the Slurm login node ------------------------------------------------------
# Our allocation is 127.0.0.31:2231; other lab code on a shared machine may hold it for a while
# (the SSH layer's benchmark boxes span 127.0.0.30-39), so the next free candidate is used.
# WF_SLURM_LOGIN=host:port pins one.
LOGIN_CANDIDATES = (("127.0.0.31", 2231), ("127.0.0.39", 2239), ("127.0.0.29", 2229))
LOGIN_ADDR, LOGIN_PORT = LOGIN_CANDIDATES[0]
# Jobs go in as an ordinary user, as on a real cluster. (root's ~/.bashrc on these machines runs
# `pyenv init`, which bash sources for every ssh command and which costs ~130 ms per call.)
LOGIN_USER = "wfslurm"


def ensure_login_user() -> str:
    """The lab's submitting user (created once; /etc/skel's .bashrc returns at once when not
    interactive)."""
    if _sh(["id", LOGIN_USER], timeout=10).returncode != 0:
        _sh(["useradd", "-m", "-s", "/bin/bash", LOGIN_USER], timeout=30).check_returncode()
    _sh(["usermod", "-p", "*", LOGIN_USER], timeout=30).check_returncode()  # unlock, no password
    return LOGIN_USER


def shared_work_dir(shared: Path) -> str:
    """The cluster's "shared storage": ``<shared>/users`` is sticky and world-writable like
    /scratch, and each submitting user's work dir is ``<shared>/users/$USER/warpforge`` (made
    private by the submit driver). Returns that work_dir setting, $USER unexpanded."""
    users = shared / "users"
    users.mkdir(parents=True, exist_ok=True)
    shared.chmod(0o755)
    users.chmod(0o1777)
    return f"{users}/$USER/warpforge"


def shared_with_payload(payload: Path) -> Path:
    """The lab's shared storage with its work dir and ``bin/fake_snakegrinder.sh`` (a copy of
    ``payload``), as the benchmarks' clusters use it."""
    shared = lab_root() / "shared"
    shared_work_dir(shared)
    (shared / "bin").mkdir(parents=True, exist_ok=True)
    (shared / "bin").chmod(0o755)
    (shared / "bin" / "fake_snakegrinder.sh").write_bytes(payload.read_bytes())
    (shared / "bin" / "fake_snakegrinder.sh").chmod(0o755)
    return shared


def user_work_dir(shared: Path, user: str) -> Path:
    return shared / "users" / user / "warpforge"


@dataclass
class LoginNode:
    """A real OpenSSH sshd on loopback; the client side gets its own key pair and a
    known_hosts file holding exactly this host key (strict checking)."""

    dir: Path
    host: str = LOGIN_ADDR
    port: int = LOGIN_PORT
    user: str = LOGIN_USER
    pid: int | None = None          # set only when this object started sshd

    @property
    def identity_file(self) -> str:
        return str(self.dir / "client")

    @property
    def known_hosts_file(self) -> str:
        return str(self.dir / "known_hosts")


def _banner(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _pick_login_address() -> tuple[str, int]:
    pinned = os.environ.get("WF_SLURM_LOGIN")
    candidates = LOGIN_CANDIDATES
    if pinned:
        host, _, port = pinned.rpartition(":")
        candidates = ((host, int(port)),)
    for host, port in candidates:
        if not host.startswith("127."):
            raise LabError(f"WF_SLURM_LOGIN must be a loopback address, got {host}")
        try:
            with socket.socket() as s:
                s.bind((host, port))  # free now (sshd sets SO_REUSEADDR, so TIME_WAIT is fine)
                return host, port
        except OSError:
            continue
    raise LabError(f"no free login-node address among {candidates}")


def start_login_node(slurm_conf: Path, deadline_s: float = 15) -> LoginNode:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or not shutil.which("ssh"):
        raise LabError("OpenSSH server/client not installed (.ci/setup.d/50-slurm.sh)")
    d = lab_root() / "login"
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o755)
    node = LoginNode(dir=d, user=ensure_login_user())
    running = _alive_pidfile(d / "sshd.pid") is not None and (d / "sshd_config").exists()
    if running:  # ours from an earlier run: keep its address
        conf = dict(ln.split(" ", 1) for ln in (d / "sshd_config").read_text().splitlines()
                    if " " in ln)
        node.host, node.port = conf["ListenAddress"], int(conf["Port"])
    else:
        node.host, node.port = _pick_login_address()
    for key in ("host_ed25519", "client"):
        if not (d / key).exists():
            _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"wf-{key}", "-f",
                 str(d / key)], timeout=30).check_returncode()
    (d / "authorized_keys").write_text((d / "client.pub").read_text())
    (d / "authorized_keys").chmod(0o644)
    host_pub = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[{node.host}]:{node.port} {host_pub}\n")
    (d / "sshd_config").write_text(f"""\
Port {node.port}
ListenAddress {node.host}
HostKey {d}/host_ed25519
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin no
AllowUsers {node.user}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
SetEnv SLURM_CONF={slurm_conf}
LogLevel ERROR
""")
    if running:
        return node
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    check = _sh([sshd, "-t", "-f", str(d / "sshd_config")], timeout=30)
    if check.returncode != 0:
        raise LabError(f"sshd config rejected: {check.stderr.strip()}")
    proc = subprocess.Popen([sshd, "-D", "-E", str(d / "sshd.log"), "-f", str(d / "sshd_config")],
                            stdin=subprocess.DEVNULL, start_new_session=True)
    node.pid = proc.pid
    try:
        _wait(f"sshd on {node.host}:{node.port}", lambda: _banner(node.host, node.port),
              deadline_s, interval=0.05, log=d / "sshd.log", died=lambda: proc.poll() is not None)
    except LabError:
        stop_login_node(node)
        raise
    return node


def stop_login_node(node: LoginNode) -> None:
    """Stop sshd if this object started it, with its session children."""
    if node.pid is None:
        return
    try:
        children = [int(p) for p in
                    Path(f"/proc/{node.pid}/task/{node.pid}/children").read_text().split()]
    except OSError:
        children = []
    for pid in children:
        stop_pid(pid, 5)
    stop_pid(node.pid)
    try:
        os.waitpid(node.pid, 0)
    except ChildProcessError:
        pass
    node.pid = None


def login_inventory(path: Path, shared: Path, login: dict) -> Path:
    """An inventory with one Slurm instance, ``hpc``, reached through the login node
    ``login`` (the dict the tests' ``login_node`` fixture yields)."""
    from tests.testlab.builders import inventory

    return inventory(path, {"hpc": {
        "type": "slurm", "work_dir": shared_work_dir(shared), "runtime": "none",
        "partition": "debug", "snakegrinder": str(shared / "bin" / "fake_snakegrinder.sh"),
        "command_timeout": 20, "login_host": login["host"], "login_port": login["port"],
        "login_user": login["user"], "identity_file": login["identity_file"],
        "known_hosts_file": login["known_hosts_file"]}})
