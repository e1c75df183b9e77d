"""`gpu-info`: which GPUs the lab's boxes have, asked over SSH in parallel, one command a box.

Each box gets one remote shell (argv rendered by the one SSH connector, warpforge_launch.ssh)
that runs the vendor's tool and marks its output (lab.gpus.SCRIPT); a `local` box runs the
same script here. A box whose SSH port refuses or cannot be routed to is asleep: shown as
such, woken only with --wake (the lab's wake path: magic packet, then wait for SSH). Every box
has a deadline: a box that accepts and never answers is reported, not waited for; the script
runs under coreutils `timeout` on the box too, so a hung tool never outlives the call.
A host key OpenSSH refuses is explained by the lab's own connector (lab.remote), in the words
and with the hint `invoke distribute` gives.

Exit codes: 0 every box reached answered (asleep boxes are not failures without --wake);
1 some box failed (unreachable, timed out, a GPU box without its tool, a tool error, or a box
--wake could not wake); 2 bad input, including a box refused for its configuration (unknown or
changed host key, authentication failed); 3 no box could be reached at all.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from warpforge_launch import ssh
from warpforge_launch.errors import UsageError
from warpforge_launch.lab import gpus as gpu_tools

DEFAULT_TIMEOUT = 20.0
KILL_AFTER = 2  # seconds a tool gets after SIGTERM on the box before SIGKILL
_NO_TOOL = {"NVIDIA": "no nvidia-smi", "AMD": "no rocm-smi or amd-smi"}
# OpenSSH's words when the TCP connection itself fails: the box is off (or not there)
_ASLEEP = re.compile(r"connect to host \S+ port \d+: (Connection refused|No route to host|"
                     r"Connection timed out|Host is down|Network is unreachable)")


@dataclasses.dataclass
class BoxGpus:
    """What one box said (or why it said nothing)."""

    box: str
    vendor: str  # the inventory's gpu_type
    state: str  # ok | no-gpu | no-tool | failed | asleep | unreachable | timed-out | refused
    reached: bool = False  # a shell ran on the box
    tool: str | None = None
    gpus: list[gpu_tools.Gpu] = dataclasses.field(default_factory=list)
    message: str = ""
    hint: str = ""
    seconds: float = 0.0
    woken: bool = False
    wake_failed: bool = False

    @property
    def failed(self) -> bool:
        return (self.state in ("no-tool", "failed", "unreachable", "timed-out", "refused")
                or self.wake_failed)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("gpus")
        d["gpu_count"] = len(self.gpus)
        d["failed"] = self.failed
        d["seconds"] = round(self.seconds, 3)
        return d


def _command(box, vendor: str, tool_path: Sequence[str], connect_timeout: float,
             timeout: float) -> list[str]:
    # bounded where it runs: when we stop waiting, the box's tool is stopped too (it ends a
    # moment before our own deadline, so its partial output still names the hung tool)
    argv = ["timeout", "-k", str(KILL_AFTER), f"{max(1.0, timeout - 1):g}",
            *gpu_tools.script_argv(vendor, tuple(tool_path))]
    if box.transport == "local":
        return argv
    if box.transport != "ssh":
        raise UsageError(f"box {box.name}: unknown transport {box.transport!r}")
    try:
        ep = ssh.Endpoint.of(box)
    except UsageError as e:
        raise UsageError(f"box {box.name}: {e}", hint=e.hint) from None
    return ssh.argv(ep, shlex.join(argv), connect_timeout=connect_timeout)


def query_box(box, command: list[str], timeout: float) -> BoxGpus:
    """Run the GPU script on one box within `timeout` seconds; never raises for the box."""
    vendor = getattr(box.gpu_type, "value", str(box.gpu_type))
    r = BoxGpus(box.name, vendor, "failed")
    t0 = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        _timed_out(r, e.stdout, timeout)
        r.seconds = time.monotonic() - t0
        return r
    except OSError as e:
        r.message = f"cannot run {command[0]}: {e.strerror or e}"
        r.seconds = time.monotonic() - t0
        return r
    r.seconds = time.monotonic() - t0
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace").strip()
    if box.transport == "ssh" and proc.returncode == 255:
        m = _ASLEEP.search(err)
        if m:
            r.state, r.message = "asleep", m.group(1).lower()
        elif "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION" in err:
            r.state = "refused"
            r.message, r.hint = _host_key_refusal(box, err, timeout)
        elif "Permission denied" in err:
            r.state = "refused"
            r.message = f"authentication as {box.user or 'the default user'} failed: " \
                        f"{err.splitlines()[-1]}"
            r.hint = "check the box's user and identity_file in the inventory"
        else:
            r.state = "unreachable"
            r.message = err.splitlines()[-1] if err else "ssh failed"
        return r
    if proc.returncode in (124, 137):  # the box's own `timeout` stopped the script
        _timed_out(r, proc.stdout, timeout)
        return r
    r.reached = True
    if proc.returncode != 0:
        r.message = f"the remote shell exited {proc.returncode}: {err[:200] or 'no message'}"
        return r
    try:
        r.tool, r.gpus, problem = gpu_tools.parse_sections(gpu_tools.split_sections(out),
                                                           box.name)
    except gpu_tools.GpuParseError as e:
        r.message = str(e)
        return r
    if r.tool is None:
        r.state = "no-tool" if vendor in _NO_TOOL else "no-gpu"
        r.message = _NO_TOOL.get(vendor, "no nvidia-smi, rocm-smi or amd-smi")
    elif problem:
        r.message = problem
    else:
        r.state = "ok"
        r.message = "" if r.gpus else f"{r.tool} lists no GPU"
    return r


def _timed_out(r: BoxGpus, stdout: bytes | None, timeout: float) -> None:
    r.state, r.message = "timed-out", f"no answer within {timeout:g}s"
    started = gpu_tools.split_sections((stdout or b"").decode(errors="replace"))
    if started:  # the box answered: its tool is what hung
        r.reached = True
        r.message = f"{', '.join(started)} did not finish within {timeout:g}s"


def _host_key_refusal(box, err: str, timeout: float) -> tuple[str, str]:
    """(message, hint) for a host key OpenSSH refused: the lab connector looks at the key
    itself, so the words (fingerprint; unknown vs changed, with `ssh-keygen -R` for a changed
    one) are the ones every other lab command gives."""
    from warpforge_launch.errors import LaunchError
    from warpforge_launch.lab import remote

    said = err.splitlines()[-1]
    limit = max(1.0, timeout / 2)
    try:
        remote.open_session(box, timeouts=remote.Timeouts(connect=limit, banner=limit,
                                                          auth=limit)).close()
    except remote.HostKeyError as e:
        return str(e), e.hint or ""
    except LaunchError:
        pass  # gone or refusing otherwise since: OpenSSH's words are all there is
    known = ssh.Endpoint.of(box).known_hosts
    return (f"box {box.name}: host key refused by ssh: {said}",
            f"compare the box's host key with the one for it in {known}")


def gather(boxes: Sequence, *, timeout: float = DEFAULT_TIMEOUT, connect_timeout: float = 5.0,
           tool_path: Sequence[str] = gpu_tools.DEFAULT_TOOL_PATH, wake: bool = False,
           wake_timeout: float = 60.0, wake_interval: float = 10.0,
           parallel: int = 32) -> list[BoxGpus]:
    """Every box at once; with `wake`, asleep boxes are woken and asked again."""
    # ssh's own connect/banner deadline ends first and says why; `timeout` bounds the rest
    connect = max(1.0, min(connect_timeout, timeout / 2))
    commands = {b.name: _command(b, getattr(b.gpu_type, "value", str(b.gpu_type)), tool_path,
                                 connect, timeout)
                for b in boxes}  # bad input before any connection

    def ask(b) -> BoxGpus:
        return query_box(b, commands[b.name], timeout)

    results = ssh.fan_out(list(boxes), ask, parallel, name="gpu-info")
    if not wake:
        return results
    asleep = [b for b, r in zip(boxes, results, strict=True) if r.state == "asleep"]
    wakeable = [b for b in asleep if b.mac]
    by_name = {r.box: r for r in results}
    for b in asleep:
        if not b.mac:
            by_name[b.name].wake_failed = True
            by_name[b.name].message += "; cannot wake: no MAC in the inventory"
    if wakeable:
        from warpforge_launch.lab import wake as wake_mod

        woken = wake_mod.wake_boxes(wakeable, timeout=wake_timeout, poll=wake_interval,
                                    parallel=parallel)
        up = [b for b, w in zip(wakeable, woken, strict=True) if w.reachable]
        for b, w in zip(wakeable, woken, strict=True):
            if not w.reachable:
                by_name[b.name].wake_failed = True
                by_name[b.name].message = f"not woken: {w.note}"
        for r in ssh.fan_out(up, ask, parallel, name="gpu-info"):
            r.woken = True
            by_name[r.box] = r
    return [by_name[b.name] for b in boxes]


def exit_code(results: Sequence[BoxGpus]) -> int:
    """As `invoke distribute`: a box refused for its configuration (host key, credentials)
    is bad input, whatever the other boxes did; then no box reached; then any failure."""
    if any(r.state == "refused" for r in results):
        return 2
    if results and not any(r.reached for r in results):
        return 3
    return 1 if any(r.failed for r in results) else 0


# ---- output ---------------------------------------------------------------------------------
def _num(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def _memory(g: gpu_tools.Gpu) -> str:
    if g.memory_total_mib is None and g.memory_used_mib is None:
        return "-"
    return f"{_num(g.memory_used_mib)} / {_num(g.memory_total_mib)}"


def table(results: Sequence[BoxGpus]) -> None:
    from warpforge_launch.output import table as draw

    rows = []
    for r in results:
        state = r.state + (" (woken)" if r.woken else "")
        if not r.gpus:
            rows.append([r.box, state, "-", "-", "-", "-", "-", "-", r.message])
        for g in r.gpus:
            rows.append([r.box, state, g.index, g.name or "-", g.driver or "-", _memory(g),
                         _num(g.utilization_pct, "%"), _num(g.temperature_c, "C"), r.message])
    draw(["BOX", "STATE", "GPU", "NAME", "DRIVER", "MEMORY MiB", "UTIL", "TEMP", "NOTE"], rows)
    count = sum(len(r.gpus) for r in results)
    answered = sum(r.state in ("ok", "no-gpu") for r in results)
    asleep = sum(r.state == "asleep" for r in results)
    failed = sum(r.failed and r.state != "asleep" for r in results)
    print(f"gpu-info: {count} GPU(s) on {answered} of {len(results)} box(es)"
          + (f", {asleep} asleep" if asleep else "") + (f", {failed} failed" if failed else ""))
    for r in results:
        if r.hint:
            print(f"hint: {r.box}: {r.hint}", file=sys.stderr)


def as_json(results: Sequence[BoxGpus]) -> dict[str, Any]:
    return {"boxes": [r.to_dict() for r in results],
            "gpus": [g.to_dict() for r in results for g in r.gpus]}


def command(*, boxes: str | Sequence[str] | None = None, inventory: str | None = None,
            wake: bool = False, timeout: float | str | None = None,
            json_output: bool = False) -> int:
    """The body of `warpforge-launch gpu-info` and `invoke gpu-info`; returns the exit code.
    ``boxes``: None or [] (not given) is every box; a given value that names none (`''`,
    `,`) is bad input, never "every box"."""
    from warpforge_launch import inventory as inv_mod
    from warpforge_launch.lab.commands import box_selectors, check_positive

    given = [boxes] if isinstance(boxes, str) else list(boxes or ())
    selectors = [s for sel in given for s in box_selectors(sel)]
    inv = inv_mod.load(inventory or None)
    selected = inv.select_boxes(selectors)
    limit = check_positive("--timeout", timeout if timeout not in (None, "") else DEFAULT_TIMEOUT)
    results = gather(selected, timeout=limit, connect_timeout=inv.lab.connect_timeout,
                     tool_path=inv.lab.gpu_tool_path, wake=wake,
                     wake_timeout=inv.lab.wake_timeout, wake_interval=inv.lab.wake_interval)
    if json_output:
        from warpforge_launch.output import emit_json

        emit_json(as_json(results))
    else:
        table(results)
    return exit_code(results)
