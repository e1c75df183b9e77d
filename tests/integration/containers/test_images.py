"""invoke images: build with the Docker SDK, check by running, push, verify the digest; the
stand-in traces the example inside the container exactly as the dist does outside."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.integration.containers.test_registry import invoke
from warpforge_launch import inventory
from warpforge_launch.lab import manifest, registry

VENDORS = ("nvidia", "amd")


def mlir_of(stdout: str) -> str:
    """The module --trace-example prints between its dashed lines."""
    start = stdout.index("module @main")
    end = stdout.index("\n---", start)
    return stdout[start:end].strip()


@pytest.fixture(scope="module")
def pushed(registry_inv, standin_dist):
    r = invoke("images", "--inventory", str(registry_inv), "--dist", str(standin_dist), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return {row["vendor"]: row for row in json.loads(r.stdout)}


@pytest.fixture(scope="module")
def dist_mlir(standin_dist, tmp_path_factory):
    out = tmp_path_factory.mktemp("trace")
    r = subprocess.run([str(standin_dist / "bin/snakegrinder"), "--trace-example", "--out",
                        str(out)], capture_output=True, text=True, timeout=300, check=True)
    return mlir_of(r.stdout)


def test_both_images_are_pushed_under_both_tags_with_the_verified_digest(
        pushed, registry_inv, docker_client, standin_dist):
    inv = inventory.load(registry_inv, env={})
    dist_hash = manifest.scan(standin_dist).hash
    for vendor in VENDORS:
        row = pushed[vendor]
        assert row["built"] and row["checked"] and row["pushed"]
        version = row["ref"].rsplit(":", 1)[1]
        assert version.startswith(f"{vendor}-")
        for tag in (version, vendor):
            assert registry.manifest_digest(inv.registry, "warpforge", tag) == row["digest"]
        image = docker_client.images.get(row["ref"])
        labels = image.labels
        assert labels["org.warpforge.dist-hash"] == dist_hash
        assert labels["org.opencontainers.image.version"] == version.split("-", 1)[1]
        assert labels["org.opencontainers.image.revision"]
        assert labels["org.opencontainers.image.base.name"] == "wf-test/python:3.11"
        assert labels["org.warpforge.vendor"] == vendor
        config = image.attrs["Config"]
        assert config["Entrypoint"] == ["/opt/warpforge/bin/snakegrinder"]
        assert config["User"] and not config["User"].startswith(("0", "root"))


def test_pulled_by_digest_the_image_traces_the_example_like_the_dist(
        pushed, registry_inv, docker_client, dist_mlir):
    inv = inventory.load(registry_inv, env={})
    for vendor in VENDORS:
        by_digest = f"{inv.registry.address}/warpforge@{pushed[vendor]['digest']}"
        pulled = docker_client.images.pull(by_digest)
        assert pulled.id == pushed[vendor]["image_id"]
        out = docker_client.containers.run(by_digest, ["--trace-example", "--out", "/tmp/o"],
                                           network_mode="none", remove=True)
        assert "SUCCESS: Trace example completed" in out.decode()
        assert mlir_of(out.decode()) == dist_mlir
        whoami = docker_client.containers.run(by_digest, ["-c", "id -u"], entrypoint="/bin/sh",
                                              network_mode="none", remove=True)
        assert whoami.decode().strip() == "10001"


def test_a_rebuild_with_nothing_changed_builds_and_pushes_nothing(pushed, registry_inv,
                                                                  standin_dist):
    r = invoke("images", "--inventory", str(registry_inv), "--dist", str(standin_dist), "--json")
    assert r.returncode == 0, r.stderr
    for row in json.loads(r.stdout):
        assert not (row["built"] or row["checked"] or row["pushed"])
        assert row["digest"] == pushed[row["vendor"]]["digest"]


def test_a_new_binary_changes_only_the_small_layer(pushed, registry_inv, docker_client,
                                                   standin_dist, tmp_path, unique):
    """The venv layer is reused (not pushed again): the registry grows by the small layer."""
    dist = tmp_path / "dist"
    shutil.copytree(standin_dist, dist, symlinks=True, copy_function=_link)
    launcher = dist / "bin/snakegrinder"
    text = launcher.read_text()
    launcher.unlink()                       # a new file, not a write through the hard link
    launcher.write_text(text + "# rebuilt\n")
    launcher.chmod(0o755)
    inv = inventory.load(registry_inv, env={})
    client_reg = docker_client.containers.get(inv.registry.container)
    before = registry.disk_use(client_reg)
    r = invoke("images", "--inventory", str(registry_inv), "--dist", str(dist), "--vendors",
               "nvidia", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    row = json.loads(r.stdout)[0]
    assert row["built"] and row["pushed"] and row["digest"] != pushed["nvidia"]["digest"]
    old = docker_client.images.get(pushed["nvidia"]["image_id"]).attrs["RootFS"]["Layers"]
    new = docker_client.images.get(row["image_id"]).attrs["RootFS"]["Layers"]
    assert len(new) == len(old) and new[:-1] == old[:-1] and new[-1] != old[-1]
    grown = registry.disk_use(client_reg) - before
    venv_bytes = sum(f.stat().st_size for f in (dist / "venv").rglob("*") if f.is_file())
    assert grown < venv_bytes / 20, f"pushed {grown} bytes for a launcher change"


def test_a_missing_dist_is_one_line_exit_2(registry_inv, tmp_path):
    r = invoke("images", "--inventory", str(registry_inv), "--dist", str(tmp_path / "none"))
    assert r.returncode == 2
    assert r.stderr.startswith("error: images: dist directory")
    assert "Traceback" not in r.stderr


def _link(src, dst):
    import os

    os.link(src, dst)
