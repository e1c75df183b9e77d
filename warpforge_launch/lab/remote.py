"""Sessions on lab boxes: the one place that talks to a box, over SSH or on this machine.

Every lab task (wake, distribute, rollback, smoke) opens one session per box and does its
control work for that box through it: one Fabric connection per box per task, reused for
every command (`Sessions` shares it between a task's steps). A push's bulk stream goes
through the OpenSSH client when it is installed, its options rendered by the project's one
SSH connector (warpforge_launch.ssh, also used by the Slurm login node and testinfra),
else over the same paramiko connection. Commands are argv lists; the SSH session hands the
remote shell `shlex.join(argv)` and nothing else, so no path or name is ever pasted into a
shell line.

Host keys are checked strictly by default: the box's known_hosts file is loaded and an
unknown key is refused with a message that says how to trust the box (Fabric alone would
accept any key). `accept-new` records the key of a box never seen before, like OpenSSH's
option of that name, and still refuses a key that changed.

The `local` transport runs the same argv on this machine without SSH, so the whole pipeline
also works on a single machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from warpforge_launch import ssh
from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError
from warpforge_launch.lab.processes import (
    Producer,
    RunResult,
    Started,
    feed,
    reader,
    run_process,
    wait_ready,
)
from warpforge_launch.ssh import HostKeyError

__all__ = ["HostKeyError", "Producer", "RunResult", "Started", "open_session", "Sessions"]

# GCM first: on loopback and gigabit links it moves about 1.5x the bytes of aes-ctr+hmac per
# CPU second in paramiko; every other cipher stays allowed as a fallback.
_CIPHER_PREFERENCE = ssh.CIPHERS[:2]
_WINDOW = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


class BoxLike(Protocol):
    """What a session needs of a box (warpforge_launch.inventory.Box has it)."""

    name: str
    transport: str
    host: str
    port: int
    user: str | None
    identity_file: Any
    known_hosts_file: Any
    host_key_policy: str


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Deadlines for one session (seconds). `stall` bounds a stream making no progress."""

    connect: float = 10.0
    banner: float = 10.0
    auth: float = 15.0
    command: float = 300.0
    stall: float = 60.0


def openssh_argv(box: BoxLike, timeouts: Timeouts, command: str,
                 host_key_policy: str | None = None) -> list[str]:
    """The OpenSSH client line for `command` on the box (the connector's one renderer).

    Bulk streams go through OpenSSH: its C crypto moves several times the bytes per CPU
    second of paramiko's. It checks the host key itself against the same known_hosts file;
    in accept-new mode the Fabric session has recorded a new key before any stream is sent,
    so the stream always checks strictly."""
    ep = dataclasses.replace(ssh.Endpoint.of(box), host_key_policy="strict")
    return ssh.argv(ep, command, connect_timeout=timeouts.connect, ciphers=ssh.CIPHERS)


def prestart(box: BoxLike, timeouts: Timeouts, argv: Sequence[str]) -> Started | None:
    """Start argv on the box through OpenSSH now and feed it later (None: no ssh client).

    Used to let a push's stream connection log in while the control connection is still
    taking the lock and reading the box's state; argv must do nothing on an empty stdin."""
    if box.transport != "ssh" or not shutil.which("ssh"):
        return None
    return Started(box.name, openssh_argv(box, timeouts, shlex.join(argv)), argv, stdin=True)


def finish_stream(started: Started, input, timeout: float) -> RunResult:
    r = started.finish(input, timeout)
    if r.exit_code == 255:
        raise InfrastructureError(f"box {started.name}: ssh stream failed: {r.reason()}")
    return r


