"""The lab head itself: loopback only, the declared resources, and found by PID."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.testlab import ray as raylab


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    out = subprocess.run(
        ["ss", "-ltnpH"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            found.append((host.strip("[]"), int(port)))
    return found


def test_every_lab_socket_listens_on_loopback_only(ray_head):
    pids = set(ray_head.processes())
    assert pids, "the lab head has no processes we can find by its temp dir"
    sockets = _listening(pids)
    assert ("127.0.0.1", raylab.DASHBOARD_PORT) in sockets
    outside = [(h, p) for h, p in sockets if h not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert outside == []


def test_head_declares_the_fake_gpu_and_vendor_resources(ray_head):
    (totals,) = raylab.node_totals(ray_head.url)
    assert totals["CPU"] == raylab.NUM_CPUS
    assert totals["GPU"] == raylab.NUM_GPUS
    assert totals["nvidia"] == 1 and "amd" not in totals  # so AMD routing can fail


def test_lab_processes_are_found_by_temp_dir_not_by_name(tmp_path):
    """Stopping the lab ends the processes naming its temp dir, never another cluster's."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    ours_dir = raylab.lab_dir() / "rt"
    other = subprocess.Popen([*sleeper, f"--temp-dir={tmp_path / 'rt'}", "ray::raylet"])
    ours = subprocess.Popen([*sleeper, f"--logs-dir={ours_dir}/session_x/logs"])
    try:
        found = raylab.lab_processes(ours_dir)
        assert ours.pid in found
        assert other.pid not in found
    finally:
        for proc in (other, ours):
            proc.kill()
            proc.wait(timeout=5)
