"""invoke registry.*: the registry container through the Docker SDK, against a real dockerd
and a real registry v2; registry.trust on the sshd boxes over SSH."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from warpforge_launch import inventory
from warpforge_launch.lab import registry

REPO = Path(__file__).resolve().parents[3]


def invoke(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The task as an admin runs it (invoke in a process, the worktree's code first)."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def small_image(client, ref: str, payload: bytes) -> None:
    """FROM scratch + busybox + one file of payload: a distinct image per payload."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="busybox")
        for name, data in (("payload.bin", payload),
                           ("Dockerfile", b"FROM scratch\nCOPY busybox /bin/busybox\n"
                                          b"COPY payload.bin /payload.bin\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=ref, network_mode="none", rm=True)
    repo, tag = ref.rsplit(":", 1)
    for chunk in client.api.push(repo, tag=tag, stream=True, decode=True):
        assert "error" not in chunk, chunk


def status_json(inv_path) -> dict:
    r = invoke("registry.status", "--inventory", str(inv_path), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_up_twice_changes_nothing(registry_inv, docker_client):
    inv = inventory.load(registry_inv, env={})
    before = docker_client.containers.get(inv.registry.container)
    r = invoke("registry.up", "--inventory", str(registry_inv), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["action"] == "unchanged"
    after = docker_client.containers.get(inv.registry.container)
    assert after.id == before.id and after.status == "running"
    assert after.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert any(m["Destination"] == "/var/lib/registry" and m["Source"] == inv.registry.data_dir
               for m in after.attrs["Mounts"])


def test_status_shows_repos_tags_digests_and_disk(registry_inv, docker_client, unique):
    inv = inventory.load(registry_inv, env={})
    ref = f"{inv.registry.address}/status-{unique}:v1"
    small_image(docker_client, ref, os.urandom(4096))
    st = status_json(registry_inv)
    digest = st["repositories"][f"status-{unique}"]["v1"]
    assert digest.startswith("sha256:")
    local = docker_client.images.get(ref).attrs["RepoDigests"]
    assert f"{inv.registry.address}/status-{unique}@{digest}" in local
    assert st["container"] == "running" and st["disk_bytes"] > 4096
    text = invoke("registry.status", "--inventory", str(registry_inv))
    assert f"status-{unique}:v1  {digest}" in text.stdout


def test_data_survives_a_restart_of_the_engine(registry_inv, dockerd, unique):
    """restart=always: the engine restarts, the registry comes back by itself with its data."""
    inv = inventory.load(registry_inv, env={})
    client = dockerd.client()
    ref = f"{inv.registry.address}/keep-{unique}:v1"
    small_image(client, ref, os.urandom(8192))
    digest = registry.manifest_digest(inv.registry, f"keep-{unique}", "v1")
    client.close()
    dockerd.restart()
    registry.wait_ready(inv.registry, 60)
    assert registry.manifest_digest(inv.registry, f"keep-{unique}", "v1") == digest


def test_gc_frees_the_space_of_an_untagged_image(registry_inv, docker_client, unique):
    inv = inventory.load(registry_inv, env={})
    ref = f"{inv.registry.address}/gc-{unique}:t"
    small_image(docker_client, ref, os.urandom(3 << 20))   # 3 MiB the next push orphans
    small_image(docker_client, ref, os.urandom(4096))
    r = invoke("registry.gc", "--inventory", str(registry_inv), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["before"] - out["after"] >= 3 << 20
    assert registry.manifest_digest(inv.registry, f"gc-{unique}", "t") is not None


def test_status_of_a_stopped_registry_is_exit_3(dockerd, lab_root, tmp_path):
    from tests.integration.containers.conftest import write_inventory
    from tests.testlab.docker import free_port

    path = write_inventory(tmp_path / "inv.yaml", lab_root, free_port(15600, 15699))
    r = invoke("registry.status", "--inventory", str(path))
    assert r.returncode == 3
    assert "container absent" in r.stdout


def test_up_with_an_unreachable_engine_is_one_line_exit_3(lab_root, tmp_path):
    from tests.integration.containers.conftest import write_inventory

    path = write_inventory(tmp_path / "inv.yaml", lab_root, 15999)
    r = invoke("registry.up", "--inventory", str(path),
               env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert r.returncode == 3
    assert r.stderr.startswith("error: registry.up: Docker engine unix://")
    assert "Traceback" not in r.stderr


# ---- trust ----------------------------------------------------------------------------------
@pytest.fixture
def trust_inv(ssh_lab, lab_root, tmp_path, unique):  # noqa: F811 - ssh_lab is the fixture
    """Box nvidia (sshd, root) and a local box; daemon.json in a per-test dir under the boxes'
    own /opt, and a restart command that only records that it ran (no dockerd runs there)."""
    d = f"/opt/wf-test-trust-{unique}"
    doc = ssh_lab.inventory(names=["nvidia"])
    doc["boxes"]["here"] = {"transport": "local"}
    doc["registry"] = {"host": "127.0.0.1", "port": 15510,
                       "daemon_json": f"{d}/daemon.json",
                       "docker_restart": ["sh", "-c", f"echo restarted >> {d}/restarts"]}
    path = tmp_path / "inv.yaml"
    path.write_text(json.dumps(doc))
    yield path, d
    ssh_lab.ssh("nvidia", "rm", "-rf", d, check=False)


def test_trust_merges_keeping_other_keys_and_restarts_only_on_change(ssh_lab, trust_inv):  # noqa: F811
    path, d = trust_inv
    old = {"log-driver": "journald", "insecure-registries": ["10.9.9.9:5000"],
           "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}}}
    ssh_lab.ssh("nvidia", "mkdir", "-p", d)
    ssh_lab.ssh("nvidia", "sh", "-c", f"cat > {d}/daemon.json <<'E'\n{json.dumps(old)}\nE")
    r = invoke("registry.trust", "--inventory", str(path), "--boxes", "nvidia", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["outcome"] == "changed"
    new = json.loads(ssh_lab.ssh("nvidia", "cat", f"{d}/daemon.json").stdout)
    assert new == {**old, "insecure-registries": ["10.9.9.9:5000", "127.0.0.1:15510"]}
    backups = ssh_lab.ssh("nvidia", "sh", "-c", f"ls {d}").stdout.split()
    backup = next(b for b in backups if b.startswith("daemon.json.bak-"))
    assert json.loads(ssh_lab.ssh("nvidia", "cat", f"{d}/{backup}").stdout) == old
    assert ssh_lab.ssh("nvidia", "cat", f"{d}/restarts").stdout == "restarted\n"

    again = invoke("registry.trust", "--inventory", str(path), "--boxes", "nvidia", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)[0]["outcome"] == "unchanged"
    assert ssh_lab.ssh("nvidia", "cat", f"{d}/restarts").stdout == "restarted\n"


def test_trust_refuses_a_broken_daemon_json_and_reports_a_box_without_docker(
        ssh_lab, trust_inv, tmp_path):  # noqa: F811
    path, d = trust_inv
    ssh_lab.ssh("nvidia", "mkdir", "-p", d)
    ssh_lab.ssh("nvidia", "sh", "-c", f"echo '{{not json' > {d}/daemon.json")
    bare = tmp_path / "bin"   # the local box's PATH: a shell, no docker
    bare.mkdir()
    for tool in ("sh", "cat", "test"):
        os.symlink(f"/bin/{tool}" if os.path.exists(f"/bin/{tool}") else f"/usr/bin/{tool}",
                   bare / tool)
    r = invoke("registry.trust", "--inventory", str(path), "--json",
               env={"PATH": f"{bare}:{Path(sys.executable).parent}"})
    rows = {row["box"]: row for row in json.loads(r.stdout)}
    assert rows["here"]["outcome"] == "no-docker"
    assert rows["nvidia"]["outcome"] == "failed" and "not valid daemon.json" in \
        rows["nvidia"]["detail"]
    assert r.returncode == 1
    assert ssh_lab.ssh("nvidia", "cat", f"{d}/daemon.json").stdout == "{not json\n"
