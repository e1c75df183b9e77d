"""invoke sif: a SIF per vendor from the pushed image, assembled with mksquashfs + siftool
(no apptainer/singularity can be installed here), published atomically where Slurm looks.

The stand-in inside the SIF is run the way a Singularity runtime runs it, minus its
namespaces: the squashfs partition loop-mounted read-only at the offset siftool reports,
then chroot into it in a private mount namespace."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.integration.containers.test_images import mlir_of
from tests.integration.containers.test_registry import invoke, small_image
from warpforge_launch import inventory
from warpforge_launch.lab import sif


def siftool(*args: str) -> str:
    r = subprocess.run(["siftool", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def in_sif(path: Path, script: str, *args: str, timeout: float = 300):
    """Run script (sh) with the SIF's root filesystem mounted read-only at $1 (+ args)."""
    offset, size = sif.partition(path)
    mnt = path.parent / f".mnt-{os.getpid()}"
    mnt.mkdir(exist_ok=True)
    try:
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount -t squashfs -o "ro,loop,offset=$2,sizelimit=$3" "$4" "$1" && shift 4 '
             '&& { [ ! -d "$0/tmp" ] || mount -t tmpfs tmpfs "$0/tmp"; } '
             '&& { [ ! -d "$0/proc" ] || mount -t proc proc "$0/proc"; } && ' + script,
             str(mnt), str(mnt), str(offset), str(size), str(path), *args],
            capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        mnt.rmdir()


def test_the_sif_is_where_slurm_looks_and_passes_siftool(nvidia_sif, registry_inv):
    inv = inventory.load(registry_inv, env={})
    path = Path(nvidia_sif["path"])
    assert path == Path(inv.scheduler("slurm").config.image_nvidia)
    assert path.read_bytes()[:32].startswith(b"#!/usr/bin/env run-singularity\n")
    listing = siftool("list", str(path))
    assert "Def.FILE" in listing and "FS (Squashfs/*System/amd64)" in listing
    assert "Squashfs" in siftool("info", "2", str(path))
    deffile = path.with_suffix(".def").read_text()
    assert f"From: {nvidia_sif['image']}\n" in deffile and "Bootstrap: docker" in deffile
    assert nvidia_sif["image"].split("@", 1)[1] == sif_digest(inv)


def sif_digest(inv) -> str:
    from warpforge_launch.lab import registry

    return registry.manifest_digest(inv.registry, "warpforge", "nvidia")


def test_the_stand_in_inside_the_sif_traces_the_example(nvidia_sif, standin_dist, tmp_path):
    r = in_sif(Path(nvidia_sif["path"]),
               'test -x "$0/opt/warpforge/bin/snakegrinder" && test -d "$0/opt/warpforge/venv" '
               '&& exec chroot "$0" /.singularity.d/actions/run --trace-example --out /tmp/o')
    assert r.returncode == 0, r.stderr[-2000:]
    want = subprocess.run([str(standin_dist / "bin/snakegrinder"), "--trace-example", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, check=True)
    assert mlir_of(r.stdout) == mlir_of(want.stdout)


def test_sif_again_is_unchanged(nvidia_sif, registry_inv):
    r = invoke("sif", "--inventory", str(registry_inv), "--vendors", "nvidia", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["outcome"] == "unchanged"


def test_a_new_image_replaces_the_sif_and_keeps_the_previous_one(
        registry_inv, docker_client, lab_root, tmp_path, unique):
    """Small FROM-scratch images under their own name: both vendors, then a new build."""
    from tests.integration.containers.conftest import write_inventory

    base = inventory.load(registry_inv, env={})
    shared = tmp_path / "shared"
    path = write_inventory(tmp_path / "inv.yaml", lab_root, base.registry.port,
                           images={"name": f"tiny-{unique}", "sif_dir": str(shared)})
    doc = json.loads(path.read_text())
    del doc["schedulers"]["slurm"]          # no Slurm paths: the SIFs go to images.sif_dir
    doc["registry"] = json.loads(registry_inv.read_text())["registry"]
    path.write_text(json.dumps(doc))
    repo = f"{base.registry.address}/tiny-{unique}"
    for vendor in ("nvidia", "amd"):
        small_image(docker_client, f"{repo}:{vendor}", os.urandom(1024) + vendor.encode())
    first = invoke("sif", "--inventory", str(path), "--json")
    assert first.returncode == 0, first.stderr
    rows = {row["vendor"]: row for row in json.loads(first.stdout)}
    assert set(rows) == {"nvidia", "amd"}
    target = shared / f"tiny-{unique}-nvidia.sif"
    assert rows["nvidia"]["path"] == str(target) and rows["nvidia"]["outcome"] == "built"
    old_bytes = target.read_bytes()

    small_image(docker_client, f"{repo}:nvidia", os.urandom(2048))
    second = invoke("sif", "--inventory", str(path), "--vendors", "nvidia", "--json")
    assert second.returncode == 0, second.stderr
    row = json.loads(second.stdout)[0]
    assert row["outcome"] == "built" and row["image"] != rows["nvidia"]["image"]
    assert (shared / f"tiny-{unique}-nvidia.prev.sif").read_bytes() == old_bytes
    assert target.read_bytes() != old_bytes
    assert sorted(p.name for p in shared.iterdir()) == sorted([
        f"tiny-{unique}-amd.def", f"tiny-{unique}-amd.sif", f"tiny-{unique}-nvidia.def",
        f"tiny-{unique}-nvidia.prev.sif", f"tiny-{unique}-nvidia.sif"])   # no temp files left
    r = in_sif(target, 'exec "$0/bin/busybox" wc -c < "$0/payload.bin"')
    assert r.stdout.strip() == "2048", r.stderr


def test_sif_without_a_pushed_image_is_one_line_exit_2(registry_inv, lab_root, tmp_path):
    from tests.integration.containers.conftest import write_inventory

    base = inventory.load(registry_inv, env={})
    path = write_inventory(tmp_path / "inv.yaml", lab_root, base.registry.port,
                           images={"name": "never-pushed"})
    r = invoke("sif", "--inventory", str(path), "--vendors", "amd")
    assert r.returncode == 2
    assert r.stderr.startswith("error: sif: the registry has no 127.0.0.1:")
    assert "hint: invoke images" in r.stderr
