"""`cluster-info --all`: every scheduler at once; one failing or hanging scheduler shows its
error line and the others still answer (real Local scheduler; Ray instances pointed at a
refused port and at a black hole)."""

from __future__ import annotations

import json
import socket
import time

from tests.helpers import run_cli


def write(tmp_path, schedulers: dict) -> str:
    path = tmp_path / f"inventory-{len(list(tmp_path.glob('inventory-*')))}.yaml"
    path.write_text(json.dumps({"version": 1, "default_scheduler": next(iter(schedulers)),
                                "schedulers": schedulers}))
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_failing_scheduler_does_not_stop_the_others(tmp_path):
    inv = write(tmp_path, {"local": {"type": "local"}, "other": {"type": "local"},
                           "deadray": {"type": "ray",
                                       "dashboard_url": f"http://127.0.0.1:{free_port()}"}})
    proc = run_cli("cluster-info", "--all", "--inventory", inv, "--json", check_json=True)
    assert proc.returncode == 1
    rows = {r["scheduler"]: r for r in proc.json}
    assert [r["scheduler"] for r in proc.json] == ["local", "other", "deadray"]
    assert rows["local"]["ok"] and rows["other"]["ok"] and not rows["deadray"]["ok"]
    assert rows["local"]["info"]["scheduler_name"] == "local"
    assert rows["local"]["info"]["total_nodes"] == 1
    assert "unreachable" in rows["deadray"]["error"] and rows["deadray"]["info"] is None
    assert proc.stderr.startswith("error: scheduler deadray: ")

    table = run_cli("cluster-info", "--all", "--inventory", inv)
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SCHEDULER", "TYPE", "STATE", "VERSION", "NODES", "UP", "GPUS",
                                "TIME"]
    assert [ln.split()[:3] for ln in lines[1:]] == [["local", "local", "ok"],
                                                    ["other", "local", "ok"],
                                                    ["deadray", "ray", "FAILED"]]


def test_a_hanging_scheduler_is_given_up_at_the_deadline(tmp_path, black_hole):
    inv = write(tmp_path, {"local": {"type": "local"},
                           "hung": {"type": "ray",
                                    "dashboard_url": f"http://127.0.0.1:{black_hole}"}})
    t0 = time.monotonic()
    proc = run_cli("cluster-info", "--all", "--inventory", inv, "--timeout", "1.5", "--json",
                   check_json=True)
    took = time.monotonic() - t0
    assert proc.returncode == 1
    rows = {r["scheduler"]: r for r in proc.json}
    assert rows["local"]["ok"]
    assert not rows["hung"]["ok"] and rows["hung"]["error"] == "no answer within 1.5s"
    assert took < 15, f"cluster-info --all took {took:.1f}s with a 1.5 s deadline"


def test_none_answering_is_exit_3_and_bad_input_exit_2(tmp_path):
    inv = write(tmp_path, {"local": {"type": "local"},
                           "deadray": {"type": "ray",
                                       "dashboard_url": f"http://127.0.0.1:{free_port()}"}})
    only_dead = write(tmp_path, {"deadray": {"type": "ray", "dashboard_url":
                                             f"http://127.0.0.1:{free_port()}"}})
    assert run_cli("cluster-info", "--all", "--inventory", only_dead).returncode == 3
    both = run_cli("cluster-info", "--all", "--scheduler", "local", "--inventory", inv)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    bad = run_cli("cluster-info", "--all", "--timeout", "nan", "--inventory", inv)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --timeout")
    assert run_cli("cluster-info", "--all", "--inventory", inv).returncode == 1
