"""Sessions on lab boxes: the one place that talks to a box, over SSH or on this machine.

Every lab task (wake, distribute, rollback, smoke) opens one session per box and does its
control work for that box through it: one Fabric connection per box per task, reused for
every command (`Sessions` shares it between a task's steps). A push's bulk stream goes
through the OpenSSH client with the same settings when it is installed (see openssh_argv),
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

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import os
import shlex
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from warpforge_launch.errors import InfrastructureError, LaunchError, UsageError

#: A producer writes the stdin of a command in chunks through the callable it is given.
Producer = Callable[[Callable[[bytes], None]], None]

# GCM first: on loopback and gigabit links it moves about 1.5x the bytes of aes-ctr+hmac per
# CPU second in paramiko; every other cipher stays allowed as a fallback.
_CIPHER_PREFERENCE = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
_WINDOW = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


class HostKeyError(UsageError):
    """The box's host key is unknown (strict mode) or differs from the recorded one."""


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


@dataclasses.dataclass(frozen=True)
class RunResult:
    argv: tuple[str, ...]
    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")

    def reason(self) -> str:
        """The last non-empty line of stderr (or stdout): what a user needs to see first."""
        for text in (self.err, self.out):
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if lines:
                return lines[-1]
        return f"exit code {self.exit_code}"


def fingerprint(key) -> str:
    """OpenSSH's `SHA256:...` fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def host_key_name(address: str, port: int) -> str:
    """The name OpenSSH and paramiko file a host key under."""
    return address if port == 22 else f"[{address}]:{port}"


def known_hosts_path(box: BoxLike) -> Path:
    return Path(os.path.expanduser(str(box.known_hosts_file or "~/.ssh/known_hosts")))


def openssh_argv(box: BoxLike, timeouts: Timeouts, command: str) -> list[str]:
    """The OpenSSH client line for `command` on the box, with the inventory's settings.

    Bulk streams go through OpenSSH: its C crypto moves several times the bytes per CPU
    second of paramiko's. It checks the host key itself against the same known_hosts file
    with StrictHostKeyChecking=yes (in accept-new mode the Fabric session has recorded a new
    key before any stream is sent).
    """
    b, t = box, timeouts
    argv = ["ssh", "-F", "none", "-T", "-e", "none", "-p", str(b.port),
            "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, round(t.connect))}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts_path(b)}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
            "-o", "Ciphers=" + ",".join([*_CIPHER_PREFERENCE, "chacha20-poly1305@openssh.com",
                                         "aes128-ctr", "aes256-ctr"]),
            "-o", "ControlMaster=no", "-o", "ControlPath=none", "-o", "LogLevel=ERROR"]
    if b.user:
        argv += ["-l", b.user]
    if b.identity_file:
        argv += ["-i", os.path.expanduser(str(b.identity_file)), "-o", "IdentitiesOnly=yes"]
    return [*argv, "--", b.host, command]


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
        return _run_process(self.name, argv, argv, input, timeout)

    @contextlib.contextmanager
    def hold(self, argv, *, ready, timeout):
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            said = _wait_ready(proc.stdout.readline, ready, timeout, proc.kill)
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
        self.policy = host_key_policy or box.host_key_policy or "strict"
        if self.policy not in ("strict", "accept-new"):
            raise UsageError(f"box {box.name}: unknown host_key_policy {self.policy!r}",
                             hint="use 'strict' or 'accept-new'")
        self.known_hosts = known_hosts_path(box)
        self.conn = None
        self._open()

    @property
    def where(self) -> str:
        return f"{self.box.host}:{self.box.port}"

    def _open(self) -> None:
        import paramiko
        from fabric import Config, Connection

        box, t = self.box, self.timeouts
        kwargs: dict[str, Any] = {
            "banner_timeout": t.banner,
            "auth_timeout": t.auth,
            "channel_timeout": t.connect,
            "transport_factory": _transport_factory,
        }
        if box.identity_file:
            kwargs.update(key_filename=os.path.expanduser(str(box.identity_file)),
                          look_for_keys=False, allow_agent=False)
        config = Config(overrides={"load_ssh_configs": False})
        conn = Connection(host=box.host, port=box.port, user=box.user or None,
                          connect_timeout=max(1, round(t.connect)), connect_kwargs=kwargs,
                          config=config)
        client = conn.client
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        if self.policy == "strict":
            client.set_missing_host_key_policy(_RejectUnknown(self))
        else:
            client.set_missing_host_key_policy(_AcceptNew(self))
        try:
            conn.open()
        except HostKeyError:
            conn.close()
            raise
        except paramiko.BadHostKeyException as e:
            conn.close()
            name = host_key_name(box.host, box.port)
            raise HostKeyError(
                f"box {box.name}: host key for {name} does not match {self.known_hosts} "
                f"(got {fingerprint(e.key)}): refusing to connect, the box may be an impostor",
                hint=f"if the box was reinstalled, verify its new key, then remove the old "
                     f"one: {shlex.join(['ssh-keygen', '-R', name, '-f', str(self.known_hosts)])}"
                     " and trust the new one") from None
        except paramiko.AuthenticationException as e:
            conn.close()
            raise UsageError(f"box {box.name}: authentication as {box.user} failed: {e}",
                             hint="check the box's user and identity_file in the inventory"
                             ) from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            conn.close()
            raise InfrastructureError(f"box {box.name} ({self.where}) unreachable: "
                                      f"{_describe(e)}") from None
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
            readers = [_reader(ch.recv, out, ch), _reader(ch.recv_stderr, err, ch)]
            if input is not None:
                _feed(input, lambda b: _send(ch, b, self.timeouts.stall, self.name))
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
            said = _wait_ready(ch.makefile("rb").readline, ready, timeout, ch.close)
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


class _RejectUnknown:
    """Strict mode: an unknown key is refused, with how to trust the box."""

    def __init__(self, session: SshSession):
        self.session = session

    def missing_host_key(self, client, hostname, key):
        s = self.session
        raise HostKeyError(
            f"box {s.name}: host key for {hostname} ({key.get_name()} {fingerprint(key)}) is "
            f"not in {s.known_hosts}: refusing to connect",
            hint=f"verify that fingerprint on the box (ssh-keygen -lf on its host key), then "
                 f"trust it: {shlex.join(['ssh-keyscan', '-p', str(s.box.port), s.box.host])}"
                 f" >> {shlex.quote(str(s.known_hosts))}, or run once with host key policy "
                 f"accept-new (--accept-new) to record it")


class _AcceptNew:
    """accept-new: record the key of a box never seen before; a changed key still fails."""

    def __init__(self, session: SshSession):
        self.session = session

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        record_host_key(self.session.known_hosts, hostname, key)


def record_host_key(path: Path, hostname: str, key) -> None:
    """Append one known_hosts line, serialised with other writers by an fcntl lock."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(line)


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


