"""Is the box already on this release? One OpenSSH round trip, before any Fabric session.

A re-push of an unchanged dist is the common case, and its whole answer is the box's state
probe (boxstate): taking the lock, reading `current` and checking the release's files
against the listing recorded when it was verified. Run through the OpenSSH client (C crypto,
no paramiko import, no Python key exchange), that probe answers in a few milliseconds on
top of the login. When the decision is "unchanged" the box is done; anything else (a push,
a busy lock, a foreign entry, an unreachable box, an unknown host key) goes the full way,
which does and words everything as before. Only used when this machine last left the box
on the same release, so a push pays nothing extra in the usual case.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time

from warpforge_launch import ssh
from warpforge_launch.errors import UsageError
from warpforge_launch.lab import pushplan
from warpforge_launch.lab.boxstate import LOCKED, lock_argv, parse_state

# The probe carries no secret (a lock command out; release names and one digest back), so
# it may skip the post-quantum hybrid key exchange, which costs about 90 ms of CPU on each
# side of a loopback login here; every default stays allowed after it.
_PROBE_KEX = ("curve25519-sha256", "curve25519-sha256@libssh.org")


def usable(box, opts) -> bool:
    """Whether the check can answer for this box: strict host keys over OpenSSH, and no
    full verification asked for."""
    policy = opts.host_key_policy or getattr(box, "host_key_policy", "strict")
    return (box.transport == "ssh" and policy == "strict" and opts.bulk != "paramiko"
            and not (opts.verify_all or opts.repair) and shutil.which("ssh") is not None)


def unchanged(box, install_dir: str, m, opts, result_type):
    """A BoxResult "unchanged" when the box is on m's release, else None (go the full way).

    The lock is taken without waiting: a busy box goes the full way, which waits for it."""
    t0 = time.time()
    try:
        ep = ssh.Endpoint.of(box, "strict")
        argv = ssh.argv(ep, shlex.join(lock_argv(install_dir, 0)),
                        connect_timeout=opts.timeouts.connect, kex_first=_PROBE_KEX)
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=opts.timeouts.connect + opts.timeouts.command)
    except (UsageError, OSError, subprocess.TimeoutExpired):
        return None  # the full way says what is wrong
    t1 = time.time()
    said, marker, _ = done.stdout.partition(LOCKED + b"\n")
    if done.returncode != 0 or not marker:
        return None
    state = parse_state(said.decode(errors="replace"))
    if state.current_foreign or state.bin_foreign:
        return None
    d = pushplan.decide(state, m, keep=opts.keep, suffix="-")
    if d.action != pushplan.UNCHANGED:
        return None
    r = result_type(box.name, action="unchanged", release=d.release, previous=state.current,
                    locked=(t0, t1))
    r.notes += [f"left alone (not made by warpforge): {install_dir}/releases/{n}"
                for n in state.foreign]
    r.notes += [f"removed a stale partial upload: {n}" for n in state.swept]
    return r
