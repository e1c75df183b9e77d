"""The registry panel against a real registry v2 (Debian's `docker-registry`, what
`registry:2` runs) on loopback, with images pushed through the registry's own HTTP API."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time

import pytest

from tests.conftest import lab_unavailable
from warpforge_launch.web.lab import Lab

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    import httpx

    binary = shutil.which("docker-registry")
    if binary is None:
        lab_unavailable("docker-registry is not installed (apt-get install docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "version": 0.1, "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    proc = subprocess.Popen([binary, "serve", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/v2/", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                lab_unavailable(f"docker-registry did not start: {proc.stderr.read()!r}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def push(url: str, repo: str, tags: list[str]) -> None:
    """An image as `docker push` leaves it: a config blob, a layer blob, a manifest per tag."""
    import httpx

    with httpx.Client(base_url=url, timeout=10, trust_env=False) as c:
        def blob(data: bytes) -> dict:
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            loc = r.headers["location"]
            sep = "&" if "?" in loc else "?"  # the upload URL carries its own state
            r = c.put(f"{loc}{sep}digest={digest}", content=data,
                      headers={"Content-Type": "application/octet-stream"})
            assert r.status_code == 201, r.text
            return {"digest": digest, "size": len(data)}

        cfg = blob(json.dumps({"architecture": "amd64", "os": "linux",
                               "rootfs": {"type": "layers", "diff_ids": []}}).encode())
        layer = blob(repo.encode() * 100)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **cfg},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        **layer}]}).encode()
        for tag in tags:
            r = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest,
                      headers={"Content-Type": MANIFEST})
            assert r.status_code == 201, r.text


def with_registry(host: str, port: int):
    """The built-in inventory (never ./inventory.yaml: the production lab) plus a `registry`
    section naming the test's registry."""
    from warpforge_launch import inventory

    doc = {**inventory.default_document(), "registry": {"host": host, "port": port}}
    return inventory.parse(doc, None, {})


def test_the_panel_lists_repositories_and_tags(registry, tmp_path):
    from starlette.testclient import TestClient

    from warpforge_launch.web.app import Settings, create_app

    push(registry, "warpforge", ["nvidia", "nvidia-0.1.0", "amd"])
    push(registry, "base/python", ["3.11"])
    port = int(registry.rsplit(":", 1)[1])
    inv = with_registry("127.0.0.1", port)
    app = create_app(Settings(refresh_interval=0, smoke_junit=None), inventory=inv)
    with TestClient(app, base_url="http://127.0.0.1:8700") as c:
        reg = c.get("/api/boxes").json()["registry"]
    assert reg["configured"] is True and reg["url"] == registry and "error" not in reg
    assert reg["repositories"] == [{"name": "base/python", "tags": ["3.11"]},
                                   {"name": "warpforge", "tags": ["amd", "nvidia",
                                                                  "nvidia-0.1.0"]}]


def test_a_registry_that_is_down_is_an_error_line_not_a_failure(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    lab = Lab(with_registry("127.0.0.1", port), None)
    try:
        reg = lab.registry()
    finally:
        lab.close()
    assert reg["configured"] is True and reg["repositories"] == []
    assert f"127.0.0.1:{port}" in reg["error"]
