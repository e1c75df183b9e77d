"""Sweeps on the loopback Ray head: every cell posted concurrently over a pool of
kept-alive connections, tracked with one ``GET /api/jobs/`` per refresh.

The head declares one fake GPU and the ``nvidia`` resource (no ``amd``), so the two GPU
types of this matrix are NONE and NVIDIA.
"""

from __future__ import annotations

import threading
import time

import pytest
import yaml

from tests.testlab.payload import log_value
from warpforge_launch import sweep_launch, sweeps
from warpforge_launch.jobs import JobState
from warpforge_launch.launcher import Launcher


@pytest.fixture()
def launcher(tmp_path, ray_url, fake_snakegrinder, output_root):
    doc = {"default_scheduler": "raylab", "schedulers": {"raylab": {
        "type": "ray", "dashboard_url": ray_url, "snakegrinder": str(fake_snakegrinder),
        "output_root": str(output_root), "connect_timeout": 2, "request_timeout": 15}}}
    inv = tmp_path / "inventory.yaml"
    inv.write_text(yaml.safe_dump(doc))
    with Launcher(str(inv)) as launcher:
        yield launcher


def spec(tmp_path, gpus=("NONE", "NVIDIA"), **env):
    for name in ("alpha", "beta"):
        (tmp_path / f"{name}.py").write_text("class SimpleMLP:\n    pass\n")
    return sweeps.parse({
        "models": [{"source": "alpha.py", "class": "SimpleMLP"},
                   {"source": "beta.py", "class": "SimpleMLP",
                    "env": {"WF_FAKE_EXIT": "3", "WF_FAKE_EXIT_INPUTS": "[(4, 8, 'f32')]"}}],
        "inputs": ["[(1, 8)]", "[(4, 8)]", "[(16, 8)]"], "gpus": list(gpus),
        "options": {"memory": "128M", "timeout": 3, "env": {"WF_USER_CELL": "x", **env}}},
        base_dir=tmp_path)


def observe(launcher):
    """Every request of the instance's clients: (method, path, thread)."""
    entry = launcher.inventory.scheduler("raylab")
    sched = launcher._instance(entry.name, entry.type, entry.config)
    seen: list[tuple[str, str, int]] = []
    lock = threading.Lock()

    def note(method, path):
        with lock:
            seen.append((method, path, threading.get_ident()))

    sched.client.observers.append(note)
    return seen


def wait_all(launcher, sweep_id, deadline_s=180):
    end = time.monotonic() + deadline_s
    while True:
        _, cells = sweep_launch.status(launcher, sweep_id)
        if all(c.status.state.terminal for c in cells):
            return cells
        assert time.monotonic() < end, sweep_launch.summary(cells)
        time.sleep(1.0)


def test_a_2x3x2_sweep_is_posted_concurrently(launcher, tmp_path):
    seen = observe(launcher)
    sweep_id, failed = sweep_launch.submit(launcher, spec(tmp_path))
    assert failed == {}
    posts = [s for s in seen if s[:2] == ("POST", "/api/jobs/")]
    assert len(posts) == 12
    assert len({thread for *_, thread in posts}) > 1  # sent side by side, not one by one
    seen.clear()
    cells = wait_all(launcher, sweep_id)
    # each refresh is one request for every cell
    assert {(m, p) for m, p, _ in seen} == {("GET", "/api/jobs/")}
    by_cell = {(c.key["model"], c.key["shape"], c.key["gpu"]): c for c in cells}
    failed_cells = {k for k, c in by_cell.items() if c.status.state is JobState.FAILED}
    assert failed_cells == {("beta", "[(4, 8)]", "NONE"), ("beta", "[(4, 8)]", "NVIDIA")}
    for (model, shape, gpu), c in by_cell.items():
        text = "".join(launcher.logs(c.status.job_id))
        argv = log_value(text, "ARGV")
        assert argv[argv.index("--source") + 1].endswith(f"{model}.py")
        assert argv[argv.index("--inputs") + 1].startswith(shape[:-2].rstrip(")"))
        assert log_value(text, "WARPFORGE_CORRELATION_ID") == c.correlation_id
        assert log_value(text, "USER_ENV") == {"WF_USER_CELL": "x"}
        assert (log_value(text, "CUDA_VISIBLE_DEVICES") == "0") == (gpu == "NVIDIA")
    _, rows = sweep_launch.results(launcher, sweep_id)
    assert sorted((r.success, r.exit_code) for _, r in rows) == \
        [(False, 3)] * 2 + [(True, 0)] * 10


def test_cancel_of_a_sweep_cancels_every_cell(launcher, tmp_path):
    sweep_id, _ = sweep_launch.submit(launcher, spec(tmp_path, gpus=("NONE",),
                                                     WF_FAKE_SLEEP="60"))
    end = time.monotonic() + 90
    while True:
        _, cells = sweep_launch.status(launcher, sweep_id)
        if all(c.status.state is JobState.RUNNING for c in cells):
            break
        assert time.monotonic() < end, sweep_launch.summary(cells)
        time.sleep(0.5)
    _, cancelled, _ = sweep_launch.cancel(launcher, sweep_id)
    assert sorted(cancelled.values()) == [True] * 6
    cells = wait_all(launcher, sweep_id, 60)
    assert {c.status.state for c in cells} == {JobState.CANCELLED}
