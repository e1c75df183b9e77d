"""Is the box already on this release? One OpenSSH round trip, before any Fabric session.

A re-push of an unchanged dist is the common case, and its whole answer is the box's state
probe (boxstate): taking the lock, reading `current` and checking the release's files
against the listing recorded when it was verified. Run through the OpenSSH client (C crypto,
no paramiko import, no Python key exchange), that probe answers in a few milliseconds on
top of the login, and the login runs while this machine scans the dist. When the decision
is "unchanged" the box is done; anything else (a push, a busy lock, a foreign entry, an
unreachable box, an unknown host key) goes the full way, which does and words everything as
before. The probe only looks (a stale partial upload is left for the full way to sweep and
report), so killing it early is harmless: it is started for a box this machine has pushed
to, and let go when the dist turns out to differ from what the box was left on.
"""

from __future__ import annotations

import subprocess
import time

from warpforge_launch.errors import LaunchError

# Only what starting a probe needs is imported here: a re-push replaying the last run's
# probes (quickpush) starts them first and imports the rest while they log in.

# The probe carries no secret (a lock command out; release names and one digest back), so
# it may skip the post-quantum hybrid key exchange, which costs about 90 ms of CPU on each
# side of a loopback login here; every default stays allowed after it.
_PROBE_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")


def usable(box, opts) -> bool:
    """Whether the probe can answer for this box: strict host keys over OpenSSH, and no
    full verification asked for."""
    import shutil

    policy = opts.host_key_policy or getattr(box, "host_key_policy", "strict")
    return (box.transport == "ssh" and policy == "strict" and opts.bulk != "paramiko"
            and not (opts.verify_all or opts.repair) and shutil.which("ssh") is not None)


def probe_argv(box, install_dir: str, opts) -> list[str]:
    """The OpenSSH line of one box's probe (it takes the lock without waiting: a busy box
    goes the full way, which waits for it)."""
    import shlex

    from warpforge_launch import ssh
    from warpforge_launch.lab.boxstate import lock_argv

    ep = ssh.Endpoint.of(box, "strict")
    command = shlex.join(lock_argv(install_dir, 0, sweep=False))
    return ssh.argv(ep, command, connect_timeout=opts.timeouts.connect, kex_first=_PROBE_KEX)


class Probe:
    """The state probe of one box, started now and read by ``unchanged``."""

    def __init__(self, name: str, install_dir: str, argv: list[str], *, timeout: float):
        self.name, self.install_dir, self.timeout = name, install_dir, timeout
        self.t0 = time.time()
        # read once it has spoken (``said``): no reader threads to start
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError as e:
            raise LaunchError(f"box {name}: cannot run {argv[0]}: {e}") from e

    @classmethod
    def of(cls, box, install_dir: str, opts) -> Probe:
        return cls(box.name, install_dir, probe_argv(box, install_dir, opts),
                   timeout=opts.timeouts.connect + opts.timeouts.command)

    def cancel(self) -> None:
        """Not needed (or done): end our ssh client (the box's side ends with the
        connection, and the lock with it)."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate()

    def said(self, marker: bytes) -> bytes | None:
        """What the box printed before `marker`, read as soon as the marker arrives (the
        connection's teardown is not waited for); None if it never came in time."""
        import os
        import selectors

        out, end = bytearray(), time.monotonic() + self.timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while marker not in out:
                left = end - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                out += chunk
        return bytes(out.partition(marker)[0])

    def unchanged(self, m, result_type):
        """A BoxResult "unchanged" when the box is on m's release, else None."""
        from warpforge_launch.lab import pushplan
        from warpforge_launch.lab.boxstate import LOCKED, parse_state

        said = self.said(LOCKED + b"\n")  # the last line the probe prints: all went well
        t1 = time.time()
        self.cancel()
        if said is None:
            return None
        state = parse_state(said.decode(errors="replace"))
        if state.current_foreign or state.bin_foreign or state.stale:
            return None  # the full way refuses, or sweeps and says so
        if not pushplan.is_current(state, m):  # what decide() calls unchanged
            return None
        r = result_type(self.name, action="unchanged", release=state.current,
                        previous=state.current, locked=(self.t0, t1))
        r.notes += [f"left alone (not made by warpforge): {self.install_dir}/releases/{n}"
                    for n in state.foreign]
        return r


def start(boxes, opts, install_dir, hinted) -> dict[str, Probe]:
    """Probes for the boxes this machine left on some release (``hinted(box, dir)``)."""
    probes: dict[str, Probe] = {}
    for box in boxes:
        try:
            d = install_dir(box)
            if usable(box, opts) and hinted(box, d):
                probes[box.name] = Probe.of(box, d, opts)
        except LaunchError:
            continue  # the full way says what is wrong with this box
    return probes
