"""Local processes fed and drained at once, under a deadline: the `local` transport's
commands and the OpenSSH client carrying a push's stream (which may be started early, while
the caller is still deciding what to send)."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from warpforge_launch.errors import InfrastructureError, LaunchError

#: A producer writes the stdin of a command in chunks through the callable it is given.
Producer = Callable[[Callable[[bytes], None]], None]


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
            lines = [ln.strip() for ln in text.splitlines()
                     if ln.strip() and not ln.startswith("stamp ")]
            if lines:
                return lines[-1]
        return f"exit code {self.exit_code}"


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


def feed(input: bytes | Producer, write: Callable[[bytes], Any]) -> None:
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
        self.readers = [reader(self.proc.stdout.read1, self.out),
                        reader(self.proc.stderr.read1, self.err)]

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
                    feed(input, Sink(proc.stdin.write, fd=proc.stdin.fileno(),
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


def run_process(name: str, argv, shown, input, timeout) -> RunResult:
    """Run a local process, feeding input while draining stdout/stderr, under a deadline."""
    return Started(name, argv, shown, stdin=input is not None).finish(input, timeout)


def reader(recv, sink: bytearray, ch=None) -> threading.Thread:
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


def wait_ready(readline, ready: bytes, timeout: float, abort) -> bytes | None:
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
