"""gpu-info against the loopback sshd boxes, with vendor-tool test doubles on their PATH.

No GPU exists here: `nvidia-smi`, `rocm-smi` and `amd-smi` on the boxes are test doubles that
check they were called with the documented arguments and print outputs in the vendors'
documented formats (tests/fixtures/gpu, see its README). Everything else is real: the sshd
boxes, the SSH connector, the per-box /opt overlay (so each box has its own tools), the
wake-on-LAN path for the sleeping box, and a black-hole listener for the timeout.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli
from tests.testlab import gpudoubles

pytestmark = pytest.mark.ssh

install = gpudoubles.install


@pytest.fixture
def bindir(install_dir) -> str:
    return f"{install_dir}/bin"


@pytest.fixture
def inventory(write_inventory, bindir):
    def make(**kw) -> str:
        return str(write_inventory(lab={"gpu_tool_path": [bindir]}, **kw))
    return make


def by_box(data: dict) -> dict[str, dict]:
    return {b["box"]: b for b in data["boxes"]}


def test_both_vendors_read_and_a_sleeping_box_left_asleep(ssh_lab, sleeping_box, bindir,
                                                           inventory):
    install(ssh_lab, "nvidia", bindir, "nvidia-smi", gpudoubles.nvidia())
    install(ssh_lab, "amd", bindir, "rocm-smi", gpudoubles.rocm())
    inv = inventory()
    packets = len(ssh_lab.wol_received())
    proc = run_cli("gpu-info", "--inventory", inv, "--json", check_json=True)
    assert proc.returncode == 0, proc.stderr
    boxes = by_box(proc.json)
    assert {n: (b["state"], b["tool"], b["gpu_count"]) for n, b in boxes.items()} == {
        "nvidia": ("ok", "nvidia-smi", 2), "amd": ("ok", "rocm-smi", 2),
        sleeping_box: ("asleep", None, 0)}
    assert boxes[sleeping_box]["message"] == "connection refused"
    gpu = {(g["box"], g["index"]): g for g in proc.json["gpus"]}
    assert gpu["nvidia", 1] == {
        "box": "nvidia", "vendor": "NVIDIA", "index": 1, "name": "NVIDIA A100-SXM4-40GB",
        "uuid": "GPU-b0a0d5e2-44c1-1f6e-0c77-9e3a5d2b8f41", "driver": "535.104.05",
        "memory_total_mib": 40960, "memory_used_mib": 0, "utilization_pct": 0.0,
        "temperature_c": 31.0}
    assert (gpu["amd", 0]["name"], gpu["amd", 0]["driver"], gpu["amd", 0]["memory_total_mib"],
            gpu["amd", 0]["temperature_c"]) == ("AMD Instinct MI210", "6.8.5", 65520, 38.0)
    # asleep means left asleep: no packet, no sshd
    assert len(ssh_lab.wol_received()) == packets and not ssh_lab.running(sleeping_box)

    table = run_cli("gpu-info", "--inventory", inv, "--boxes", "gpu-boxes")
    assert table.returncode == 0
    assert "A100-SXM4-40GB" in table.stdout and "MI210" in table.stdout
    assert "gpu-info: 4 GPU(s) on 2 of 2 box(es)" in table.stdout


def test_box_without_its_tool_and_the_amd_smi_fallback(ssh_lab, bindir, inventory):
    install(ssh_lab, "amd", bindir, "amd-smi", gpudoubles.amd_smi())
    proc = run_cli("gpu-info", "--inventory", inventory(), "--boxes", "nvidia,amd", "--json",
                   check_json=True)
    assert proc.returncode == 1  # a GPU box could not list its GPUs
    boxes = by_box(proc.json)
    assert (boxes["nvidia"]["state"], boxes["nvidia"]["message"]) == ("no-tool", "no nvidia-smi")
    assert boxes["nvidia"]["reached"] and boxes["nvidia"]["failed"]
    assert (boxes["amd"]["state"], boxes["amd"]["tool"], boxes["amd"]["gpu_count"]) == (
        "ok", "amd-smi", 2)
    mi300 = [g for g in proc.json["gpus"] if g["box"] == "amd"]
    assert [(g["uuid"][:8], g["temperature_c"], g["memory_used_mib"]) for g in mi300] == [
        ("1fff74a1", 44.0, 283), ("3cff74a1", 41.0, None)]


def test_invoke_task_reports_a_failing_tool(ssh_lab, bindir, inventory):
    import subprocess
    import sys

    install(ssh_lab, "nvidia", bindir, "nvidia-smi",
            gpudoubles.nvidia("nvidia_driver_failed.txt", status=9))
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), "gpu-info",
                           "--inventory", inventory(), "--boxes", "nvidia", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr
    [box] = json.loads(proc.stdout)["boxes"]
    assert box["state"] == "failed"
    assert box["message"].startswith("nvidia-smi exited 9: NVIDIA-SMI has failed")


def test_wake_wakes_the_sleeper_then_reads_it(ssh_lab, sleeping_box, install_dir, inventory):
    inv = inventory()
    alone = run_cli("gpu-info", "--inventory", inv, "--boxes", sleeping_box, "--json",
                    check_json=True)
    assert alone.returncode == 3  # nothing reachable at all
    assert by_box(alone.json)[sleeping_box]["state"] == "asleep"
    # the box is stopped: its /opt layer can be written from here (no live overlay)
    tool = ssh_lab.landed(sleeping_box, f"{install_dir}/bin/nvidia-smi")
    tool.parent.mkdir(parents=True, exist_ok=True)
    tool.write_text(gpudoubles.nvidia("nvidia_not_available.csv"))
    tool.chmod(0o755)
    packets = len(ssh_lab.wol_received())
    proc = run_cli("gpu-info", "--inventory", inv, "--boxes", sleeping_box, "--wake", "--json",
                   check_json=True)
    assert proc.returncode == 0, proc.stderr
    [box] = proc.json["boxes"]
    assert (box["state"], box["woken"], box["tool"], box["vendor"]) == (
        "ok", True, "nvidia-smi", "NONE")  # a box of no declared vendor: every tool is tried
    assert [(g["name"], g["utilization_pct"], g["temperature_c"]) for g in proc.json["gpus"]] \
        == [("NVIDIA GeForce GTX 960M", None, 44.0), ("Tesla K80", None, None)]
    sent = ssh_lab.wol_received()[packets:]
    assert [p["box"] for p in sent] == [sleeping_box]



def test_black_hole_box_is_reported_within_the_timeout(ssh_lab, bindir, inventory, black_hole,
                                                        install_dir):
    install(ssh_lab, "nvidia", bindir, "nvidia-smi", gpudoubles.nvidia())
    hole = {"transport": "ssh", "address": "127.0.0.1", "port": black_hole,
            "identity_file": str(ssh_lab.client_key), "known_hosts_file": str(ssh_lab.known_hosts),
            "gpu_type": "NVIDIA", "gpu_count": 1, "install_dir": install_dir}
    inv = inventory(names=["nvidia"], extra_boxes={"hole": hole})
    t0 = time.monotonic()
    proc = run_cli("gpu-info", "--inventory", inv, "--timeout", "4", "--json", check_json=True)
    took = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    boxes = by_box(proc.json)
    assert boxes["nvidia"]["state"] == "ok" and boxes["nvidia"]["gpu_count"] == 2
    assert boxes["hole"]["state"] in ("unreachable", "timed-out"), boxes["hole"]
    assert not boxes["hole"]["reached"] and boxes["hole"]["failed"]
    assert boxes["hole"]["seconds"] <= 4.5
    assert took < 20, f"gpu-info waited {took:.1f}s on a 4 s per-box deadline"


def test_a_tool_that_hangs_on_a_box_that_answered_is_not_unreachable(ssh_lab, bindir,
                                                                      inventory):
    """The box answered (its shell started the tool): exit 1 and `reached`, not exit 3 "no
    box could be reached"."""
    install(ssh_lab, "nvidia", bindir, "nvidia-smi", "#!/bin/sh\nexec sleep 30\n")
    proc = run_cli("gpu-info", "--inventory", inventory(names=["nvidia"]), "--timeout", "3",
                   "--json", check_json=True)
    assert proc.returncode == 1, proc.stderr
    [box] = proc.json["boxes"]
    assert (box["state"], box["reached"], box["failed"]) == ("timed-out", True, True)
    assert box["message"] == "nvidia-smi did not finish within 3s"
    table = run_cli("gpu-info", "--inventory", inventory(names=["nvidia"]), "--timeout", "3")
    assert "gpu-info: 0 GPU(s) on 0 of 1 box(es), 1 failed" in table.stdout


