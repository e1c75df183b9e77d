"""Session fixtures for the container tests: a private dockerd, the images it cannot pull
(`registry:2` from Debian's docker-registry, a Python 3.11 base), a stand-in dist, and a
loopback inventory whose registry runs through `invoke registry.up`'s own code.

Only what this session started is stopped at its end (dockerd by its recorded pid)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests import netguard
from tests.conftest import lab_unavailable
from tests.integration.lab.conftest import ssh_lab  # noqa: F401 - the sshd boxes, reused
from tests.testlab import docker as docker_lab
from tests.testlab.standin import build_dist, require_torch


@pytest.fixture(scope="session")
def dockerd():
    missing = docker_lab.missing_tools()
    if missing:
        lab_unavailable(f"container lab tools missing: {', '.join(missing)} "
                        "(.ci/setup.d/60-docker.sh)")
    lab = docker_lab.DockerLab()
    try:
        lab.start()
        lab.ensure_images()
    except Exception as e:  # noqa: BLE001 - any failure to bring it up is "unavailable"
        lab_unavailable(f"private dockerd could not start: {e}")
    client = lab.client()
    for c in client.containers.list(all=True, filters={"name": "wf-test-registry-"}):
        c.remove(force=True)   # an earlier session's registry (restart=always) that outlived it
    client.close()
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = lab.url
    yield lab
    if old is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = old
    if lab.started:
        lab.stop()


@pytest.fixture(scope="session")
def docker_client(dockerd):
    c = dockerd.client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def lab_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("containers")


def write_inventory(path: Path, root: Path, port: int, **extra) -> Path:
    """A loopback inventory: registry on 127.0.0.1, the Python base for both vendors, Slurm
    image paths under root (never the production inventory)."""
    doc = {
        "version": 1,
        "schedulers": {
            "local": {"type": "local"},
            "slurm": {"type": "slurm", "image_nvidia": str(root / "shared/warpforge-nvidia.sif"),
                      "image_amd": str(root / "shared/warpforge-amd.sif")}},
        "boxes": {"here": {"transport": "local"}},
        "build": {"profile": "standin", "source": str(root)},
        "registry": {"host": "127.0.0.1", "bind": "127.0.0.1", "port": port,
                     "data_dir": str(root / f"registry-{port}"),
                     "container": f"wf-test-registry-{port}"},
        "images": {"base_images": {"nvidia": docker_lab.PY_IMAGE, "amd": docker_lab.PY_IMAGE}},
    }
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value}
    path.write_text(json.dumps(doc, indent=2))
    return path


@pytest.fixture(scope="session")
def registry_inv(dockerd, lab_root):
    """The session's registry, started by the production `registry.up` path."""
    from warpforge_launch import inventory
    from warpforge_launch.lab import registry

    port = docker_lab.free_port()
    path = write_inventory(lab_root / "inventory.yaml", lab_root, port)
    inv = inventory.load(path, env={})
    client = dockerd.client()
    assert registry.up(inv.registry, client) in ("created", "replaced")
    yield path
    registry.down(inv.registry, client)
    client.close()


@pytest.fixture(scope="session")
def standin_dist(tmp_path_factory):
    require_torch()
    out = tmp_path_factory.mktemp("standin") / "dist"
    r = build_dist(out)
    assert r.returncode == 0, f"stand-in build failed:\n{r.stdout}\n{r.stderr}"
    yield out
    shutil.rmtree(out.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def nvidia_sif(registry_inv, standin_dist):
    """The NVIDIA SIF of the stand-in, made by `invoke sif` (one vendor keeps the run short:
    the AMD SIF is the same code with another tag)."""
    from tests.integration.containers.test_registry import invoke

    r = invoke("images", "--inventory", str(registry_inv), "--dist", str(standin_dist),
               "--vendors", "nvidia")
    assert r.returncode == 0, r.stderr[-2000:]
    r = invoke("sif", "--inventory", str(registry_inv), "--vendors", "nvidia", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)[0]


@pytest.fixture
def unique():
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def _no_traffic_left_loopback():
    before = len(netguard.blocked)
    yield
    assert netguard.blocked[before:] == [], "container test tried to reach a non-loopback address"