class BoxSession:
    """A connection to one box; use as a context manager."""

    def __init__(self, box: BoxLike, timeouts: Timeouts):
        self.box = box
        self.timeouts = timeouts

    @property
    def name(self) -> str:
        return self.box.name

    def run(self, argv: Sequence[str], *, input: bytes | Producer | None = None,
            timeout: float | None = None, check: bool = True, what: str | None = None
            ) -> RunResult:
        """Run argv on the box; with check, a non-zero exit raises LaunchError with the reason."""
        result = self._run(tuple(argv), input, timeout or self.timeouts.command)
        if check and not result.ok:
            raise LaunchError(f"box {self.name}: {what or argv[0]} failed: {result.reason()}")
        return result

    @contextlib.contextmanager
    def hold(self, argv: Sequence[str], *, ready: bytes, timeout: float) -> Iterator[bytes]:
        """Keep argv running (e.g. `flock ... cat`) while the block runs; end it by closing stdin.

        Entering waits until argv prints a `ready` line and yields what it printed before it;
        if argv exits first, HoldFailed carries its exit code in `.exit_status`.
        """
        raise NotImplementedError

    def _run(self, argv, input, timeout) -> RunResult:
        raise NotImplementedError

    def prestart(self, argv: Sequence[str]) -> Started | None:
        """Start a stream command now, to feed later (None: this session cannot)."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> BoxSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HoldFailed(LaunchError):
    """The held process exited before it was ready (e.g. a lock that stayed busy)."""

    def __init__(self, message: str, exit_status: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.exit_status = exit_status


# ---- local ----------------------------------------------------------------------------------
class LocalSession(BoxSession):
    """The box is this machine: same operations, plain subprocesses."""

    def _run(self, argv, input, timeout) -> RunResult:
        return run_process(self.name, argv, argv, input, timeout)

    @contextlib.contextmanager
    def hold(self, argv, *, ready, timeout):
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            said = wait_ready(proc.stdout.readline, ready, timeout, proc.kill)
            if said is None:
                proc.wait(timeout=10)
                err = proc.stderr.read().decode(errors="replace").strip()
                raise HoldFailed(f"box {self.name}: {argv[0]} ended: {err or proc.returncode}",
                                 proc.returncode)
            yield said
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


# ---- ssh ------------------------------------------------------------------------------------
class SshSession(BoxSession):
    """One Fabric connection to the box, with strict (or accept-new) host-key checking."""

    def __init__(self, box: BoxLike, timeouts: Timeouts, *, host_key_policy: str | None = None,
                 bulk: str = "auto"):
        super().__init__(box, timeouts)
        if bulk not in ("auto", "openssh", "paramiko"):
            raise UsageError(f"unknown bulk transport {bulk!r}", hint="auto, openssh or paramiko")
        self.bulk = "openssh" if bulk == "auto" and shutil.which("ssh") else bulk
        if self.bulk == "openssh" and not shutil.which("ssh"):
            raise UsageError("bulk transport openssh needs the ssh client on this machine")
        try:
            self.endpoint = ssh.Endpoint.of(box, host_key_policy)
        except UsageError as e:
            raise UsageError(f"box {box.name}: {e}", hint=e.hint) from None
        self.policy = self.endpoint.host_key_policy
        self.known_hosts = self.endpoint.known_hosts
        self.conn = None
        self._open()

    @property
    def where(self) -> str:
        return f"{self.box.host}:{self.box.port}"

    def _open(self) -> None:
        import logging

        import paramiko
        from fabric import Config, Connection

        # paramiko's transport thread logs a failed handshake with its traceback; without a
        # handler of ours Python prints it to stderr beside our one-line error
        log = logging.getLogger("paramiko")
        if not log.handlers:
            log.addHandler(logging.NullHandler())

        box, ep, t = self.box, self.endpoint, self.timeouts
        kwargs: dict[str, Any] = {
            "banner_timeout": t.banner,
            "auth_timeout": t.auth,
            "channel_timeout": t.connect,
            "transport_factory": _transport_factory,
        }
        if ep.identity_file:
            kwargs.update(key_filename=ep.identity_file, look_for_keys=False,
                          allow_agent=False)
        try:  # our own TCP connect: paramiko bounds the whole handshake by its `timeout`
            kwargs["sock"] = socket.create_connection((ep.host, ep.port), timeout=t.connect)
        except OSError as e:
            raise InfrastructureError(f"box {box.name} ({self.where}) unreachable: "
                                      f"{_describe(e)}") from None
        config = Config(overrides={"load_ssh_configs": False})
        conn = Connection(host=ep.host, port=ep.port, user=ep.user,
                          connect_timeout=max(1, round(t.banner)), connect_kwargs=kwargs,
                          config=config)
        client = conn.client
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(ssh.host_key_policy(ep, f"box {box.name}"))
        try:
            conn.open()
        except HostKeyError:
            conn.close()
            raise
        except paramiko.BadHostKeyException as e:
            conn.close()
            raise ssh.changed_key_error(ep, f"box {box.name}", e.key) from None
        except paramiko.AuthenticationException as e:
            conn.close()
            raise UsageError(f"box {box.name}: authentication as {box.user} failed: {e}",
                             hint="check the box's user and identity_file in the inventory"
                             ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            transport = conn.client.get_transport()
            banner = bool(transport and transport.remote_version)
            conn.close()
            why = _describe(e)
            if why in ("No existing session", "Negotiation failed.") \
                    or why.startswith("Error reading SSH protocol banner"):
                why = (f"the SSH handshake did not finish within {t.banner:.0f}s"
                       if banner else f"no SSH banner within {t.banner:.0f}s (the port "
                       "accepts connections but nothing answers SSH)")
            raise InfrastructureError(f"box {box.name} ({self.where}) unreachable: "
                                      f"{why}") from None
        conn.transport.set_keepalive(15)
        self.conn = conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _channel(self):
        import paramiko

        try:
            ch = self.conn.transport.open_session(timeout=self.timeouts.connect)
        except (paramiko.SSHException, OSError, EOFError, AttributeError) as e:
            raise InfrastructureError(f"box {self.name}: connection lost: {_describe(e)}"
                                      ) from None
        ch.settimeout(1.0)
        return ch

    def _run(self, argv, input, timeout) -> RunResult:
        if callable(input) and self.bulk == "openssh":
            return self._run_openssh(argv, input, timeout)
        ch = self._channel()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            ch.exec_command(shlex.join(argv))
            readers = [reader(ch.recv, out, ch), reader(ch.recv_stderr, err, ch)]
            if input is not None:
                feed(input, lambda b: _send(ch, b, self.timeouts.stall, self.name))
                ch.shutdown_write()
            if not ch.status_event.wait(max(0.0, deadline - time.monotonic())):
                raise InfrastructureError(
                    f"box {self.name}: {argv[0]} timed out after {timeout:.0f}s")
            for r in readers:
                r.join(timeout=10)
            status = ch.exit_status if ch.exit_status_ready() else -1
        except (OSError, EOFError) as e:
            raise InfrastructureError(f"box {self.name}: connection lost during {argv[0]}: "
                                      f"{_describe(e)}") from None
        finally:
            ch.close()
        if status == -1:
            raise InfrastructureError(f"box {self.name}: connection lost during {argv[0]}")
        return RunResult(argv, status, bytes(out), bytes(err))

    def openssh_argv(self, command: str) -> list[str]:
        return openssh_argv(self.box, self.timeouts, command)

    def prestart(self, argv: Sequence[str]) -> Started | None:
        return prestart(self.box, self.timeouts, argv) if self.bulk == "openssh" else None

    def _run_openssh(self, argv, input, timeout) -> RunResult:
        return finish_stream(Started(self.name, self.openssh_argv(shlex.join(argv)), argv,
                                     stdin=True), input, timeout)

    @contextlib.contextmanager
    def hold(self, argv, *, ready, timeout):
        ch = self._channel()
        ch.settimeout(None)  # the reader blocks; _wait_ready's deadline closes the channel
        try:
            ch.exec_command(shlex.join(argv))
            said = wait_ready(ch.makefile("rb").readline, ready, timeout, ch.close)
            if said is None:
                ch.status_event.wait(10)
                status = ch.exit_status if ch.exit_status_ready() else -1
                err = b""
                with contextlib.suppress(OSError):
                    while ch.recv_stderr_ready():
                        err += ch.recv_stderr(65536)
                if status == -1 and not self.conn.transport.is_active():
                    raise InfrastructureError(f"box {self.name}: connection lost")
                raise HoldFailed(f"box {self.name}: {argv[0]} ended: "
                                 f"{err.decode(errors='replace').strip() or status}", status)
            yield said
        finally:
            with contextlib.suppress(OSError, EOFError):
                ch.shutdown_write()
                ch.status_event.wait(10)
            ch.close()


def _transport_factory(sock, **kwargs):
    import paramiko

    t = paramiko.Transport(sock, default_window_size=_WINDOW, **kwargs)
    opts = t.get_security_options()
    preferred = [c for c in _CIPHER_PREFERENCE if c in opts.ciphers]
    opts.ciphers = tuple(preferred + [c for c in opts.ciphers if c not in preferred])
    return t


def _send(ch, data: bytes, stall: float, name: str) -> None:
    """sendall with a stall deadline: fail when the box takes nothing for `stall` seconds."""
    view = memoryview(data)
    last = time.monotonic()
    while view:
        try:
            n = ch.send(view[:_CHUNK])
        except TimeoutError:
            n = 0
        if n:
            view = view[n:]
            last = time.monotonic()
        elif ch.closed or ch.exit_status_ready():
            raise InfrastructureError(f"box {name}: the remote command stopped reading")
        elif time.monotonic() - last > stall:
            raise InfrastructureError(f"box {name}: transfer stalled for {stall:.0f}s")


def _describe(e: BaseException) -> str:
    import paramiko

    if isinstance(e, (paramiko.ssh_exception.NoValidConnectionsError, ConnectionRefusedError)):
        return "connection refused"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "timed out"
    text = str(e).strip()
    return text or type(e).__name__


def open_session(box: BoxLike, *, timeouts: Timeouts | None = None,
                 host_key_policy: str | None = None, bulk: str = "auto") -> BoxSession:
    """A session on the box through its configured transport."""
    timeouts = timeouts or Timeouts()
    if box.transport == "local":
        return LocalSession(box, timeouts)
    if box.transport == "ssh":
        return SshSession(box, timeouts, host_key_policy=host_key_policy, bulk=bulk)
    raise UsageError(f"box {box.name}: unknown transport {box.transport!r}",
                     hint="use 'ssh' or 'local'")


class Sessions:
    """One session per box for the length of a task, opened on first use and shared by its
    steps (wait, distribute, verify), so each box costs one SSH handshake per task."""

    def __init__(self, *, timeouts: Timeouts | None = None, host_key_policy: str | None = None,
                 bulk: str = "auto"):
        self.timeouts = timeouts or Timeouts()
        self.host_key_policy = host_key_policy
        self.bulk = bulk
        self._open: dict[str, BoxSession] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, box: BoxLike) -> BoxSession:
        with self._guard:
            lock = self._locks.setdefault(box.name, threading.Lock())
        with lock:
            s = self._open.get(box.name)
            if s is None:
                s = open_session(box, timeouts=self.timeouts,
                                 host_key_policy=self.host_key_policy, bulk=self.bulk)
                self._open[box.name] = s
            return s

    def close(self) -> None:
        for s in self._open.values():
            s.close()
        self._open.clear()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
