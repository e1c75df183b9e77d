"""The lab panel: awake probe, current release, smoke results, registry, through /api/boxes.

The boxes here are this machine (transport local, a real release tree on disk), a black
hole (a listener that accepts and never answers: awake, but its release read must time
out) and a port nobody listens on (asleep). The sshd boxes are in tests/integration/web/.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from warpforge_launch.lab.smoke import BoxOutcome, CheckResult, SmokeReport, write_junit  # noqa: E402
from warpforge_launch.web.app import Settings, create_app  # noqa: E402
from warpforge_launch.web.lab import parse_release, read_smoke  # noqa: E402

OLD = "0123456789abcdef0123456789abcdef"
NEW = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def release_tree(root: Path) -> Path:
    """What distribute leaves on a box: two releases, `current` on the newer one, history."""
    for name in (OLD, NEW):
        (root / "releases" / name / "bin").mkdir(parents=True)
    (root / "current").symlink_to(f"releases/{NEW}")
    (root / "releases" / ".history").write_text(
        f"2026-11-01T10:00:00Z {OLD}\n2026-11-02T11:30:00Z {NEW}\n")
    return root


def inventory(tmp_path: Path, boxes: dict) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(json.dumps({"version": 1, "schedulers": {"local": {"type": "local"}},
                                "boxes": boxes}))
    return path


def smoke_report(path: Path) -> Path:
    ok = BoxOutcome("here", steps=[CheckResult("reachable", "PASSED"),
                                   CheckResult("distribute", "PASSED", f"pushed {NEW}")])
    bad = BoxOutcome("hole").fail("trace-example", "no StableHLO markers in model.mlir")
    gone = BoxOutcome("gone", status="SKIPPED", reason="unreachable",
                      steps=[CheckResult("reachable", "SKIPPED", "no answer in 10s")])
    return write_junit(SmokeReport([ok, bad, gone]), path)


def test_boxes_awake_release_smoke_and_no_registry(tmp_path, black_hole, closed_port):
    here = release_tree(tmp_path / "here")
    inv = inventory(tmp_path, {
        "here": {"transport": "local", "install_dir": str(here), "gpu_type": "NVIDIA",
                 "gpu_count": 2, "aliases": ["mark1here"]},
        "hole": {"address": "127.0.0.1", "port": black_hole, "gpu_type": "AMD", "gpu_count": 1,
                 "known_hosts_file": str(tmp_path / "known_hosts")},
        "gone": {"address": "127.0.0.1", "port": closed_port},
    })
    junit = smoke_report(tmp_path / "reports" / "smoke-junit.xml")
    app = create_app(Settings(inventory=str(inv), refresh_interval=0, smoke_junit=junit,
                              ssh_timeout=1.0))
    with TestClient(app, base_url="http://127.0.0.1:8700") as c:
        t0 = time.monotonic()
        data = c.get("/api/boxes").json()
        first = time.monotonic() - t0
        t0 = time.monotonic()
        again = c.get("/api/boxes").json()
        cached = time.monotonic() - t0
    boxes = {b["name"]: b for b in data["boxes"]}
    assert list(boxes) == ["here", "hole", "gone"]  # inventory order
    assert boxes["here"]["awake"] is True and boxes["here"]["hash"] == NEW
    assert boxes["here"]["switched_at"] == "2026-11-02T11:30:00Z"
    assert (boxes["here"]["gpu_type"], boxes["here"]["gpu_count"]) == ("NVIDIA", 2)
    assert boxes["hole"]["awake"] is True and boxes["hole"]["hash"] is None
    assert boxes["hole"]["error"]  # the SSH banner never came: an error, within the timeout
    assert boxes["gone"]["awake"] is False and boxes["gone"]["hash"] is None
    assert first < 8, "probes are bounded by their timeouts"
    assert again == data and cached < first  # cached: no second banner wait
    assert boxes["here"]["smoke"]["status"] == "PASSED"
    assert boxes["hole"]["smoke"]["status"] == "FAILED"
    assert "no StableHLO markers" in boxes["hole"]["smoke"]["reason"]
    assert boxes["gone"]["smoke"]["status"] == "SKIPPED"
    assert data["registry"] == {"configured": False}
    assert data["smoke_report"] == str(junit)


def test_no_smoke_report_and_a_box_without_releases(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    inv = inventory(tmp_path, {"here": {"transport": "local", "install_dir": str(empty)}})
    app = create_app(Settings(inventory=str(inv), refresh_interval=0,
                              smoke_junit=tmp_path / "missing.xml"))
    with TestClient(app, base_url="http://127.0.0.1:8700") as c:
        [box] = c.get("/api/boxes").json()["boxes"]
    assert box["awake"] is True and box["release"] is None and box["smoke"] is None
    assert "error" not in box


def test_parse_release_takes_the_last_switch_to_the_current_release():
    text = (f"current releases/{NEW}.a1b2c3\nhistory 2026-01-01T00:00:00Z {NEW}.a1b2c3\n"
            f"history 2026-01-02T00:00:00Z {OLD}\nhistory 2026-01-03T00:00:00Z {NEW}.a1b2c3\n")
    assert parse_release(text) == {"release": f"{NEW}.a1b2c3", "hash": NEW,
                                   "switched_at": "2026-01-03T00:00:00Z"}
    assert parse_release("none\n")["release"] is None


def test_a_damaged_smoke_report_shows_nothing_rather_than_failing(tmp_path):
    from warpforge_launch.web.lab import Lab

    bad = tmp_path / "smoke.xml"
    bad.write_text("<testsuites><testsuite name='smoke.x'")
    with pytest.raises(Exception):  # noqa: B017 - the parser's own error type
        read_smoke(bad)

    class Inv:
        boxes: dict = {}

    lab = Lab(Inv(), bad)
    try:
        assert lab.smoke() == {}
    finally:
        lab.close()