def test_unknown_box_is_bad_input(inventory):
    proc = run_cli("gpu-info", "--inventory", inventory(), "--boxes", "nvidia,ghost")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no box, alias or group named 'ghost'")
    assert "Traceback" not in proc.stderr



@pytest.mark.parametrize("case", ["unknown", "changed"])
def test_an_unknown_or_changed_host_key_is_refused_as_distribute_refuses_it(
        ssh_lab, bindir, install_dir, tmp_path, write_inventory, case):
    """The lab connector's words (fingerprint; ssh-keygen -R for a changed key, never "add
    it"), exit 2 like `invoke distribute`, even with another box answering."""
    install(ssh_lab, "amd", bindir, "rocm-smi", gpudoubles.rocm())
    known = tmp_path / "known_hosts"
    b = ssh_lab.boxes["nvidia"]
    amd_key = ssh_lab.host_key_line("amd").split(" ", 1)[1]
    # changed: amd's key filed under nvidia's address, what a man in the middle looks like
    recorded = "" if case == "unknown" else f"[{b.address}]:{b.port} {amd_key}\n"
    known.write_text(recorded)
    stranger = {"transport": "ssh", "address": b.address, "port": b.port, "user": b.user,
                "identity_file": str(ssh_lab.client_key), "known_hosts_file": str(known),
                "gpu_type": "NVIDIA", "gpu_count": 1, "install_dir": install_dir}
    inv = str(write_inventory(names=["amd"], extra_boxes={"stranger": stranger},
                              lab={"gpu_tool_path": [bindir]}))
    proc = run_cli("gpu-info", "--inventory", inv, "--json", check_json=True)
    assert proc.returncode == 2, proc.stderr
    boxes = by_box(proc.json)
    assert boxes["amd"]["state"] == "ok"
    box = boxes["stranger"]
    assert (box["state"], box["reached"], box["failed"]) == ("refused", False, True)
    key = f"[{b.address}]:{b.port}"
    if case == "unknown":
        assert box["message"].startswith(f"box stranger: host key for {key} (ssh-ed25519 "
                                         "SHA256:")
        assert box["message"].endswith(f"is not in {known}: refusing to connect")
        assert f"ssh-keyscan -p {b.port} {b.address}" in box["hint"]
        assert "accept-new" in box["hint"]
    else:
        assert box["message"].startswith(f"box stranger: host key for {key} does not match "
                                         f"{known} (got SHA256:")
        assert f"ssh-keygen -R '{key}' -f {known}" in box["hint"]
    assert known.read_text() == recorded  # strict: nothing was recorded or replaced
    table = run_cli("gpu-info", "--inventory", inv, "--boxes", "stranger")
    assert table.returncode == 2
    assert f"hint: stranger: {box['hint']}" in table.stderr
    assert "Traceback" not in table.stderr


