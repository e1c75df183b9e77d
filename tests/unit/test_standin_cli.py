"""Stand-in snakegrinder argument handling: exit 2 for bad usage, without importing torch.

The usage tests run under a Python that has no torch when the machine has one (Debian's
/usr/bin/python3), which proves argument handling never needs it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.testlab.standin import STANDIN_SRC


def _bare_python() -> str:
    for cand in ("/usr/bin/python3",):
        if Path(cand).exists():
            probe = subprocess.run([cand, "-c", "import torch"], capture_output=True, timeout=60,
                                   check=False)
            if probe.returncode != 0:
                return cand
    return sys.executable


PY = _bare_python()


def sg(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(STANDIN_SRC))
    return subprocess.run([PY, "-m", "snakegrinder", *args], capture_output=True, text=True,
                          check=False,
                          env=env, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_option(flag):
    r = sg(flag)
    assert r.returncode == 0
    for opt in ("--trace-with-values", "--trace-example", "--trace", "--source", "--class",
                "--inputs", "--seed", "--out", "--version"):
        assert opt in r.stdout
    assert "STAND-IN" in r.stdout


def test_version_names_the_stand_in():
    r = sg("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("snakegrinder ") and "stand-in" in r.stdout


@pytest.mark.parametrize("args, needle", [
    ([], "missing arguments"),
    (["--bogus"], "unknown option --bogus"),
    (["--trace-example", "--frobnicate"], "unknown option --frobnicate"),
    (["stray"], "unexpected argument"),
    (["--trace", "--source", "m.py", "--class", "M"], "missing --inputs"),
    (["--trace-with-values", "--inputs", "[(1,8)]"], "missing --source, --class"),
    (["--trace", "--source", "m.py", "--class", "M", "--inputs", "[(1,8):f32]"],
     "cannot parse --inputs"),
    (["--trace", "--source", "m.py", "--class", "M", "--inputs", "[(1,'q7')]"], "unknown dtype"),
    (["--trace-example", "--seed", "forty-two"], "not an integer"),
    (["--trace-example", "--out"], "--out needs a value"),
    (["--trace", "--trace-example"], "cannot be combined"),
])
def test_bad_arguments_exit_2_with_one_clear_line(args, needle, tmp_path):
    r = sg(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written on a usage error


def test_equals_form_is_accepted(tmp_path):
    r = sg("--version", "--seed=3")
    assert r.returncode == 0


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_launcher_template_is_valid_bash():
    launcher = STANDIN_SRC.parent / "launcher" / "snakegrinder"
    r = subprocess.run(["bash", "-n", str(launcher)], capture_output=True, text=True, timeout=30,
                       check=False)
    assert r.returncode == 0, r.stderr