class Sink:
    """What a producer writes to: callable with bytes; `fd` is set when the stream is a local
    pipe a child process can write to directly (flush first), None for an SSH channel."""

    def __init__(self, write: Callable[[bytes], Any], fd: int | None = None,
                 flush: Callable[[], Any] | None = None):
        self.write, self.fd, self._flush = write, fd, flush

    def __call__(self, data: bytes) -> None:
        self.write(data)

    def flush(self) -> None:
        if self._flush:
            self._flush()


def _feed(input: bytes | Producer, write: Callable[[bytes], Any]) -> None:
    if isinstance(input, (bytes, bytearray, memoryview)):
        write(bytes(input))
    else:
        input(write)


class Started:
    """A local process (a command, or an `ssh` carrying one) whose stdin is fed later.

    Its output is drained from the start, so a process started early (see
    SshSession.prestart) can connect and log in while the caller is still deciding what to
    send; `finish` feeds it, `cancel` lets it go with an empty stdin.
    """

    def __init__(self, name: str, argv: Sequence[str], shown: Sequence[str], stdin: bool):
        self.name, self.shown, self.used = name, tuple(shown), False
        try:
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin else
                                         subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE)
        except OSError as e:
            raise LaunchError(f"box {name}: cannot run {argv[0]}: {e}") from e
        self.out, self.err = bytearray(), bytearray()
        self.readers = [_reader(self.proc.stdout.read1, self.out),
                        _reader(self.proc.stderr.read1, self.err)]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def finish(self, input: bytes | Producer | None, timeout: float) -> RunResult:
        """Feed input (if any), close stdin, wait for the exit under the deadline."""
        self.used = True
        proc, deadline = self.proc, time.monotonic() + timeout
        try:
            if input is not None:
                try:
                    _feed(input, Sink(proc.stdin.write, fd=proc.stdin.fileno(),
                                      flush=proc.stdin.flush))
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # the command stopped reading: its exit status says why
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise InfrastructureError(
                f"box {self.name}: {self.shown[0]} timed out after {timeout:.0f}s") from None
        finally:
            if proc.poll() is None:  # an exception from the producer: do not leave it running
                proc.kill()
                proc.wait(timeout=10)
            for t in self.readers:
                t.join(timeout=10)
        return RunResult(self.shown, proc.returncode, bytes(self.out), bytes(self.err))

    def cancel(self) -> None:
        """Not needed after all: close its stdin (the remote side sees an empty request)."""
        if self.used:
            return
        self.used = True
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for t in self.readers:
            t.join(timeout=10)


def _run_process(name: str, argv, shown, input, timeout) -> RunResult:
    """Run a local process, feeding input while draining stdout/stderr, under a deadline."""
    return Started(name, argv, shown, stdin=input is not None).finish(input, timeout)


def _reader(recv, sink: bytearray, ch=None) -> threading.Thread:
    def loop() -> None:
        while True:
            try:
                data = recv(65536)
            except TimeoutError:
                if ch is not None and ch.closed:
                    return
                continue
            except (OSError, ValueError):
                return
            if not data:
                return
            sink.extend(data)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _wait_ready(readline, ready: bytes, timeout: float, abort) -> bytes | None:
    """Read lines (in a thread) up to the `ready` line; return what came before it, or None
    if the process ended without saying `ready`."""
    lines: list[bytes] = []
    found: list[bool] = []

    def read() -> None:
        while True:
            line = readline()
            if not line:
                return
            if line.rstrip(b"\r\n") == ready:
                found.append(True)
                return
            lines.append(line)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        abort()
        t.join(5)
        raise InfrastructureError(f"no answer within {timeout:.0f}s")
    return b"".join(lines) if found else None


def _describe(e: BaseException) -> str:
    import paramiko

    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
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
