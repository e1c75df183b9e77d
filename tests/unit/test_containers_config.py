"""The inventory's registry and images sections, and the pure parts of registry/images/sif."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from warpforge_launch import inventory
from warpforge_launch.errors import UsageError
from warpforge_launch.lab import images, registry, sif

REPO = Path(__file__).resolve().parents[2]


def parse(doc: dict):
    return inventory.parse({"version": 1, **doc}, None, {})


def test_defaults_and_the_production_inventory():
    inv = inventory.load(REPO / "inventory.yaml", env={})
    assert inv.registry.address == "nuc.local:5000"
    assert inv.images.vendors == ("nvidia", "amd")
    # invoke sif writes where the Slurm scheduler reads
    for vendor in ("nvidia", "amd"):
        assert sif.target_path(inv, vendor) == Path(
            getattr(inv.scheduler("slurm").config, f"image_{vendor}"))


def test_sections_are_strict_and_report_field_paths():
    with pytest.raises(UsageError) as e:
        parse({"registry": {"hots": "x"}, "images": {"vendors": ["intel"]}})
    text = str(e.value)
    assert "registry.hots: Unexpected keyword argument" in text
    assert "images.vendors.0: Input should be 'nvidia' or 'amd'" in text


def test_registry_port_and_box_are_checked():
    with pytest.raises(UsageError, match=r"registry.port: 70000 is not a TCP port"):
        parse({"registry": {"port": 70000}})
    with pytest.raises(UsageError, match=r"registry.box: no box 'nuc'"):
        parse({"registry": {"box": "nuc"}})


def test_sif_dir_when_no_slurm_scheduler_names_the_path():
    inv = parse({"images": {"name": "wf", "sif_dir": "/data/sif"}})
    assert sif.target_path(inv, "amd") == Path("/data/sif/wf-amd.sif")


def test_engine_url_follows_the_registry_box():
    inv = parse({"boxes": {"nuc": {"address": "10.0.0.5", "user": "actions", "port": 2222}},
                 "registry": {"box": "nuc"}})
    assert registry.engine_url(inv) == "ssh://actions@10.0.0.5:2222"
    assert registry.engine_url(parse({})) is None


def test_desired_container_keeps_data_outside_and_restarts_always():
    cfg = parse({"registry": {"port": 5001, "data_dir": "/srv/reg"}}).registry
    spec = registry.desired(cfg)
    assert spec["restart_policy"] == {"Name": "always"}
    assert spec["volumes"] == {"/srv/reg": {"bind": "/var/lib/registry", "mode": "rw"}}
    assert spec["environment"]["REGISTRY_HTTP_ADDR"] == "0.0.0.0:5001"
    other = parse({"registry": {"port": 5002, "data_dir": "/srv/reg"}}).registry
    assert registry.spec_hash(spec) != registry.spec_hash(registry.desired(other))


@pytest.mark.parametrize("text,changed,result", [
    (None, True, {"insecure-registries": ["nuc.local:5000"]}),
    ("", True, {"insecure-registries": ["nuc.local:5000"]}),
    ('{"log-driver": "local", "insecure-registries": ["a:1"]}', True,
     {"log-driver": "local", "insecure-registries": ["a:1", "nuc.local:5000"]}),
    ('{"insecure-registries": ["nuc.local:5000"], "x": 1}', False,
     {"insecure-registries": ["nuc.local:5000"], "x": 1}),
])
def test_merge_insecure_keeps_every_other_key(text, changed, result):
    assert registry.merge_insecure(text, "nuc.local:5000") == (result, changed)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"insecure-registries": "a:1"}'])
def test_merge_insecure_refuses_what_it_cannot_merge(text):
    with pytest.raises(ValueError):
        registry.merge_insecure(text, "nuc.local:5000")


def test_version_comes_from_inventory_then_build_info_then_hash(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    assert images.version_of(parse({}), dist, "abcdef0123456789") == "gabcdef012345"
    (dist / "BUILD-INFO.json").write_text(json.dumps({"version": "1.2.3+local"}))
    assert images.version_of(parse({}), dist, "x") == "1.2.3-local"
    assert images.version_of(parse({"images": {"version": "2.0"}}), dist, "x") == "2.0"


def test_build_key_changes_with_the_dist_and_base_only(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    inv = parse({"images": {"base_images": {"nvidia": "reg:5000/cuda:12"}}})
    a = images.plan(inv, dist, "hash1", "nvidia")
    assert a.buildargs["BASE_IMAGE"] == "reg:5000/cuda:12"
    assert a.tags == (f"nvidia-{a.buildargs['VERSION']}", "nvidia")
    assert a.key == images.plan(inv, dist, "hash1", "nvidia").key
    assert a.key != images.plan(inv, dist, "hash2", "nvidia").key
    assert a.key != images.plan(parse({}), dist, "hash1", "nvidia").key


def test_dockerfiles_keep_the_venv_and_the_binary_in_separate_layers():
    for vendor in ("nvidia", "amd"):
        text = (REPO / "containers" / vendor / "Dockerfile").read_text()
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        copies = [ln for ln in lines if ln.startswith("COPY")]
        assert copies == ["COPY venv/ /opt/warpforge/venv/", "COPY app/ /opt/warpforge/"]
        assert 'ENTRYPOINT ["/opt/warpforge/bin/snakegrinder"]' in lines
        assert lines[1].startswith("FROM ${BASE_IMAGE}") and lines[0].startswith("ARG BASE_IMAGE=")
        assert any(ln.startswith("USER 10001") for ln in lines)
        # labels that change every build come after every layer
        assert text.index("ARG GIT_COMMIT") > text.index("COPY app/")


def test_stage_context_splits_the_dist(tmp_path):
    dist = tmp_path / "dist"
    (dist / "bin").mkdir(parents=True)
    (dist / "venv/lib").mkdir(parents=True)
    (dist / "bin/snakegrinder").write_text("#!/bin/sh\n")
    (dist / "venv/lib/big").write_bytes(b"x" * 10)
    (dist / "BUILD-INFO.json").write_text("{}")
    ctx = images.stage_context(dist, tmp_path / "ctx")
    assert (ctx / "venv/lib/big").read_bytes() == b"x" * 10
    assert (ctx / "app/bin/snakegrinder").exists() and (ctx / "app/BUILD-INFO.json").exists()
    assert not (ctx / "app/venv").exists()
    assert os.stat(ctx / "venv/lib/big").st_ino == os.stat(dist / "venv/lib/big").st_ino


def test_definition_and_metadata_follow_the_image_config(tmp_path):
    config = {"Entrypoint": ["/opt/warpforge/bin/snakegrinder"], "Cmd": ["--help"],
              "Env": ["PATH=/usr/bin:/bin", "HOME=/home/warpforge", "X=a b'c"],
              "Labels": {"org.warpforge.vendor": "amd"}}
    text = sif.definition("reg:5000/warpforge@sha256:abc", config)
    assert text.startswith("Bootstrap: docker\nFrom: reg:5000/warpforge@sha256:abc\n")
    assert '    exec /opt/warpforge/bin/snakegrinder "$@"' in text
    root = tmp_path / "root"
    root.mkdir()
    sif.write_metadata(root, config, text)
    env = (root / ".singularity.d/env/10-docker2singularity.sh").read_text()
    assert "export X='a b'\"'\"'c'" in env
    assert json.loads((root / ".singularity.d/labels.json").read_text()) == config["Labels"]
    assert os.access(root / ".singularity.d/actions/run", os.X_OK)
    assert os.readlink(root / "singularity") == ".singularity.d/runscript"


def test_publish_renames_into_place_and_keeps_the_previous(tmp_path):
    target = tmp_path / "warpforge-amd.sif"
    target.write_bytes(b"old")
    tmp = tmp_path / ".warpforge-amd.sif.tmp-1"
    tmp.write_bytes(b"new")
    sif.publish(tmp, target, "Bootstrap: docker\nFrom: x@sha256:1\n")
    assert target.read_bytes() == b"new"
    assert (tmp_path / "warpforge-amd.prev.sif").read_bytes() == b"old"
    assert (tmp_path / "warpforge-amd.def").read_text().endswith("From: x@sha256:1\n")
    assert not tmp.exists()


def test_doctor_names_each_configured_sif_and_whether_it_exists(tmp_path):
    (tmp_path / "nv.sif").write_bytes(b"x")
    inv = parse({"schedulers": {
        "slurm": {"type": "slurm", "image_nvidia": str(tmp_path / "nv.sif"),
                  "image_amd": str(tmp_path / "amd.sif")},
        "bare": {"type": "slurm", "runtime": "none"}}})
    assert sif.doctor(inv) == [("slurm.image_nvidia", tmp_path / "nv.sif", True),
                               ("slurm.image_amd", tmp_path / "amd.sif", False)]


def test_docker_sdk_errors_are_one_line_naming_the_step(capsys):
    import docker
    import requests

    def api_error():
        raise docker.errors.APIError("400 Client Error: Bad Request (\"No command specified\")")

    def unreachable():
        raise requests.exceptions.ConnectionError("Connection aborted")

    assert registry.run_step("sif", api_error) == 1
    assert registry.run_step("images", unreachable) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("error: sif: Docker engine: 400 Client Error")
    assert err[1] == "error: images: Docker engine: Connection aborted"
    with pytest.raises(KeyError):   # a bug stays a bug (traceback), never a quiet exit code
        registry.run_step("sif", lambda: {}["x"])


def test_runscript_takes_arguments_or_the_whole_argv(tmp_path):
    import subprocess

    script = tmp_path / "runscript"
    script.write_text(sif.runscript({"Entrypoint": ["/bin/echo", "entry"]}))
    script.chmod(0o755)
    for argv in (["a b", "c"], ["/bin/echo", "a b", "c"]):
        out = subprocess.run([str(script), *argv], capture_output=True, text=True, check=True)
        assert out.stdout == "entry a b c\n"
