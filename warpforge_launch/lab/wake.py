"""Wake GPU boxes with a magic packet, then wait until each answers SSH (with a deadline).

The packet goes to the address and port the inventory gives for the box (its LAN broadcast
address in the lab, 127.0.0.1 in tests), always passed explicitly: wakeonlan's own default
is 255.255.255.255:9. Waiting polls for an SSH banner, as the original polled `ssh ... echo
up`: every `poll` seconds until `timeout` (defaults as the original: 10 s and 60 s).
"""

from __future__ import annotations

import dataclasses
import math
import re
import socket
import time
from collections.abc import Callable, Sequence

from warpforge_launch import ssh
from warpforge_launch.errors import LaunchError, UsageError
from warpforge_launch.lab.remote import BoxLike

_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$", re.I)


@dataclasses.dataclass
class WakeResult:
    box: str
    sent: bool = False
    reachable: bool = False
    seconds: float = 0.0
    attempts: int = 0
    note: str = ""
    error: str | None = None  # the packet could not be sent

    @property
    def ok(self) -> bool:
        return self.reachable


def send_magic_packet(box: BoxLike) -> None:
    """One magic packet for the box's MAC to its configured wake-on-LAN host and port."""
    import wakeonlan

    mac, host, port = box.mac, box.wol_host, box.wol_port
    if not mac or not _MAC.match(mac):
        raise UsageError(f"box {box.name}: no valid MAC address for wake-on-LAN ({mac!r})",
                         hint="set boxes.<name>.mac in the inventory, e.g. aa:bb:cc:dd:ee:01")
    if not host or not port:
        raise UsageError(f"box {box.name}: wake-on-LAN needs wol_host and wol_port",
                         hint="set the LAN broadcast address and port (usually 9) in the "
                              "inventory")
    try:
        if not 1 <= int(port) <= 65535:  # the socket layer would wrap 70000 to 4464
            raise ValueError(f"port {port} is outside 1-65535")
        wakeonlan.wake(mac, host=str(host), port=int(port))
    except (OSError, OverflowError, ValueError) as e:  # bad port, no route, unknown name
        raise WakeFailed(f"box {box.name}: wake-on-LAN packet to {host}:{port} failed: "
                         f"{getattr(e, 'strerror', None) or e}") from None


class WakeFailed(LaunchError):
    """The magic packet could not be sent: that box's failure, not the whole run's."""


def ssh_banner(address: str, port: int, timeout: float) -> str | None:
    """None if an SSH server answers at address:port within timeout, else why not."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            if s.recv(8).startswith(b"SSH-"):
                return None
            return "no SSH banner"
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return "timed out"
    except OSError as e:
        return e.strerror or str(e)


def wait_for_ssh(box: BoxLike, *, timeout: float = 60.0, poll: float = 10.0,
                 probe_timeout: float = 5.0,
                 on_attempt: Callable[[BoxLike, int, float, str | None], None] | None = None
                 ) -> WakeResult:
    """Poll the box's SSH port until it answers or `timeout` seconds have passed."""
    r = WakeResult(box.name)
    if box.transport == "local":
        r.reachable, r.note = True, "local"
        return r
    t0 = time.monotonic()
    deadline = t0 + timeout
    while True:
        tick = time.monotonic()
        r.attempts += 1
        why = ssh_banner(box.host, box.port,
                         max(0.1, min(probe_timeout, deadline - tick)))
        r.seconds = time.monotonic() - t0
        if on_attempt:
            on_attempt(box, r.attempts, r.seconds, why)
        if why is None:
            r.reachable = True
            r.note = f"up after {r.seconds:.1f}s"
            return r
        if time.monotonic() >= deadline:
            r.note = f"unreachable after {timeout:.0f}s ({why})"
            return r
        time.sleep(max(0.0, min(tick + poll, deadline) - time.monotonic()))


def wake_box(box: BoxLike, *, send: bool = True, timeout: float = 60.0, poll: float = 10.0,
             on_attempt=None) -> WakeResult:
    """Send the packet (unless the box is local or has no MAC), then wait for SSH."""
    sent, note = False, ""
    if box.transport != "local" and send:
        if box.mac:
            try:
                send_magic_packet(box)
                sent = True
            except WakeFailed as e:
                # no packet will wake it: look once, do not wait out the deadline
                r = wait_for_ssh(box, timeout=min(timeout, 1.0), poll=poll,
                                 on_attempt=on_attempt)
                r.note = f"{e}; " + ("up anyway" if r.reachable else "not woken")
                r.error = str(e)
                return r
        else:
            note = "no MAC in the inventory: not woken; "
    r = wait_for_ssh(box, timeout=timeout, poll=poll, on_attempt=on_attempt)
    r.sent, r.note = sent, note + r.note
    return r


def wake_boxes(boxes: Sequence[BoxLike], *, send: bool = True, timeout: float = 60.0,
               poll: float = 10.0, parallel: int = 8, on_attempt=None) -> list[WakeResult]:
    """Wake every box and wait for all of them in parallel; one result per box, in order."""
    if not (math.isfinite(timeout) and math.isfinite(poll)) or timeout <= 0 or poll <= 0:
        raise UsageError(f"wake timeout and poll interval must be positive "
                         f"(got {timeout}, {poll})")
    for box in boxes:  # bad input first: no packet is sent unless every box can be woken
        if send and box.transport != "local" and box.mac:
            if not _MAC.match(box.mac):
                raise UsageError(f"box {box.name}: invalid MAC address {box.mac!r}")
    return ssh.fan_out(list(boxes), lambda b: wake_box(b, send=send, timeout=timeout,
                                                       poll=poll, on_attempt=on_attempt),
                       parallel)