def test_a_timed_out_call_leaves_nothing_running_on_the_box(ssh_lab, bindir, inventory):
    """The box's own `timeout` stops the script and the hung tool: nothing of ours is
    re-parented to init, one more pair per call. The double writes its PIDs (its shell and
    its sleep); the wrapper shell carries the test's unique bindir in its command line."""
    from tests.testlab.sshboxes import alive

    pids = f"{bindir}/hung.pids"
    install(ssh_lab, "nvidia", bindir, "nvidia-smi",
            f"#!/bin/sh\necho $$ >> {pids}\nsleep 100 &\necho $! >> {pids}\nwait\n")
    proc = run_cli("gpu-info", "--inventory", inventory(names=["nvidia"]), "--timeout", "3",
                   "--json", check_json=True)
    assert proc.returncode == 1, proc.stderr
    [box] = proc.json["boxes"]
    assert (box["state"], box["reached"]) == ("timed-out", True)
    assert box["message"] == "nvidia-smi did not finish within 3s"
    started = [int(p) for p in ssh_lab.ssh("nvidia", "cat", pids).stdout.split()]
    assert len(started) == 2

    def ours() -> list[int]:
        found = [p for p in started if alive(p)]
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and bindir in (d / "cmdline").read_bytes().decode(
                        errors="replace") and alive(int(d.name)):
                    found.append(int(d.name))
            except OSError:
                pass
        return found

    deadline = time.monotonic() + 5
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ours(), f"still running on the box: {ours()}"
