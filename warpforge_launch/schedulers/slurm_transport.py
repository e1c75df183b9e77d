"""How Slurm client commands reach the cluster: on this machine, or on a login node over SSH.

Both take an argv list and never a shell string from the caller; the SSH transport sends
``shlex.join(argv)`` (the remote side always has a shell). The SSH transport uses OpenSSH
with ControlMaster/ControlPersist, as Ansible does, so a connection made by one CLI call is
reused by the next (about 5 ms instead of 0.3 s on loopback). Its OpenSSH options come from
warpforge_launch.ssh, the one renderer every SSH user of the project shares.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence

from warpforge_launch.errors import InfrastructureError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

# How OpenSSH words a failure of the connection itself (before any remote command ran);
# a session that broke later says "Connection to HOST closed by remote host" or "client_loop"
_CONNECT_FAILED = ("ssh: connect to host", "ssh: Could not resolve hostname",
                   "Permission denied (", "Host key verification failed",
                   "kex_exchange_identification:", "Connection closed by ",
                   "Too many authentication failures", "Unable to negotiate with",
                   "Connection timed out during banner exchange", "banner exchange:")


def _connect_failed(line: str) -> bool:
    """An ssh stderr line that says the connection itself failed (``user@host: `` may lead
    an authentication refusal)."""
    if line.startswith(_CONNECT_FAILED):
        return True
    head, sep, rest = line.partition(": ")
    return bool(sep) and "@" in head and " " not in head and rest.startswith(_CONNECT_FAILED)


# what a client call returned (a named tuple: the `status` path defines no dataclass)
Completed = namedtuple("Completed", ("returncode", "stdout", "stderr"))


class Started:
    """A command started ahead of its stdin: ``send(data)`` gives it the first part now,
    ``finish(input)`` the rest, then waits for the answer; ``abandon()`` closes its stdin
    (after what was sent) and reaps it. A command that has not started yet gets what was
    sent with the rest, at ``finish``."""

    def __init__(self, finish: Callable[[str | None], Completed],
                 abandon: Callable[[], None] = lambda: None,
                 send: Callable[[str], None] | None = None):
        self._finish, self.abandon, self._send = finish, abandon, send
        self._early: list[str] = []

    def send(self, data: str) -> None:
        if self._send is not None:
            self._send(data)
        else:
            self._early.append(data)

    def finish(self, input: str | None) -> Completed:
        if self._early:
            input = "".join(self._early) + (input or "")
        return self._finish(input)


class Transport:
    """Run one argv where the Slurm clients live; raise InfrastructureError on timeout."""

    where: str = "this machine"

    def run(self, argv: Sequence[str], *, input: str | None = None,
            timeout: float, program: str | None = None) -> Completed:
        """``program`` names the client in messages (argv[0] may be ``env`` or ``bash``)."""
        raise NotImplementedError

    def start(self, argv: Sequence[str], *, timeout: float, program: str | None = None
              ) -> Started:
        """``run`` in two steps: start ``argv`` now, give it its stdin later (``finish``),
        so its start-up (an SSH session, a remote shell) overlaps the caller's own work. By
        default nothing starts before ``finish``."""
        return Started(lambda input: self.run(argv, input=input, timeout=timeout,
                                              program=program))

    def command(self, argv: Sequence[str], timeout: float
                ) -> tuple[list[str], dict[str, str] | None]:
        """The local argv (and environment) that runs ``argv`` where the clients live, for a
        caller that streams its output instead of collecting it (a fetch's archive)."""
        raise NotImplementedError

    def failure(self, returncode: int, stderr: str, program: str, timeout: float
                ) -> InfrastructureError | None:
        """The transport's own failure behind a return code (unreachable, timed out)."""
        return None

    def close(self) -> None:
        """Nothing to release by default (SSH masters persist on purpose)."""


class LocalTransport(Transport):
    """The Slurm clients on this machine. ``prefix`` (e.g. ``nsenter --net=...``) and ``env``
    let tests point it at a cluster in a network namespace."""

    def __init__(self, env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()):
        self.env = dict(env or {})
        self.prefix = list(prefix)

    def run(self, argv, *, input=None, timeout, program=None):
        return self.start(argv, timeout=timeout, program=program, stdin=input is not None
                          ).finish(input)

    def start(self, argv, *, timeout, program=None, stdin=True):
        full = [*self.prefix, *argv]
        env = {**os.environ, **self.env} if self.env else None
        program = program or argv[0]
        try:
            proc = _start_group(full, env, stdin)
        except FileNotFoundError:
            raise InfrastructureError(f"`{program}` is not installed on {self.where}",
                                      hint="install the Slurm client tools") from None

        feeder = _Feeder(proc)

        def finish(input):
            try:
                return _finish_group(proc, full, input, timeout, feeder)
            except subprocess.TimeoutExpired as exc:
                raise InfrastructureError(
                    f"`{program}` did not answer within {timeout:g}s on {self.where}"
                    f"{_said(exc.stderr)}", hint="is slurmctld up? (a down controller "
                    "blocks every client call)") from None

        return Started(finish, lambda: _abandon(proc, feeder), feeder.send)

    def command(self, argv, timeout):
        return [*self.prefix, *argv], ({**os.environ, **self.env} if self.env else None)


def _start_group(argv: list[str], env: Mapping[str, str] | None = None,
                 stdin: bool = True) -> subprocess.Popen:
    """Start in a session of its own, so that the whole group can be killed at the deadline:
    an sbatch left retrying behind a killed shell could still submit the job after we
    reported failure."""
    return subprocess.Popen(argv, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


class _Feeder:
    """Writes the first part of a started command's stdin on a thread of its own, so that a
    large part (or a command slow to read) never blocks the caller; ``done`` waits for it."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.thread = proc, None

    def send(self, data: str) -> None:
        import threading

        def write():
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass  # the command went away: finishing it says how

        self.done(None)
        self.thread = threading.Thread(target=write, name="stdin-feeder", daemon=True)
        self.thread.start()

    def done(self, timeout: float | None) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                return False
        return True


def _finish_group(proc: subprocess.Popen, argv: list[str], input: str | None,
                  timeout: float, feeder: _Feeder | None = None) -> Completed:
    import time

    start = time.monotonic()
    try:
        if feeder is not None and not feeder.done(timeout):
            raise subprocess.TimeoutExpired(argv, timeout)  # it never read what was sent
        out, err = proc.communicate(input, timeout=max(0.0, timeout - (time.monotonic()
                                                                       - start)))
    except subprocess.TimeoutExpired:
        # TERM first, so a shell can run its clean-up trap; then KILL whatever is left
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()  # what the client said before the deadline
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err) from None
    return Completed(proc.returncode, out, err)


def _abandon(proc: subprocess.Popen, feeder: _Feeder | None = None) -> None:
    """Close stdin after what was sent (the command sees EOF), reap it; kill it if it
    lingers."""
    try:
        if feeder is not None and not feeder.done(5):
            raise subprocess.TimeoutExpired(proc.args, 5)
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.communicate()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _said(stderr) -> str:
    """': <the client's first line>' when it printed something before the deadline."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    return f": {lines[0]}" if lines else ""


class SshTransport(Transport):
    """OpenSSH to a login node with strict host keys and a persistent shared connection."""

    def __init__(self, host: str, *, port: int = 22, user: str | None = None,
                 identity_file: str | None = None, known_hosts_file: str | None = None,
                 control_dir: str | os.PathLike, control_persist: int = 600,
                 connect_timeout: float = 10, ssh_binary: str = "ssh"):
        if not host or host.startswith("-") or any(c.isspace() or ord(c) < 32 for c in host):
            raise UsageError(f"login host {host!r} is not a host name")
        if user is not None and (not user or user.startswith("-") or
                                 any(c.isspace() or ord(c) < 32 for c in user)):
            raise UsageError(f"login user {user!r} is not a user name")
        self.host, self.port, self.user = host, port, user
        self.identity_file, self.known_hosts_file = identity_file, known_hosts_file
        from pathlib import Path  # here: the local clients' `status` path goes without it

        self.control_dir = Path(control_dir)
        self.control_persist = control_persist
        self.connect_timeout = connect_timeout
        self.ssh_binary = ssh_binary
        from warpforge_launch import ssh

        # validates every field (port range, quotes, control characters) before any use
        self.endpoint = ssh.Endpoint(host, port, user, identity_file, known_hosts_file)
        self.where = f"login node {user + '@' if user else ''}{host}:{port}"

    @property
    def control_path(self) -> Path:
        from warpforge_launch import ssh

        return ssh.control_path(self.control_dir, self.endpoint)

    def base_argv(self) -> list[str]:
        """The ssh client and its options (the project's one renderer), no destination."""
        from warpforge_launch import ssh

        self.control_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return ssh.client_options(self.endpoint, ssh=self.ssh_binary, read_config=True,
                                  connect_timeout=self.connect_timeout, alive=(15, 2),
                                  control=self.control_path, persist=self.control_persist)

    def run(self, argv, *, input=None, timeout, program=None):
        return self.start(argv, timeout=timeout, program=program, stdin=input is not None
                          ).finish(input)

    def start(self, argv, *, timeout, program=None, stdin=True):
        program = program or argv[0]
        # bounded on the login node too (coreutils timeout), so nothing keeps running there
        # after we gave up; the local deadline leaves it a moment to report
        remote = ["timeout", "-k", "2", f"{max(1.0, timeout - 1):g}", *argv]
        full = [*self.base_argv(), "--", self.host, shlex.join(remote)]
        try:
            proc = _start_group(full, None, stdin)
        except FileNotFoundError:
            raise InfrastructureError("the OpenSSH client `ssh` is not installed") from None
        feeder = _Feeder(proc)
        return Started(lambda input: self._finish(proc, full, input, timeout, program, feeder),
                       lambda: _abandon(proc, feeder), feeder.send)

    def _finish(self, proc, full, input, timeout, program, feeder=None) -> Completed:
        try:
            proc = _finish_group(proc, full, input, timeout + 2, feeder)
        except subprocess.TimeoutExpired as exc:
            raise InfrastructureError(f"`{program}` on {self.where} did not answer within "
                                      f"{timeout:g}s{_said(exc.stderr)}", hint="is slurmctld "
                                      "up, and the login node reachable?") from None
        if proc.returncode in (124, 137):  # the remote timeout fired
            raise InfrastructureError(f"`{program}` on {self.where} did not answer within "
                                      f"{timeout:g}s{_said(proc.stderr)}",
                                      hint="is slurmctld up?")
        if proc.returncode == 255:  # ssh's own failure: never the remote command's
            raise self._unreachable(proc.stderr)
        return proc

    def _unreachable(self, stderr: str) -> InfrastructureError:
        """ssh's exit 255, with its last word (and a missing identity file, which it only
        warns about before the refusal); ``not_sent`` when the connection itself failed."""
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        said = lines[-1] if lines else "ssh failed"
        key = next((ln for ln in lines if ln.startswith("Warning: Identity file")), None)
        if key and key != said:
            said = f"{said} ({key.removeprefix('Warning: ')})"
        return InfrastructureError(f"cannot reach {self.where}: {said}",
                                   hint="check the host, its host key in known_hosts, and "
                                   "the identity file",
                                   not_sent=any(_connect_failed(ln) for ln in lines))

    def command(self, argv, timeout):
        remote = ["timeout", "-k", "2", f"{max(1.0, timeout - 1):g}", *argv]
        return [*self.base_argv(), "--", self.host, shlex.join(remote)], None

    def failure(self, returncode, stderr, program, timeout):
        if returncode in (124, 137):
            return InfrastructureError(f"`{program}` on {self.where} did not finish within "
                                       f"{timeout:g}s{_said(stderr)}")
        if returncode == 255:
            return self._unreachable(stderr)
        return None

    def stop_master(self, timeout: float = 10) -> None:
        """End the shared connection (tests, or a user who wants it gone)."""
        if self.control_path.exists():
            subprocess.run([*self.base_argv(), "-O", "exit", "--", self.host], capture_output=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
