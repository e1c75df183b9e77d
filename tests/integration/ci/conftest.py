"""Fixtures for `invoke ci` against the loopback lab: the sshd boxes act as GPU boxes, a bare
git origin on the machine (file:// URL, readable from every box) holds a tiny project whose
build and test steps the tests control, and power-off is a command that writes where the
test can see it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.lab import conftest as _lab
from tests.integration.lab.fakedist import make_dist
from tests.testlab.standin import GIT_ENV

# the lab tests' fixtures: the sshd boxes, the sleeper, a fresh install dir, a clean env
ssh_lab = _lab.ssh_lab
sleeping_box = _lab.sleeping_box
install_dir = _lab.install_dir
_lab_env = _lab._lab_env
_no_traffic_left_loopback = _lab._no_traffic_left_loopback

# The project on the origin: `sh build.sh` and `sh test.sh N` (N passing JUnit tests).
BUILD_SH = 'echo "building in $(pwd)"\nmkdir -p out && echo built > out/artifact\n'
TEST_SH = r"""n=${1:-3}
mkdir -p core/build/test-results/test
f=core/build/test-results/test/TEST-core.xml
{ echo "<testsuite name=\"core\" tests=\"$n\" skipped=\"0\" failures=\"0\" errors=\"0\">"
  i=0; while [ "$i" -lt "$n" ]; do echo "<testcase name=\"t$i\"/>"; i=$((i+1)); done
  echo "</testsuite>"; } > "$f"
echo "ran $n tests"
"""


@pytest.fixture(scope="module")
def shared_dir():
    """A host directory every box user can read and write (pytest's tmp dirs are 0700)."""
    d = Path(tempfile.mkdtemp(prefix="wf-ci-", dir="/tmp"))
    d.chmod(0o777)  # not sticky: boxes of different users append to one power-off log
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def origin(shared_dir):
    bare = shared_dir / "origin.git"
    work = shared_dir / "work"
    env = {**os.environ, **GIT_ENV}

    def git(*args, cwd):
        subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                       timeout=60)

    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=shared_dir)
    git("init", "-q", "-b", "main", str(work), cwd=shared_dir)
    (work / "build.sh").write_text(BUILD_SH)
    (work / "test.sh").write_text(TEST_SH)
    (work / ".gitignore").write_text("out/\n")
    git("add", "-A", cwd=work)
    git("commit", "-qm", "tiny project", cwd=work)
    git("push", "-q", str(bare), "main", cwd=work)
    # Served by `git daemon` on loopback: a file:// clone of root's repository by another
    # box user is refused by git's ownership check ("dubious ownership").
    port = _free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={shared_dir}",
         "--listen=127.0.0.1", f"--port={port}", "--informative-errors", str(shared_dir)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, daemon)
        yield f"git://127.0.0.1:{port}/origin.git"
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"git daemon exited ({proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("git daemon did not listen")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    return make_dist(tmp_path_factory.mktemp("cidist") / "dist")


@pytest.fixture
def ci_inventory(ssh_lab, install_dir, origin, shared_dir, dist, tmp_path):
    """Factory: a loopback inventory with a ci section (never the production inventory)."""
    poweroff_log = shared_dir / f"poweroff-{tmp_path.name}.log"
    poweroff_log.touch()
    poweroff_log.chmod(0o666)

    def write(boxes=({"box": "nvidia"}, {"box": "amd", "depends_on": ["nvidia"]}),
              names=("nvidia", "amd"), ci=None, lab=None, extra_boxes=None) -> Path:
        inv = ssh_lab.inventory(install_dir=install_dir, names=names, lab=lab,
                                extra_boxes=extra_boxes)
        inv["build"] = {"profile": "standin", "source": str(tmp_path),
                        "steps": [{"name": "compile", "run": ["true"], "timeout": 30}],
                        "test_floors": {}, "dist_dir": str(dist)}
        inv["ci"] = {
            "boxes": list(boxes), "repository": origin, "branch": "main",
            "remote_dir": f"{install_dir}/src", "cache_paths": ["cache"],
            "build": ["sh", "build.sh"], "test": ["sh", "test.sh", "3"],
            "test_floors": {"core": 3},
            "gpu_tests": {"NVIDIA": ["sh", "-c", "echo nvidia gpu tests ok"],
                          "AMD": ["sh", "-c", "echo amd gpu tests ok"]},
            # $SSH_CONNECTION names the box's address: which box "powered off", in order
            "power_off": ["sh", "-c", 'echo "$SSH_CONNECTION" | cut -d" " -f3 >> "$1"',
                          "wf-poweroff", str(poweroff_log)],
            "log_root": str(tmp_path / "logs"),
            "timeouts": {"sync": 60, "build": 60, "test": 60, "gpu_tests": 60,
                         "power_off": 20},
            **(ci or {})}
        path = tmp_path / "inventory.yaml"
        path.write_text(json.dumps(inv, indent=1))
        return path

    write.poweroff_log = poweroff_log
    write.logs = tmp_path / "logs"
    return write


def powered_off(ci_inventory, ssh_lab) -> list[str]:
    """Box names in the order their power-off command ran."""
    by_address = {b.address: n for n, b in ssh_lab.boxes.items()}
    log = ci_inventory.poweroff_log
    lines = log.read_text().split()
    return [by_address[a] for a in lines]
