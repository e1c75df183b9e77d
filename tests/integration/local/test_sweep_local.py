"""`warpforge-launch sweep` on the Local scheduler, with real processes.

Local runs no GPU jobs, so its matrix is 2 models x 3 shapes x GPU type NONE. Every cell
gets its own supervisor at once; they queue on the instance's slots, so no more than
``max_concurrent_jobs`` payloads ever run together (checked from each job's own start and
end times).
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import yaml

from tests.helpers import run_cli
from tests.testlab.builders import local_inventory, model_file

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}


def sweep_file(tmp_path, **env):
    a, b = model_file(tmp_path, "alpha.py"), model_file(tmp_path, "beta.py")
    doc = {"models": [{"source": str(a), "class": "SimpleMLP"},
                      {"source": str(b), "class": "SimpleMLP",
                       "env": {"WF_FAKE_EXIT": "3", "WF_FAKE_EXIT_INPUTS": "[(4, 8, 'f32')]"}}],
           "inputs": ["[(1, 8)]", "[(4, 8)]", "[(16, 8)]"],
           "options": {"timeout": 2, "env": {"WF_FAKE_RECORD": "out", **env}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def status(inv, sweep_id):
    done = run_cli("--inventory", str(inv), "--json", "sweep", "status", sweep_id)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_all(inv, sweep_id, deadline_s=90):
    end = time.monotonic() + deadline_s
    while True:
        shown = status(inv, sweep_id)
        if all(c["status"]["state"] in TERMINAL for c in shown["cells"]):
            return shown
        assert time.monotonic() < end, shown["summary"]
        time.sleep(0.3)


def test_cells_queue_under_the_limit_and_one_failing_cell_fails_alone(tmp_path,
                                                                     _private_home):
    inv = local_inventory(tmp_path / "inv.yaml", max_concurrent_jobs=2)
    spec = sweep_file(tmp_path, WF_FAKE_SLEEP="1")
    sub = run_cli("--inventory", str(inv), "sweep", str(spec))
    assert sub.returncode == 0, sub.stderr
    sweep_id = sub.stdout.strip()
    shown = wait_all(inv, sweep_id)
    cells = shown["cells"]
    assert len(cells) == 6
    failed = [(c["model"], c["shape"]) for c in cells if c["status"]["state"] == "FAILED"]
    assert failed == [("beta", "[(4, 8)]")]
    assert shown["summary"] == {"COMPLETED": 5, "FAILED": 1}
    spans = []
    for c in cells:
        meta = c["status"]["scheduler_metadata"]
        spans.append((datetime.fromisoformat(meta["started_at"]),
                      datetime.fromisoformat(meta["finished_at"])))
        out = Path(_private_home) / "local" / "local" / c["job_id"].removeprefix("local-") / "out"
        argv = json.loads((out / "argv.json").read_text())
        env = json.loads((out / "env.json").read_text())
        assert argv[argv.index("--source") + 1] == str(tmp_path / f"{c['model']}.py")
        assert argv[argv.index("--inputs") + 1].startswith(c["shape"][:-2].rstrip(")"))
        assert env["WARPFORGE_CORRELATION_ID"] == c["status"]["correlation_id"]
    running_at_once = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert running_at_once == 2  # they did run side by side, never beyond the limit
    result = run_cli("--inventory", str(inv), "--json", "sweep", "result", sweep_id)
    assert result.returncode == 1
    rows = json.loads(result.stdout)["cells"]
    assert sorted((r["ok"], r["exit_code"]) for r in rows) == [(False, 3)] + [(True, 0)] * 5
    assert all(r["mlir_bytes"] for r in rows if r["ok"])


def test_cancel_stops_running_and_queued_cells(tmp_path, _private_home):
    inv = local_inventory(tmp_path / "inv.yaml", max_concurrent_jobs=2)
    spec = sweep_file(tmp_path, WF_FAKE_SLEEP="60")
    sub = run_cli("--inventory", str(inv), "sweep", str(spec))
    assert sub.returncode == 0, sub.stderr
    sweep_id = sub.stdout.strip()
    end = time.monotonic() + 30
    while status(inv, sweep_id)["summary"].get("RUNNING", 0) < 2:
        assert time.monotonic() < end
        time.sleep(0.2)
    done = run_cli("--inventory", str(inv), "--json", "sweep", "cancel", sweep_id)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["cancelled"]) == 6
    assert wait_all(inv, sweep_id, 30)["summary"] == {"CANCELLED": 6}


def test_cancel_never_starts_a_queued_cell(tmp_path, _private_home, monkeypatch):
    """Throttle 1, three slow cells: the cancel of the running cell frees the one slot, and a
    queued cell must not start its payload there before its own cancel reaches it. A loaded
    machine is simulated by pausing the canceller 0.3 s before each signal it sends (longer
    than a queued supervisor's slot poll), so the race is hit every time, not by chance."""
    from warpforge_launch import sweep_launch
    from warpforge_launch.launcher import Launcher
    from warpforge_launch.schedulers import local_state

    inv = local_inventory(tmp_path / "inv.yaml", max_concurrent_jobs=4)
    model = model_file(tmp_path, "alpha.py")
    doc = {"models": [{"source": str(model), "class": "SimpleMLP"}],
           "inputs": ["[(1, 8)]", "[(4, 8)]", "[(16, 8)]"],
           "options": {"throttle": 1, "env": {"WF_FAKE_SLEEP": "60"}}}
    spec = tmp_path / "slow.yaml"
    spec.write_text(yaml.safe_dump(doc))
    sub = run_cli("--inventory", str(inv), "sweep", str(spec))
    assert sub.returncode == 0, sub.stderr
    sweep_id = sub.stdout.strip()
    end = time.monotonic() + 30
    while status(inv, sweep_id)["summary"] != {"RUNNING": 1, "PENDING": 2}:
        assert time.monotonic() < end
        time.sleep(0.2)
    real = local_state.send_signal

    def busy_then_signal(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(local_state, "send_signal", busy_then_signal)
    with Launcher(str(inv)) as launcher:
        _, cancelled, _ = sweep_launch.cancel(launcher, sweep_id)
    assert sorted(cancelled.values()) == [True] * 3
    cells = wait_all(inv, sweep_id, 30)["cells"]
    assert [c["status"]["state"] for c in cells] == ["CANCELLED"] * 3
    started = [c for c in cells if "started_at" in c["status"]["scheduler_metadata"]]
    assert len(started) == 1, [c["status"] for c in cells]
    for c in cells:
        if c not in started:
            assert "waiting for a free slot" in c["status"]["message"], c["status"]
