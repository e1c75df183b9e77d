"""Fixtures for the Ray integration tests: one loopback Ray head per session, a fake payload.

The head is started by ``tests.testlab.ray`` (reused when one already answers on the lab
port, stopped at the end only when this session started it). Jobs run on the same machine,
so the "shared output root" is simply a directory under the lab dir.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import lab_unavailable
from tests.testlab import ray as raylab

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_head():
    """The lab head on 127.0.0.1:18265: 8 CPUs (declared), 1 fake GPU, nvidia=1 (no amd)."""
    try:
        head = raylab.start_head()
    except raylab.LabError as exc:
        lab_unavailable(str(exc))
    yield head
    head.stop()


@pytest.fixture(scope="session")
def ray_workdir(ray_head):
    """A per-session directory the Ray jobs (same machine) and the tests both see."""
    path = raylab.lab_dir() / "work" / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fake_snakegrinder(ray_workdir) -> Path:
    """An executable stand-in at an absolute path, as snakegrinder sits on real workers."""
    target = ray_workdir / "bin" / "snakegrinder"
    target.parent.mkdir(parents=True)
    source = (HERE / "fake_snakegrinder.py").read_text()
    target.write_text(f"#!{sys.executable}\n{source}")
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


@pytest.fixture(scope="session")
def output_root(ray_workdir) -> Path:
    path = ray_workdir / "out"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def ray_url(ray_head) -> str:
    return ray_head.url


@pytest.fixture()
def dead_url() -> str:
    """A loopback URL where nothing listens (a port of the Ray range the lab leaves unused)."""
    return "http://127.0.0.1:16399"


@pytest.fixture()
def black_hole_url():
    """A dashboard that accepts connections, reads requests and never answers: what a hung
    head or a stuck proxy looks like, unlike a refused port that fails in milliseconds."""
    from tests.testlab.blackhole import black_hole

    with black_hole() as port:
        yield f"http://127.0.0.1:{port}"


def pytest_report_header(config):
    return f"ray lab: venv {raylab.venv_dir()}, api {raylab.api_url()}, pid {os.getpid()}"


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    """A model source on the client side only: it ships with each job as a Ray package."""
    path = tmp_path_factory.mktemp("models") / "mlp.py"
    path.write_text("class SimpleMLP:\n    pass\n")
    return path
