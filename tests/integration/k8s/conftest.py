"""Session fixtures: the real single-node cluster of ``tests.testlab.k8s``, a test image, an
output volume both the pods and the tests see, and inventories that point at it, at a dead
port, at a black hole and with a token that has no rights.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import lab_unavailable
from tests.helpers import FAKE_SNAKEGRINDER
from tests.testlab import k8s as k8slab

HERE = Path(__file__).resolve().parent
DEAD_PORT = 16449  # nothing listens there


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.k8s)


@pytest.fixture(scope="session")
def k8s_cluster():
    try:
        cluster = k8slab.start()
    except k8slab.LabError as exc:
        lab_unavailable(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def k8s_image(k8s_cluster) -> str:
    try:
        return k8slab.payload_image(FAKE_SNAKEGRINDER)
    except k8slab.LabError as exc:
        lab_unavailable(str(exc))


@pytest.fixture(scope="session")
def out_root(k8s_cluster) -> Path:
    """The hostPath every job writes into (same machine: also the local_output_root).
    World-writable with the sticky bit: the pods run as uid 1000."""
    path = k8slab.lab_dir() / "k8s-out" / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def black_hole():
    """A listener that accepts connections and never answers (not even the TLS handshake)."""
    from tests.testlab.blackhole import black_hole as hole

    with hole() as port:
        yield port


def _kubeconfig(path: Path, server: str, token: str = "unused") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c"}))
    path.chmod(0o600)
    return path


@pytest.fixture()
def inventory(tmp_path, k8s_cluster, k8s_image, out_root, black_hole) -> Path:
    """``k8s`` (the lab), ``k8samd`` (AMD routed by a label the node has), ``k8sdown``,
    ``k8shole`` and ``k8snobody``."""
    base = {
        "type": "kubernetes", "kubeconfig": str(k8s_cluster.kubeconfig),
        "namespace": k8slab.NAMESPACE, "image_nvidia": k8s_image, "image_amd": k8s_image,
        "image_cpu": k8s_image, "image_pull_policy": "Never",
        "output_host_path": str(out_root), "local_output_root": str(out_root),
        "connect_timeout": 2, "request_timeout": 15,
    }
    doc = {"default_scheduler": "k8s", "schedulers": {
        "k8s": base,
        "k8samd": {**base, "node_selectors": {"AMD": {"warpforge.test/amd": "true"}}},
        "k8sdown": {**base, "kubeconfig": str(_kubeconfig(
            tmp_path / "down.kubeconfig", f"https://127.0.0.1:{DEAD_PORT}"))},
        "k8shole": {**base, "kubeconfig": str(_kubeconfig(
            tmp_path / "hole.kubeconfig", f"https://127.0.0.1:{black_hole}"))},
        "k8snobody": {**base, "kubeconfig": str(k8s_cluster.nobody_kubeconfig)},
    }}
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture()
def model(tmp_path) -> Path:
    path = tmp_path / "mlp.py"
    path.write_text("class SimpleMLP: pass\n")
    return path
