"""What a new user meets off the happy path: odd ids and files, a store that cannot be written
or read, a state dir that is a file, an output nobody reads. Each is one `error:` line with
the README's exit code, never `internal error` or a traceback, and nothing stored is lost."""

import contextlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO, local_inventory, model_file, run_cli
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


# ---- the job store: a state dir that is a file, a store that cannot be written or read ----
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A job store with one COMPLETED and one FAILED Local job (the real CLI, the fake
    payload): (its home, the inventory, the COMPLETED id, the FAILED id)."""
    base = tmp_path_factory.mktemp("finished")
    inv = str(local_inventory(base / "inv.yaml"))
    model = str(model_file(base))
    env = {"WARPFORGE_HOME": str(base / "home")}
    ids = []
    for extra in ([], ["--env", "WF_FAKE_EXIT=3"]):
        done = run_cli("--json", "--inventory", inv, "submit", "--source", model, "--class",
                       "SimpleMLP", "--inputs", "[(1,8)]", "--wait", *extra, env=env,
                       check_json=True)
        assert done.returncode == (1 if extra else 0), done.stderr
        ids.append(done.json["job_id"])
    return base / "home", inv, model, *ids


@pytest.fixture
def home(finished, _private_home):
    """This test's WARPFORGE_HOME, holding a copy of the finished jobs' store."""
    shutil.copytree(finished[0], _private_home, dirs_exist_ok=True)
    return _private_home


def store_bytes(home) -> bytes:
    return (home / "jobs.sqlite3").read_bytes()


@contextlib.contextmanager
def read_only(*paths):
    """``paths`` unwritable for the block. Root ignores file modes: then the immutable
    attribute (chattr +i), where the filesystem has it; else the test is skipped."""
    if os.geteuid() != 0:
        modes = [(p, p.stat().st_mode) for p in paths]
        for p, mode in modes:
            p.chmod(mode & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes:
                p.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", *map(str, paths)],
                                        capture_output=True).returncode != 0:
        subprocess.run([chattr or "true", "-i", *map(str, paths)], capture_output=True)
        pytest.skip("running as root on a filesystem without chattr +i: cannot make the "
                    "store read-only")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *map(str, paths)], check=True)


def test_a_read_only_store_and_its_directory_are_one_clear_error(capsys, home, finished):
    _, inv, model, ok_id, _ = finished
    before = store_bytes(home)
    for wal in home.glob("jobs.sqlite3-*"):
        wal.unlink()  # as a copy of the store is: SQLite must create them to read it
    with read_only(home / "jobs.sqlite3", home):
        for argv in (["list"], ["status", ok_id],
                     ["submit", "--source", model, "--class", "M", "--inputs", "[(1,8)]"]):
            rc, _, err = call(capsys, "--inventory", inv, *argv)
            line = one_error_line(err)
            assert rc == 1 and f"job store {home / 'jobs.sqlite3'} cannot be written" in line
            assert "make both writable" in err
    assert store_bytes(home) == before
    rc, out, _ = call(capsys, "--json", "list")
    assert rc == 0 and len(json.loads(out)) == 2


def test_a_submit_to_a_read_only_store_starts_nothing(capsys, home, finished):
    _, inv, model, _, _ = finished
    jobs_before = sorted(p.name for p in (home / "local").iterdir())
    with read_only(home / "jobs.sqlite3"):
        rc, _, err = call(capsys, "--inventory", inv, "submit", "--source", model, "--class",
                          "M", "--inputs", "[(1,8)]")
        assert rc == 1
        assert "cannot be written: attempt to write a readonly database" in one_error_line(err)
    assert sorted(p.name for p in (home / "local").iterdir()) == jobs_before
    rc, out, _ = call(capsys, "--json", "list")
    assert rc == 0 and len(json.loads(out)) == 2


def test_a_corrupted_store_is_one_clear_error_and_stays_as_it_was(capsys, home, finished):
    _, inv, model, _, _ = finished
    with open(home / "jobs.sqlite3", "r+b") as f:  # as the tester broke it: page 4
        f.seek(12288)
        f.write(b"X" * 64)
    before = store_bytes(home)
    for argv in (["list"], ["--json", "list", "--no-refresh"],
                 ["submit", "--source", model, "--class", "M", "--inputs", "[(1,8)]"]):
        rc, _, err = call(capsys, "--inventory", inv, *argv)
        line = one_error_line(err)
        assert rc == 1 and "is unreadable: database disk image is malformed" in line, err
        assert "move it aside" in err
    assert store_bytes(home) == before


@pytest.mark.parametrize("argv", [
    ["list"], ["status", "local-1a2b3c4d"], ["result", "local-1a2b3c4d"],
    ["logs", "local-1a2b3c4d"], ["cancel", "local-1a2b3c4d"], ["fetch", "local-1a2b3c4d"],
    ["sweep", "list"], ["artifacts", "list"], ["schedulers"],
    ["submit", "--source", "m.py", "--class", "M", "--inputs", "[(1,8)]"],
])
def test_warpforge_home_that_is_a_file_is_exit_2_for_every_command(
        capsys, tmp_path, monkeypatch, inv, argv):
    state = tmp_path / "state"
    state.write_text("not a directory\n")
    monkeypatch.setenv("WARPFORGE_HOME", str(state))
    rc, _, err = call(capsys, "--inventory", inv, *argv)
    assert rc == 2
    assert f"WARPFORGE_HOME {state} is not a directory" in one_error_line(err)
    assert state.read_text() == "not a directory\n"


# ---- output nobody reads, output that cannot be written --------------------------------
def run_into(stdout, *args, env=None):
    """The real CLI with stdout on ``stdout`` (a descriptor or file), stderr captured."""
    return subprocess.run([sys.executable, "-m", "warpforge_launch", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {}),
                                                         "PYTHONPATH": str(REPO)})


@contextlib.contextmanager
def reader_gone():
    """The write end of a pipe whose reader has already gone (as `| true` becomes): every
    write to it fails with EPIPE, however small, with no race."""
    r, w = os.pipe()
    os.close(r)
    try:
        yield w
    finally:
        os.close(w)


def test_a_closed_pipe_keeps_the_commands_exit_code(home, finished):
    _, inv, model, ok_id, failed_id = finished
    cases = [(["result", ok_id], 0), (["result", failed_id], 1),
             (["--json", "result", failed_id], 1), (["--json", "result", ok_id], 0),
             (["result", ok_id, failed_id], 1), (["status", ok_id], 0), (["list"], 0),
             (["logs", failed_id], 0), (["--json", "status", ok_id, failed_id], 0),
             (["sweep", "list"], 0), (["status", "local-1a2b3c4d"], 2)]
    for argv, code in cases:
        with reader_gone() as w:
            done = run_into(w, "--inventory", inv, *argv)
        assert done.returncode == code, (argv, done.stderr)
        if code != 2:  # nothing more to say: the reader went away, that is all
            assert done.stderr == "", (argv, done.stderr)
        else:
            one_error_line(done.stderr)


def test_submit_wait_into_a_closed_pipe_exits_with_the_jobs_outcome(home, finished):
    _, inv, model, _, _ = finished
    for extra, code in (([], 0), (["--env", "WF_FAKE_EXIT=3"], 1)):
        with reader_gone() as w:
            done = run_into(w, "--inventory", inv, "submit", "--source", model, "--class",
                            "SimpleMLP", "--inputs", "[(1,8)]", "--wait", *extra)
        assert done.returncode == code, done.stderr
        assert done.stderr.startswith("submitted local-") and done.stderr.count("\n") == 1


def test_a_full_disk_under_stdout_is_one_error_line(home, finished):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    _, inv, _, ok_id, failed_id = finished
    for argv, code in ((["result", ok_id], 1), (["result", failed_id], 1), (["list"], 1),
                       (["--json", "status", ok_id], 1)):
        with open("/dev/full", "w") as full:
            done = run_into(full, "--inventory", inv, *argv)
        assert done.returncode == code, (argv, done.stderr)
        assert done.stderr == "error: cannot write the output: No space left on device\n"


def test_a_closed_stdout_is_one_error_line(home, finished):
    _, inv, _, ok_id, _ = finished
    done = subprocess.run([sys.executable, "-m", "warpforge_launch", "--inventory", inv,
                           "result", ok_id], stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(1),  # `warpforge-launch ... >&-`
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1
    assert done.stderr == "error: cannot write the output: standard output is closed\n"


# ---- tables a program reads ------------------------------------------------------------
def test_piped_list_keeps_every_row_on_one_line(home, finished):
    _, inv, _, ok_id, failed_id = finished
    done = run_cli("--inventory", inv, "list")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["JOB", "ID", "NAME", "STATE", "SUBMITTED", "ELAPSED", "MESSAGE"]
    assert len(lines) == 3, done.stdout
    failed = next(line for line in lines if failed_id in line)
    assert failed.split()[:3] == [failed_id, "simple_mlp", "FAILED"]
    assert failed.endswith("exit code 3: FAILED: fake failure with exit code 3")
    assert next(line for line in lines if ok_id in line).split()[2] == "COMPLETED"


def test_a_table_that_is_not_a_terminal_is_never_wrapped_or_cut(capsys):
    from warpforge_launch.output import table

    long_id = "local-" + "0123456789abcdef" * 6
    message = "word " * 100 + "end"
    table(["JOB ID", "STATE", "MESSAGE"], [[long_id, "COMPLETED", message],
                                          ["local-1", "FAILED", "line one\nline two"]])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{'JOB ID':<{len(long_id)}}  STATE      MESSAGE",
                     f"{long_id}  COMPLETED  {message}",
                     f"{'local-1':<{len(long_id)}}  FAILED     line one\\x0aline two"]


# ---- list --scheduler, an explicitly named inventory -----------------------------------
def test_list_of_an_unknown_scheduler_is_exit_2(capsys, home, finished, tmp_path):
    from tests.testlab.builders import inventory

    other = str(inventory(tmp_path / "other.yaml", {"other": {"type": "local"}}))
    rc, out, err = call(capsys, "--inventory", other, "list", "--scheduler", "nosuch")
    assert rc == 2 and "no scheduler 'nosuch' in the job store or the inventory" in \
        one_error_line(err)
    rc, out, _ = call(capsys, "--inventory", other, "--json", "list", "--scheduler", "local")
    assert rc == 0 and len(json.loads(out)) == 2  # the store's jobs: no longer configured
    rc, out, _ = call(capsys, "--inventory", other, "--json", "list", "--scheduler", "other")
    assert rc == 0 and json.loads(out) == []  # configured, no jobs yet
    rc, _, err = call(capsys, "--inventory", other, "list", "--scheduler", "other",
                      "--scheduler", "nosuch")
    assert rc == 2 and "'nosuch'" in one_error_line(err)


@pytest.mark.parametrize("argv", [
    ["list"], ["status", "local-1a2b3c4d"], ["--json", "status", "local-1a2b3c4d"],
    ["result", "local-1a2b3c4d"], ["logs", "local-1a2b3c4d"], ["cancel", "local-1a2b3c4d"],
    ["fetch", "local-1a2b3c4d"], ["sweep", "status", "sweep-1a2b3c4d"], ["sweep", "list"],
    ["artifacts", "list"], ["schedulers"], ["cluster-info"],
])
def test_a_named_inventory_that_cannot_be_read_is_exit_2_for_every_command(
        capsys, tmp_path, monkeypatch, argv):
    missing = tmp_path / "nonexistent.yaml"
    rc, _, err = call(capsys, "--inventory", str(missing), *argv)
    assert rc == 2 and f"inventory {missing} does not exist" in one_error_line(err)
    assert "hint: named by --inventory" in err
    monkeypatch.setenv("WARPFORGE_INVENTORY", str(tmp_path))
    rc, _, err = call(capsys, *argv)
    assert rc == 2 and f"inventory {tmp_path} is a directory" in one_error_line(err)
    assert "$WARPFORGE_INVENTORY" in err


def test_a_named_inventory_without_read_permission_is_exit_2(capsys, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file: no unreadable inventory to name")
    locked = local_inventory(tmp_path / "inv.yaml")
    locked.chmod(0)
    rc, _, err = call(capsys, "--inventory", str(locked), "list")
    assert rc == 2 and "cannot be read: Permission denied" in one_error_line(err)


def test_an_invalid_inventory_stops_only_the_commands_that_use_it(capsys, home, finished,
                                                                  tmp_path):
    """The README's rule: the store keeps each job's scheduler config, so a job is seen and
    cancelled from it even while the inventory is being edited; what needs the inventory
    (submit, schedulers, an unknown job id) validates it."""
    _, _, model, ok_id, _ = finished
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedulers: {local: {type: local, max_concurrent_jobs: abc}}\n")
    for argv in (["list"], ["status", ok_id], ["result", ok_id]):
        rc, _, err = call(capsys, "--inventory", str(bad), *argv)
        assert rc == 0, err
    for argv in (["schedulers"], ["status", "local-1a2b3c4d"],
                 ["submit", "--source", model, "--class", "M", "--inputs", "[(1,8)]"]):
        rc, _, err = call(capsys, "--inventory", str(bad), *argv)
        assert rc == 2 and "schedulers.local.max_concurrent_jobs" in one_error_line(err)
