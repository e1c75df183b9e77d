"""Copies from a directory this machine sees (Local job dirs, Ray's and Kubernetes' shared
roots): links are never followed, only regular files are read, unchanged files not at all."""

from __future__ import annotations

import json
import os

from warpforge_launch.artifacts_copy import copy_file, copy_tree
from warpforge_launch.artifacts_store import MANIFEST, ArtifactStore


def fetch(store: ArtifactStore, parent, name="job"):
    st = store.stage("local-1")
    copy_tree(st, str(parent), name)
    copy_file(st, str(parent), "stdout.log", "stdout.log")
    try:
        return store.commit(st, {})
    finally:
        store.close()


def test_tree_links_and_special_files(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("private key")
    job = tmp_path / "root" / "job"
    (job / "weights").mkdir(parents=True)
    (job / "model.mlir").write_text("module @main {}")
    (job / "weights" / "w.npy").write_bytes(os.urandom(3000))
    (job / "weights" / "alias.npy").symlink_to("w.npy")
    (job / "weights" / "up.npy").symlink_to("../model.mlir")
    (job / "weights" / "out.npy").symlink_to("../../../secret")
    (job / "abs").symlink_to(secret)
    (job / "linkdir").symlink_to(tmp_path)
    os.mkfifo(job / "pipe")
    (tmp_path / "root" / "stdout.log").symlink_to(secret)
    got = fetch(ArtifactStore(tmp_path / "art"), tmp_path / "root")
    assert {r["path"] for r in got.refused} == {
        "output/weights/out.npy", "output/abs", "output/linkdir", "output/pipe", "stdout.log"}
    m = json.loads((tmp_path / "art" / "local-1" / MANIFEST).read_text())
    assert {f["path"] for f in m["files"]} == {"output/model.mlir", "output/weights/w.npy"}
    assert sorted(lk["path"] for lk in m["links"]) == ["output/weights/alias.npy",
                                                       "output/weights/up.npy"]
    for p in (tmp_path / "art").rglob("*"):
        assert not p.is_symlink()
        assert not p.is_file() or p.read_bytes() != b"private key"


def test_a_link_to_the_jobs_log_leaves_its_output_directory(tmp_path):
    """The output dir is the unit: a link to a file beside it (the job's own log) is refused,
    and the reason says so (not "the job's directory", which holds the log)."""
    job = tmp_path / "root" / "job"
    job.mkdir(parents=True)
    (tmp_path / "root" / "stdout.log").write_text("the log\n")
    (job / "inner").symlink_to("../stdout.log")
    got = fetch(ArtifactStore(tmp_path / "art"), tmp_path / "root")
    assert list(got.refused) == [{"path": "output/inner", "target": "../stdout.log",
                            "reason": "a symlink leading out of the job's output directory: "
                                      "not followed"}]


def test_output_dir_itself_a_link_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.mlir").write_text("not the job's")
    (tmp_path / "root" / "job").symlink_to(tmp_path / "elsewhere")
    got = fetch(ArtifactStore(tmp_path / "art"), tmp_path / "root")
    assert [r["path"] for r in got.refused] == ["output"] and got.files == 0


def test_unchanged_files_are_not_copied_again_changed_ones_are(tmp_path):
    job = tmp_path / "root" / "job"
    job.mkdir(parents=True)
    (job / "a").write_bytes(b"a" * 1000)
    (job / "b").write_bytes(b"b" * 1000)
    store = ArtifactStore(tmp_path / "art")
    first = fetch(store, tmp_path / "root")
    assert first.transferred_files == 2
    second = fetch(store, tmp_path / "root")
    assert not second.changed and second.transferred_bytes == 0
    (job / "b").write_bytes(b"B" * 1001)
    third = fetch(store, tmp_path / "root")
    assert third.transferred_files == 1 and third.transferred_bytes == 1001
    assert (tmp_path / "art" / "local-1" / "output" / "b").read_bytes() == b"B" * 1001
    assert (tmp_path / "art" / "local-1" / "output" / "a").read_bytes() == b"a" * 1000
