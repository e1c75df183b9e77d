"""The lab tasks' bad input: one `error:` line and exit 2, before any box is touched."""

import subprocess
import sys
from pathlib import Path

import pytest

from warpforge_launch.lab import commands

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def inv(tmp_path) -> str:
    path = tmp_path / "inventory.yaml"
    path.write_text(f"boxes: {{here: {{transport: local, install_dir: {tmp_path / 'box'}}}}}\n")
    return str(path)


def one_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "ValueError" not in err, err
    assert all(w in err.splitlines()[0] for w in words), err
    return err


@pytest.mark.parametrize("keep", ["abc", "2.5", "1", "0", "-3"])
def test_a_keep_that_is_not_a_whole_number_of_at_least_2_is_bad_input(inv, tmp_path, capsys,
                                                                      keep):
    assert commands.distribute(inventory=inv, dist=str(tmp_path / "dist"), keep=keep) == 2
    one_error(capsys, "--keep", repr(keep) if keep in ("abc", "2.5") else "at least 2")
    assert not (tmp_path / "box").exists()


@pytest.mark.parametrize("boxes", ["", ",", " , "])
@pytest.mark.parametrize("task", ["distribute", "rollback", "smoke", "wake"])
def test_a_boxes_value_naming_no_box_is_bad_input_not_every_box(inv, tmp_path, capsys, boxes,
                                                                task):
    assert getattr(commands, task)(inventory=inv, boxes=boxes) == 2
    one_error(capsys, "--boxes", "no box named")
    assert not (tmp_path / "box").exists()


@pytest.mark.parametrize("junit", ["/proc/wf-nowhere/y.xml", "{tmp}"])
def test_an_unwritable_junit_path_is_bad_input_before_any_check(inv, tmp_path, capsys, junit):
    junit = junit.format(tmp=tmp_path)
    assert commands.smoke(inventory=inv, dist=str(tmp_path / "nodist"), junit=junit) == 2
    one_error(capsys, "--junit", junit)
    assert not (tmp_path / "box").exists()


def test_invoke_passes_an_empty_boxes_through_and_leaves_an_absent_one_default(inv, tmp_path):
    """invoke gives '' for `--boxes ''`; the task's default (None) means "not given"."""
    def run(*args):
        return subprocess.run([sys.executable, "-m", "invoke", "distribute", "--inventory", inv,
                               "--dist", str(tmp_path / "nodist"), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    p = run("--boxes", "")
    assert p.returncode == 2 and "no box named" in p.stderr, p.stderr
    p = run("--keep", "abc")
    assert p.returncode == 2 and p.stderr.startswith("error: --keep must be a whole number")
    p = run()  # the default selection: every box, then the missing dist is what fails
    assert p.returncode == 2 and "no box named" not in p.stderr and "nodist" in p.stderr


def test_a_black_hole_box_fails_with_one_line_after_the_banner_wait(tmp_path):
    """A box that accepts TCP and never answers: `unreachable: no SSH banner within 10s`
    (max(connect_timeout, 10)), exit 3, and no paramiko traceback on stderr."""
    from tests.integration.lab.fakedist import make_dist
    from tests.testlab.blackhole import black_hole

    dist = make_dist(tmp_path / "dist")
    with black_hole() as port:
        inv = tmp_path / "inventory.yaml"
        inv.write_text(f"boxes: {{hole: {{address: 127.0.0.1, port: {port}, known_hosts_file: "
                       f"{tmp_path / 'kh'}, install_dir: /opt/wf-hole}}}}\n"
                       "lab: {connect_timeout: 2}\n")
        p = subprocess.run([sys.executable, "-m", "invoke", "distribute", "--inventory",
                            str(inv), "--dist", str(dist)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert p.stderr.splitlines() == [
        f"error: box hole (127.0.0.1:{port}) unreachable: no SSH banner within 10s (the port "
        "accepts connections but nothing answers SSH)"], p.stderr
