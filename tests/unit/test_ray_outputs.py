"""A job's files are read under the output root only: no symlink leads the client elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from warpforge_launch.schedulers.ray_outputs import read_outputs, with_refusals


@pytest.fixture()
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    (path / "wf-1" / "inputs").mkdir(parents=True)
    (path / "wf-1" / "model.mlir").write_text("module @main {}\n")
    (path / "wf-1" / "inputs" / "input_0.npy").write_bytes(b"x")
    return path


@pytest.fixture()
def client_file(tmp_path) -> Path:
    """A file of the client's own that a hostile cluster would like it to read."""
    path = tmp_path / "client" / "id_ed25519"
    path.parent.mkdir()
    path.write_text("CLIENT SECRET\n")
    return path


def names(found, root):
    return sorted(os.path.relpath(f, root / "wf-1") for f in found.files)


def test_regular_files_and_the_mlir(root):
    found = read_outputs(str(root), "wf-1")
    assert names(found, root) == ["inputs/input_0.npy", "model.mlir"]
    assert found.mlir == "module @main {}\n" and found.refused == []


def test_job_dir_that_is_a_symlink_out_of_the_root_is_refused(root, client_file):
    os.symlink(client_file.parent, root / "wf-2")
    (client_file.parent / "model.mlir").write_text("FORGED\n")
    found = read_outputs(str(root), "wf-2")
    assert found.files == [] and found.mlir is None and found.refused == ["."]


def test_mlir_symlink_to_a_client_file_is_never_read(root, client_file):
    (root / "wf-1" / "model.mlir").unlink()
    os.symlink(client_file, root / "wf-1" / "model.mlir")
    os.symlink(client_file.parent, root / "wf-1" / "escape")
    found = read_outputs(str(root), "wf-1")
    assert found.mlir is None
    assert sorted(found.refused) == ["escape", "model.mlir"]
    assert all("CLIENT" not in Path(f).read_text() for f in found.files)
    assert names(found, root) == ["inputs/input_0.npy"]


def test_symlink_inside_the_job_dir_is_listed(root):
    os.symlink("model.mlir", root / "wf-1" / "alias.mlir")
    assert "alias.mlir" in names(read_outputs(str(root), "wf-1"), root)


def test_a_fifo_in_place_of_the_mlir_does_not_block(root):
    (root / "wf-1" / "model.mlir").unlink()
    os.mkfifo(root / "wf-1" / "model.mlir")
    found = read_outputs(str(root), "wf-1")
    assert found.mlir is None and found.refused == ["model.mlir"]


def test_an_mlir_symlink_inside_the_job_dir_is_refused_too(root):
    """Listed (its target is a file of the job), but model.mlir is read only as a regular
    file: the result names it instead of reporting no MLIR as if none were written."""
    (root / "wf-1" / "model.mlir").rename(root / "wf-1" / "real.mlir")
    os.symlink("real.mlir", root / "wf-1" / "model.mlir")
    found = read_outputs(str(root), "wf-1")
    assert found.mlir is None and found.refused == ["model.mlir"]


def test_refusals_fail_the_result_and_are_named():
    assert with_refusals(True, None, [], "/o/wf-1") == (True, None)
    assert with_refusals(True, None, ["model.mlir", "."], "/o/wf-1/") == (False, (
        "refused /o/wf-1/model.mlir: a symlink or not a regular file (never followed); "
        "refused /o/wf-1: a symlink or not a regular file (never followed)"))
    assert with_refusals(False, "FAILED: x", ["e"], "/o/wf-1")[1].startswith("FAILED: x; ")


@pytest.mark.parametrize("sid", ["..", ".", "a/b", ""])
def test_only_one_plain_segment_names_the_job_dir(root, sid):
    with pytest.raises(ValueError):
        read_outputs(str(root), sid)


def test_unmounted_root_and_missing_job_dir(root, tmp_path):
    assert read_outputs(str(tmp_path / "nope"), "wf-1").mounted is False
    missing = read_outputs(str(root), "wf-9")
    assert missing.mounted and missing.files == [] and missing.mlir is None
