"""One scheduler instance that cannot be reached: a submit whose connection failed leaves no
row behind, and `list`, `fetch` and the sweep commands still answer for every other
instance (its jobs as last known, a warning, exit 3). Against the counting backend
(tests/testlab/counting.py), where an instance in ``BACKEND.down`` fails every call the
way an unreachable cluster does; the real transports' side (which failures prove that
nothing was sent) is tested against a real ssh client below and against the lab clusters
in tests/integration."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
import yaml

from tests.testlab import counting
from tests.testlab.builders import inventory, model_file
from warpforge_launch.cli import main
from warpforge_launch.errors import InfrastructureError
from warpforge_launch.inputs import parse_inputs
from warpforge_launch.jobs import JobDefinition, JobQuery
from warpforge_launch.launcher import Launcher


@pytest.fixture
def backend(monkeypatch):
    return counting.install(monkeypatch)


@pytest.fixture
def inv(tmp_path, backend):
    return str(inventory(tmp_path / "inv.yaml", {"c1": {"type": "counting"},
                                                 "c2": {"type": "counting"}}))


def define(name="m"):
    return JobDefinition(name=name, source="/m.py", inputs=parse_inputs("[(1,8)]"),
                         model_class="M")


def call(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_submit_whose_connection_failed_leaves_no_row(inv, backend):
    backend.fail_send = "unsent"
    with Launcher(inv) as launcher:
        with pytest.raises(InfrastructureError, match="refused the connection"):
            launcher.submit(define(), "c1")
        assert launcher.store.query(JobQuery()) == []


def test_a_submit_cut_after_the_send_is_kept_to_reconcile(inv, backend):
    backend.fail_send = "before"  # the answer was lost: the backend may have the job
    with Launcher(inv) as launcher:
        with pytest.raises(InfrastructureError):
            launcher.submit(define(), "c1")
        (row,) = launcher.store.query(JobQuery())
        assert row.submitting


def test_list_shows_an_unreachable_instance_as_last_known(capsys, inv, backend):
    with Launcher(inv) as launcher:
        up = launcher.submit(define("up"), "c1")
        down = launcher.submit(define("down"), "c2")
    counting.finish(up.removeprefix("c1-"))
    backend.down.add("c2")
    rc, out, err = call(capsys, "list", "--inventory", inv, "--json")
    rows = {r["job_id"]: r["status"] for r in json.loads(out)}
    assert rc == 3
    assert rows[up]["state"] == "COMPLETED"  # refreshed
    assert rows[down]["state"] == "PENDING" and "not refreshed" in rows[down]["message"]
    assert "warning: c2 not refreshed: counting instance c2 is unreachable" in err
    backend.down.clear()
    rc, out, err = call(capsys, "list", "--inventory", inv)
    assert rc == 0 and not err and "not refreshed" not in out


def test_a_submitting_row_of_an_unreachable_instance_does_not_hide_the_others(
        capsys, inv, backend):
    with Launcher(inv) as launcher:
        up = launcher.submit(define("up"), "c1")
        backend.fail_send = "after"
        with pytest.raises(InfrastructureError):
            launcher.submit(define("lost"), "c2")
    backend.down.add("c2")
    rc, out, err = call(capsys, "list", "--inventory", inv, "--json")
    names = {r["name"]: r["status"] for r in json.loads(out)}
    assert rc == 3 and names["up"]["job_id"] == up and names["up"]["state"] == "RUNNING"
    assert "not confirmed yet" in names["lost"]["message"]
    assert "warning: c2 not refreshed" in err
    backend.down.clear()  # reachable again: reconciled as usual
    rc, out, _ = call(capsys, "list", "--inventory", inv, "--json")
    assert rc == 0 and {r["name"]: r["job_id"] for r in json.loads(out)}["lost"] == "c2-2"


def test_status_of_a_job_on_an_unreachable_instance_is_exit_3(capsys, inv, backend):
    with Launcher(inv) as launcher:
        job = launcher.submit(define(), "c2")
    backend.down.add("c2")
    rc, _, err = call(capsys, "status", "--inventory", inv, job)
    assert rc == 3 and "counting instance c2 is unreachable" in err


def test_fetch_gets_the_other_instances_jobs(capsys, inv, backend, tmp_path):
    with Launcher(inv) as launcher:
        up = launcher.submit(define("up"), "c1")
        down = launcher.submit(define("down"), "c2")
    counting.finish(up.removeprefix("c1-"))
    backend.down.add("c2")
    rc, out, err = call(capsys, "fetch", "--inventory", inv, "--json", "--to",
                        str(tmp_path / "art"), up, down)
    got = {f["job_id"]: f for f in json.loads(out)}
    assert rc == 3
    assert got[up]["error"] is None and (tmp_path / "art" / up).is_dir()
    assert "not fetched: counting instance c2 is unreachable" in got[down]["error"]
    assert not (tmp_path / "art" / down).exists()


def _sweep_file(tmp_path) -> str:
    model_file(tmp_path, "a.py")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "models": [{"source": "a.py", "class": "A"}],
        "inputs": ["[(1, 8)]", "[(4, 8)]"], "gpus": ["NONE"], "schedulers": ["c1", "c2"]}))
    return str(path)


def test_a_sweep_names_why_cells_were_not_sent(capsys, inv, backend, tmp_path):
    path = _sweep_file(tmp_path)
    backend.down.add("c2")
    rc, out, err = call(capsys, "sweep", path, "--inventory", inv)
    sweep_id = out.strip()
    assert rc == 1  # two cells went out
    assert (f"error: 2 of 4 cell(s) of {sweep_id} not sent: counting instance c2 is "
            "unreachable") in err
    rc, out, err = call(capsys, "sweep", "status", sweep_id, "--inventory", inv, "--json")
    assert rc == 0 and not err  # the unsent cells are final: nothing asks c2
    cells = json.loads(out)["cells"]
    # never sent: FAILED at once, not left to reconcile with a cluster it never reached
    assert sorted(c["status"]["state"] for c in cells) == [
        "FAILED", "FAILED", "RUNNING", "RUNNING"]
    backend.down.add("c1")
    rc, out, err = call(capsys, "sweep", path, "--inventory", inv)
    assert rc == 3  # nothing went out: the reasons' own exit code
    assert err.count("error: 2 of 4 cell(s)") == 2 and "instance c1 is unreachable" in err


def test_sweep_cancel_stops_the_reachable_cells(capsys, inv, backend, tmp_path):
    rc, out, _ = call(capsys, "sweep", _sweep_file(tmp_path), "--inventory", inv)
    sweep_id = out.strip()
    backend.down.add("c2")
    rc, out, err = call(capsys, "sweep", "cancel", sweep_id, "--inventory", inv, "--json")
    assert rc == 3 and "warning: c2 not refreshed" in err
    assert [j.partition("-")[0] for j in json.loads(out)["cancelled"]] == ["c1", "c1"]
    assert sorted(j["state"].value for j in backend.jobs.values()) == [
        "CANCELLED", "CANCELLED", "RUNNING", "RUNNING"]


# -- which ssh failures prove that nothing was sent (a real OpenSSH client) ---------------
def _ssh_transport(tmp_path, port: int):
    from warpforge_launch.schedulers.slurm_transport import SshTransport

    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    return SshTransport("127.0.0.1", port=port, user="nobody", identity_file=str(key),
                        known_hosts_file=str(tmp_path / "known_hosts"),
                        control_dir=tmp_path / "ctl", connect_timeout=2)


def test_a_refused_ssh_connection_is_not_sent(tmp_path):
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    transport = _ssh_transport(tmp_path, port)
    with pytest.raises(InfrastructureError, match="Connection refused") as caught:
        transport.run(["sbatch", "--parsable"], input="#!/bin/bash\n", timeout=10)
    assert caught.value.not_sent


@pytest.mark.parametrize("stderr,not_sent", [
    ("ssh: connect to host 127.0.0.1 port 2299: Connection refused", True),
    ("ssh: Could not resolve hostname nohost: Name or service not known", True),
    ("kex_exchange_identification: read: Connection reset by peer", True),
    ("Connection closed by 127.0.0.31 port 2231", True),
    ("Connection timed out during banner exchange", True),
    ("Warning: Identity file /nope not accessible: No such file or directory.\n"
     "wfslurm@127.0.0.31: Permission denied (publickey).", True),
    ("Host key verification failed.", True),
    # the session broke after it started: the remote command may have run
    ("Connection to 127.0.0.31 closed by remote host.", False),
    ("client_loop: send disconnect: Broken pipe", False),
    ("mux_client_request_session: read from master failed: Broken pipe", False),
    ("", False),
])
def test_which_ssh_failures_prove_nothing_was_sent(tmp_path, stderr, not_sent):
    from warpforge_launch.schedulers.slurm_transport import SshTransport

    transport = SshTransport.__new__(SshTransport)
    transport.where = "login node x"
    exc = transport.failure(255, stderr, "sbatch", 10)
    assert exc.not_sent is not_sent and exc.exit_code == 3


def test_a_missing_identity_file_is_named(tmp_path):
    from warpforge_launch.schedulers.slurm_transport import SshTransport

    transport = SshTransport.__new__(SshTransport)
    transport.where = "login node x"
    exc = transport.failure(255, "Warning: Identity file /nope not accessible: No such file "
                            "or directory.\nu@h: Permission denied (publickey).", "sbatch", 10)
    assert str(exc) == ("cannot reach login node x: u@h: Permission denied (publickey). "
                        "(Identity file /nope not accessible: No such file or directory.)")
