"""gpu-info on a `transport: local` box (real processes, the same script and wrapper an SSH box
runs) and how per-box states make the exit code."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from warpforge_launch.inventory import Box, GpuType
from warpforge_launch.lab import gpuinfo


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _ours(marker: str) -> list[int]:
    """Processes whose command line holds marker (the test's own tmp dir)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if marker in (p / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(p.name))
            except OSError:
                pass
    return [pid for pid in found if _alive(pid)]


def test_a_hung_tool_is_stopped_at_the_deadline_not_left_running(tmp_path):
    """The script runs under coreutils `timeout` where it runs: nothing outlives the call."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pids = tmp_path / "tool.pids"
    tool = bindir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho $$ >> {pids}\nsleep 100 &\necho $! >> {pids}\nwait\n")
    tool.chmod(0o755)
    box = Box(name="here", transport="local", gpu_type=GpuType.NVIDIA)
    [r] = gpuinfo.gather([box], timeout=2, tool_path=[str(bindir)])
    assert (r.state, r.reached, r.message) == (
        "timed-out", True, "nvidia-smi did not finish within 2s")
    assert r.failed and gpuinfo.exit_code([r]) == 1
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    deadline = time.monotonic() + 5
    while (left := [p for p in started if _alive(p)] + _ours(str(bindir))) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after the deadline: {left}"


def _r(state: str, reached: bool) -> gpuinfo.BoxGpus:
    return gpuinfo.BoxGpus("b", "NVIDIA", state, reached=reached)


def test_a_refused_box_is_bad_input_whatever_the_others_did():
    refused = _r("refused", False)
    assert refused.failed
    assert gpuinfo.exit_code([refused]) == 2
    assert gpuinfo.exit_code([refused, _r("ok", True)]) == 2
    assert gpuinfo.exit_code([refused, _r("timed-out", True)]) == 2
    assert gpuinfo.exit_code([_r("unreachable", False), _r("asleep", False)]) == 3
    assert gpuinfo.exit_code([_r("ok", True), _r("unreachable", False)]) == 1
    assert gpuinfo.exit_code([_r("ok", True), _r("asleep", False)]) == 0


@pytest.mark.parametrize("boxes", [[""], [","], [" , "]])
def test_a_boxes_value_that_names_no_box_is_bad_input(boxes, capsys, tmp_path):
    from warpforge_launch.cli import main

    inv = tmp_path / "inv.yaml"
    inv.write_text(f"boxes: {{here: {{transport: local, install_dir: {tmp_path / 'box'}}}}}\n")
    rc = main(["gpu-info", "--inventory", str(inv),
               *[a for b in boxes for a in ("--boxes", b)]])
    assert rc == 2 and "no box named" in capsys.readouterr().err
