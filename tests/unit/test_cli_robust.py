"""What a new user meets off the happy path: odd ids and files, a store that cannot be written
or read, a state dir that is a file, an output nobody reads. Each is one `error:` line with
the README's exit code, never `internal error` or a traceback, and nothing stored is lost."""


import pytest

from tests.helpers import local_inventory
from warpforge_launch.cli import main


def call(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The `error:` line of stderr (a `hint:` line may follow); no internal error."""
    lines = err.splitlines()
    assert lines and lines[0].startswith("error: "), err
    assert all(line.startswith("hint: ") for line in lines[1:]), err
    assert "internal error" not in err and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def inv(tmp_path):
    return str(local_inventory(tmp_path / "inv.yaml"))


LONG_ID = "local-" + "a" * 300


@pytest.mark.parametrize("command", [["status"], ["result"], ["logs"], ["cancel"], ["fetch"],
                                     ["--json", "status"]])
def test_a_job_id_too_long_for_a_file_name_is_not_a_job_id(capsys, inv, command):
    rc, _, err = call(capsys, "--inventory", inv, *command, LONG_ID)
    assert rc == 2
    line = one_error_line(err)
    assert "is not a job id" in line and "(306 characters)" in line and len(line) < 160


@pytest.mark.parametrize("job_id", ["local-../../etc", "local-a/b", "local-a\nb"])
def test_a_job_id_that_is_not_one_path_segment_is_refused(capsys, inv, job_id):
    rc, _, err = call(capsys, "--inventory", inv, "status", job_id)
    assert rc == 2 and "is not a job id" in one_error_line(err)


def test_a_sweep_file_that_is_not_utf8_is_exit_2(capsys, inv, tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00bad")
    rc, _, err = call(capsys, "--inventory", inv, "sweep", str(bad), "--dry-run")
    assert rc == 2 and "is not UTF-8 text" in one_error_line(err)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"name: x\n\x00")
    rc, _, err = call(capsys, "--inventory", inv, "sweep", str(nul), "--dry-run")
    assert rc == 2 and "is not valid YAML" in one_error_line(err)


def test_an_inventory_that_is_not_utf8_is_exit_2(capsys, tmp_path, monkeypatch):
    bad = tmp_path / "inventory.yaml"
    bad.write_bytes(b"\xff\xfe\x00bad")
    rc, _, err = call(capsys, "--inventory", str(bad), "schedulers")
    assert rc == 2 and "is not UTF-8 text" in one_error_line(err)
    monkeypatch.chdir(tmp_path)  # found as ./inventory.yaml: the same
    rc, _, err = call(capsys, "schedulers")
    assert rc == 2 and "is not UTF-8 text" in one_error_line(err)
