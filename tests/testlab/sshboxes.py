"""Loopback "GPU boxes": real OpenSSH sshd instances the lab tests and benchmarks drive.

Each box is one ``sshd -D`` on its own 127.0.0.x address and port with its own host key and
PidFile, started under ``unshare --mount --propagation private`` with an overlay on ``/opt``:
inside the box ``/opt`` is the host's ``/opt`` plus a per-box upper dir, so what a push lands on
a box can be read on the host from ``upper/`` and the host's ``/opt`` is never touched.

A "sleeping" box is a box whose sshd is not running. The wake-on-LAN listener (UDP on
127.0.0.1 only) starts a sleeping box's sshd when it receives a valid magic packet for the
box's MAC, so `invoke wake` can be tested end to end without a broadcast ever leaving loopback.

Stdlib only, and runnable as a script (the listener runs as its own process, so the lab
outlives one pytest session and can be reused by the next one or by the benchmarks):

    python tests/testlab/sshboxes.py [--root DIR] [--set tests|bench] setup|start|stop|status
    python tests/testlab/sshboxes.py [--root DIR] wol-listener      # start it in the background

Processes are only ever ended by the PID this module recorded for them.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

SSHD = "/usr/sbin/sshd"
WOL_HOST = "127.0.0.1"
WOL_PORT = 19009
FORGE_USER = "forge"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

# The mount script runs inside the new mount namespace; paths arrive as positional args,
# never pasted into the script text.
_BOX_SCRIPT = (
    'mount -t overlay overlay -o "lowerdir=/opt,upperdir=$1,workdir=$2" /opt'
    ' && exec "$3" -D -E "$4" -f "$5"'
)


@dataclasses.dataclass(frozen=True)
class BoxSpec:
    """One lab box: where its sshd listens and the MAC its wake-on-LAN packet names."""

    name: str
    address: str
    port: int
    mac: str
    user: str = "root"

    def __post_init__(self) -> None:
        if ipaddress.ip_address(self.address) not in LOOPBACK:
            raise ValueError(f"lab box {self.name} must be on 127.0.0.0/8, not {self.address}")


def _mac(i: int) -> str:
    return f"aa:bb:cc:dd:ee:{i:02x}"


# Address/port plan (COMMON.md): boxes 127.0.0.21-39, ports 2221-2239.
BOX_SETS: dict[str, tuple[BoxSpec, ...]] = {
    "tests": (
        BoxSpec("nvidia", "127.0.0.21", 2221, _mac(1)),
        BoxSpec("amd", "127.0.0.22", 2222, _mac(2), user=FORGE_USER),
        BoxSpec("intel", "127.0.0.23", 2223, _mac(3)),
    ),
    # .24-.25 spare; .36-.39 left to other users of the range (the Slurm lab's login node)
    "bench": tuple(
        BoxSpec(f"b{i:02d}", f"127.0.0.{25 + i}", 2225 + i, _mac(0x10 + i), user=FORGE_USER)
        for i in range(1, 11)
    ),
}


def default_root(box_set: str = "tests") -> Path:
    return Path(os.environ.get("WF_LAB", "/tmp/wf-lab")) / "lab" / box_set


def alive(pid: int | None) -> bool:
    """True for a live process; a zombie counts as dead (it no longer serves anything)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def wait_banner(address: str, port: int, deadline: float) -> bool:
    """Wait until an SSH banner is served at address:port, or the deadline (seconds) passes."""
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                s.settimeout(1)
                if s.recv(8).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        if time.monotonic() >= end:
            return False
        time.sleep(0.05)


def magic_packet_mac(data: bytes) -> str | None:
    """The MAC a valid wake-on-LAN magic packet names (6 x 0xFF, then the MAC 16 times)."""
    if len(data) not in (102, 108) or data[:6] != b"\xff" * 6:
        return None
    mac = data[6:12]
    if data[6:102] != mac * 16:
        return None
    return ":".join(f"{x:02x}" for x in mac)


class SshLab:
    """Set up, start and stop the loopback sshd boxes of one box set under one root dir."""

    def __init__(self, root: Path, boxes: Sequence[BoxSpec], *, wol_port: int = WOL_PORT):
        self.root = Path(root)
        self.boxes = {b.name: b for b in boxes}
        self.wol_port = wol_port
        self.keys = self.root / "keys"
        self.client_key = self.keys / "client"
        self.known_hosts = self.keys / "known_hosts"
        self.ssh_config = self.keys / "ssh_config"
        self.control_dir = self.root / "cm"
        self._procs: dict[str, subprocess.Popen] = {}

    # ---- layout -------------------------------------------------------------------------
    @classmethod
    def load(cls, root: Path) -> SshLab:
        """The lab as `setup` described it in lab.json (used by the listener process)."""
        data = json.loads((Path(root) / "lab.json").read_text())
        return cls(root, [BoxSpec(**b) for b in data["boxes"]], wol_port=data["wol_port"])

    def box_dir(self, name: str) -> Path:
        return self.root / "boxes" / name

    def upper(self, name: str) -> Path:
        """The box's private layer of /opt: a file the box wrote to /opt/X is at upper/X."""
        return self.box_dir(name) / "upper"

    def landed(self, name: str, remote_path: str) -> Path:
        """Where a path under /opt on the box can be read from the host."""
        rel = Path(remote_path).relative_to("/opt")
        return self.upper(name) / rel

    def ssh(self, name: str, *argv: str, timeout: float = 60, check: bool = True
            ) -> subprocess.CompletedProcess:
        """Run argv on the box through OpenSSH (changes under /opt must go through the box:
        writing the upper dir behind a mounted overlay's back is undefined behaviour)."""
        return subprocess.run(["ssh", "-F", str(self.ssh_config), name, shlex.join(argv)],
                              capture_output=True, text=True, timeout=timeout, check=check,
                              stdin=subprocess.DEVNULL)

    def host_key_line(self, name: str) -> str:
        """The known_hosts line for a box (OpenSSH's `[addr]:port keytype key`)."""
        b = self.boxes[name]
        pub = (self.box_dir(name) / "host_ed25519.pub").read_text().split()
        return f"[{b.address}]:{b.port} {pub[0]} {pub[1]}"

    # ---- setup --------------------------------------------------------------------------
    def setup(self) -> None:
        """Keys, users, sshd configs, known_hosts and ssh_config; idempotent."""
        for d in (self.root, self.keys, self.control_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").chmod(0o755)
        if not self.client_key.exists():
            _keygen(self.client_key, "lab-client")
        auth = self.keys / "authorized_keys"
        auth.write_text((self.keys / "client.pub").read_text())
        auth.chmod(0o644)  # sshd reads it as the logging-in user
        _ensure_user(FORGE_USER)
        known, hosts, config = [], [], [
            "Host *",
            "  User root",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "  ConnectTimeout 5",
            f"  ControlPath {self.control_dir}/%C",
        ]
        for b in self.boxes.values():
            d = self.box_dir(b.name)
            (d / "work").mkdir(parents=True, exist_ok=True)
            (d / "upper").mkdir(parents=True, exist_ok=True)
            # /opt inside a box: world-writable with the sticky bit, so the non-root user can
            # create its install dir there as it could on a box prepared by an admin.
            (d / "upper").chmod(0o1777)
            if not (d / "host_ed25519").exists():
                _keygen(d / "host_ed25519", f"host-{b.name}")
            (d / "sshd_config").write_text(self._sshd_config(b))
            known.append(self.host_key_line(b.name))
            hosts += [f"Host {b.name}", f"  HostName {b.address}", f"  Port {b.port}",
                      f"  User {b.user}"]
        self.known_hosts.write_text("\n".join(known) + "\n")
        # ssh takes the first value it finds: the per-box blocks go before `Host *`
        self.ssh_config.write_text("\n".join(hosts + config) + "\n")
        (self.root / "lab.json").write_text(json.dumps({
            "boxes": [dataclasses.asdict(b) for b in self.boxes.values()],
            "wol_port": self.wol_port,
        }, indent=1))

    def _sshd_config(self, b: BoxSpec) -> str:
        d = self.box_dir(b.name)
        return "\n".join([
            f"Port {b.port}",
            f"ListenAddress {b.address}",
            f"HostKey {d / 'host_ed25519'}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.keys / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "LogLevel VERBOSE",
            "",
        ])

    # ---- start / stop -------------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        d = self.box_dir(name)
        for f in ("sshd.pid", "launcher.pid"):
            p = _read_pid(d / f)
            if alive(p) and "sshd" in _cmdline(p):
                return p
        return None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def start(self, name: str, deadline: float = 10.0) -> bool:
        """Start a box's sshd (no-op if it runs); True if this call started it."""
        b = self.boxes[name]
        d = self.box_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / "start.lock", "w") as lock:  # two wake packets in a row must not race
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.running(name):
                return False
            for f in ("sshd.pid", "launcher.pid"):
                (d / f).unlink(missing_ok=True)
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
            subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], check=True, timeout=20)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOX_SCRIPT,
                    "wf-box", str(d / "upper"), str(d / "work"), SSHD, str(d / "sshd.log"),
                    str(d / "sshd_config")]
            with open(d / "start.log", "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True, close_fds=True)
            self._procs[name] = proc
            # unshare and sh both exec, so this PID is the sshd listener itself
            (d / "launcher.pid").write_text(f"{proc.pid}\n")
            # sshd writes its PidFile once it is listening: until then a banner on that port
            # may be someone else's server (the address range is shared)
            end = time.monotonic() + deadline
            while _read_pid(d / "sshd.pid") != proc.pid:
                if proc.poll() is not None:
                    raise RuntimeError(f"box {name}: sshd exited ({proc.returncode}) at start; "
                                       f"is {b.address}:{b.port} taken? see {d}/sshd.log")
                if time.monotonic() > end:
                    break
                time.sleep(0.02)
            if not wait_banner(b.address, b.port, max(0.0, end - time.monotonic())) or \
                    _read_pid(d / "sshd.pid") != proc.pid:
                self.stop(name)
                raise RuntimeError(f"box {name} did not serve SSH within {deadline}s; see {d}")
            return True

    def stop(self, name: str) -> bool:
        """Stop a box (its listener and its session processes); True if one was running."""
        d = self.box_dir(name)
        stopped = False
        for f in ("sshd.pid", "launcher.pid"):
            p = _read_pid(d / f)
            if p and alive(p) and "sshd" in _cmdline(p):
                # SIGTERM to the listener leaves established sessions: end them too (box sleeps)
                for child in _children(p):
                    _kill(child, signal.SIGTERM)
                _kill(p, signal.SIGTERM)
                _wait_dead(p, 5.0) or _kill(p, signal.SIGKILL)
                stopped = True
            (d / f).unlink(missing_ok=True)
        proc = self._procs.pop(name, None)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return stopped

    def start_all(self, names: Iterable[str] | None = None) -> list[str]:
        return [n for n in (names or self.boxes) if self.start(n)]

    def stop_all(self, names: Iterable[str] | None = None) -> None:
        for n in names or list(self.boxes):
            self.stop(n)

    def kill_connections(self, name: str) -> int:
        """Cut every SSH connection to the box (as a network failure would): SIGKILL every
        process under its listener, the per-connection monitors, their session children and
        whatever those run. The listener itself stays up. Returns how many were killed."""
        pid = self.pid(name)
        victims, todo = [], _children(pid) if pid else []
        while todo:
            p = todo.pop()
            victims.append(p)
            todo += _children(p)
        for p in victims:
            _kill(p, signal.SIGKILL)
        return len(victims)

    def close_control_masters(self) -> None:
        """End the OpenSSH ControlMaster processes (testinfra's) that live in this lab."""
        for sock in self.control_dir.glob("*"):
            if sock.is_socket():
                subprocess.run(["ssh", "-o", "ControlPath=" + str(sock), "-O", "exit", "x"],
                               capture_output=True, timeout=10)

    # ---- wake-on-LAN listener -----------------------------------------------------------
    @property
    def wol_pidfile(self) -> Path:
        return self.root / "wol.pid"

    def wol_pid(self) -> int | None:
        p = _read_pid(self.wol_pidfile)
        return p if alive(p) and "wol-serve" in _cmdline(p) else None

    def start_wol_listener(self, deadline: float = 10.0) -> bool:
        """Start the listener process (no-op if it runs); True if this call started it."""
        if self.wol_pid():
            return False
        ready = self.root / "wol.ready"
        ready.unlink(missing_ok=True)
        with open(self.root / "wol.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--root", str(self.root),
                 "wol-serve"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self._procs["<wol>"] = proc
        self.wol_pidfile.write_text(f"{proc.pid}\n")
        end = time.monotonic() + deadline
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > end:
                self.stop_wol_listener()
                raise RuntimeError(f"wake-on-LAN listener did not start; see {self.root}/wol.log")
            time.sleep(0.05)
        return True

    def stop_wol_listener(self) -> None:
        p = self.wol_pid()
        if p:
            _kill(p, signal.SIGTERM)
            _wait_dead(p, 5.0) or _kill(p, signal.SIGKILL)
        self.wol_pidfile.unlink(missing_ok=True)
        proc = self._procs.pop("<wol>", None)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def serve_wol(self) -> None:
        """The listener loop (runs in its own process): magic packet for a MAC -> start box."""
        by_mac = {b.mac.lower(): b.name for b in self.boxes.values()}
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((WOL_HOST, self.wol_port))  # loopback only
        s.settimeout(1.0)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"wol listener on {WOL_HOST}:{self.wol_port} for {by_mac}", flush=True)
        (self.root / "wol.ready").write_text("ready\n")
        while True:
            _reap()
            try:
                data, peer = s.recvfrom(1024)
            except TimeoutError:
                continue
            mac = magic_packet_mac(data)
            box = by_mac.get(mac or "")
            print(f"packet {len(data)}B from {peer}: mac={mac} box={box}", flush=True)
            with open(self.root / "wol.received", "a") as f:
                f.write(json.dumps({"mac": mac, "box": box, "size": len(data)}) + "\n")
            if box:
                try:
                    self.start(box)
                    print(f"box {box} up", flush=True)
                except Exception as e:  # keep listening whatever one start did
                    print(f"box {box} failed to start: {e}", flush=True)

    def wol_received(self) -> list[dict]:
        """Packets the listener has seen (valid or not), oldest first."""
        f = self.root / "wol.received"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    # ---- inventory ----------------------------------------------------------------------
    def inventory(self, *, install_dir: str = "/opt/warpforge", names: Iterable[str] | None = None,
                  extra_boxes: dict | None = None, lab: dict | None = None) -> dict:
        """A lab inventory naming only these loopback boxes (never the production one)."""
        boxes = {}
        for n in names or self.boxes:
            b = self.boxes[n]
            gpu = {"nvidia": "NVIDIA", "amd": "AMD"}.get(n, "NONE")
            boxes[n] = {
                "transport": "ssh",
                "address": b.address,
                "port": b.port,
                "user": b.user,
                "identity_file": str(self.client_key),
                "known_hosts_file": str(self.known_hosts),
                "host_key_policy": "strict",
                "aliases": [f"mark1{n}"],
                "mac": b.mac,
                "wol_host": WOL_HOST,
                "wol_port": self.wol_port,
                "gpu_type": gpu,
                "gpu_count": 0 if gpu == "NONE" else 1,
                "install_dir": install_dir,
                "groups": ["lab", *(["gpu-boxes", "ray-workers"] if gpu != "NONE" else [])],
            }
        boxes.update(extra_boxes or {})
        inv = {"version": 1, "schedulers": {"local": {"type": "local"}}, "boxes": boxes,
               "lab": {"wake_timeout": 10, "wake_interval": 0.2, "connect_timeout": 5,
                       **(lab or {})}}
        _assert_loopback_only(inv)
        return inv

    def write_inventory(self, path: Path, **kwargs) -> Path:
        """Write `inventory(**kwargs)` as YAML (JSON is valid YAML: no yaml import needed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.inventory(**kwargs), indent=2) + "\n")
        return path


def _assert_loopback_only(inv: dict) -> None:
    for name, box in inv.get("boxes", {}).items():
        for key in ("address", "wol_host"):
            value = box.get(key)
            if value and ipaddress.ip_address(value) not in LOOPBACK:
                raise ValueError(f"lab inventory box {name}.{key}={value} is not loopback")


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f",
                    str(path)], check=True, timeout=30, stdin=subprocess.DEVNULL)


def _ensure_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True, timeout=30)
    # useradd leaves the password '!' (locked): with UsePAM no, sshd refuses locked accounts
    subprocess.run(["usermod", "-p", "*", user], check=True, timeout=30)


def _kill(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _wait_dead(pid: int, deadline: float) -> bool:
    end = time.monotonic() + deadline
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def available() -> str | None:
    """Why the lab cannot run here, or None if it can."""
    if os.geteuid() != 0:
        return "the sshd lab needs root (unshare --mount, overlay on /opt, per-box users)"
    for tool in (SSHD, "ssh", "ssh-keygen", "unshare", "flock"):
        if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool)):
            return f"{tool} is missing (.ci/setup.d/30-ssh.sh installs it)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", default="tests", choices=sorted(BOX_SETS))
    ap.add_argument("--root", type=Path)
    ap.add_argument("cmd", choices=["setup", "start", "stop", "status", "wol-listener",
                                    "wol-serve", "ssh-config"])
    ap.add_argument("boxes", nargs="*")
    a = ap.parse_args(argv)
    if a.cmd == "wol-serve":
        SshLab.load(a.root).serve_wol()
        return 0
    lab = SshLab(a.root or default_root(a.set), BOX_SETS[a.set])
    if a.cmd == "setup":
        lab.setup()
    elif a.cmd == "start":
        lab.setup()
        for n in a.boxes or lab.boxes:
            print(f"{n}: {'started' if lab.start(n) else 'already running'}")
    elif a.cmd == "stop":
        lab.stop_all(a.boxes or None)
        if not a.boxes:
            lab.stop_wol_listener()
            lab.close_control_masters()
    elif a.cmd == "status":
        for n in lab.boxes:
            p = lab.pid(n)
            print(f"{n}: {'up pid ' + str(p) if p else 'down'}")
        print(f"wol listener: {lab.wol_pid() or 'down'}")
    elif a.cmd == "wol-listener":
        lab.setup()
        print("started" if lab.start_wol_listener() else "already running", lab.wol_pid())
    elif a.cmd == "ssh-config":
        print(lab.ssh_config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
