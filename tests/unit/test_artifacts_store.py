"""The artifact store on disk: staging and verification, the manifest, list, gc and what it
refuses to touch."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import run_cli
from warpforge_launch.artifacts_store import (
    MANIFEST,
    ArtifactStore,
    TransferError,
    link_leaves,
    read_manifest,
    safe_relpath,
)
from warpforge_launch.errors import UsageError


def put(store: ArtifactStore, job_id: str, files: dict[str, bytes], meta=None):
    st = store.stage(job_id)
    for path, data in files.items():
        if not st.keep(path, len(data), "t1"):
            st.write(path, [data], size=len(data), mtime_ns=1_700_000_000_000_000_000,
                     source_mtime="t1")
    try:
        return store.commit(st, meta or {"status": {"state": "COMPLETED"}})
    finally:
        store.close()


def test_manifest_holds_sha256_and_size_of_every_file(tmp_path):
    store = ArtifactStore(tmp_path / "a")
    files = {"output/model.mlir": b"module @main {}\n", "stdout.log": b"SUCCESS\n",
             "output/inputs/input_0.npy": os.urandom(5000)}
    got = put(store, "local-1", files)
    assert got.changed and got.files == 3 and got.bytes == sum(map(len, files.values()))
    m = json.loads((tmp_path / "a" / "local-1" / MANIFEST).read_text())
    assert m["kind"] == "warpforge-artifacts" and m["job_id"] == "local-1"
    listed = {f["path"]: f for f in m["files"]}
    assert set(listed) == set(files)
    for path, data in files.items():
        on_disk = (tmp_path / "a" / "local-1" / path).read_bytes()
        assert on_disk == data
        assert listed[path]["sha256"] == hashlib.sha256(on_disk).hexdigest()
        assert listed[path]["size"] == len(data)
    assert (tmp_path / "a" / "local-1").stat().st_mode & 0o777 == 0o700
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".wf-")]


def test_second_commit_of_the_same_files_writes_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    put(store, "local-1", {"output/a": b"x" * 100})
    before = (tmp_path / "local-1" / MANIFEST).stat()
    again = put(store, "local-1", {"output/a": b"x" * 100})
    assert not again.changed and again.transferred_bytes == 0 and again.transferred_files == 0
    after = (tmp_path / "local-1" / MANIFEST).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_a_changed_or_damaged_local_copy_is_fetched_again(tmp_path):
    store = ArtifactStore(tmp_path)
    put(store, "local-1", {"output/a": b"aaaa", "output/b": b"bbbb"})
    (tmp_path / "local-1" / "output" / "a").write_bytes(b"tampered")
    st = store.stage("local-1")
    assert set(st.have) == {"output/b"}  # a no longer matches what the manifest recorded
    store.discard(st)
    got = put(store, "local-1", {"output/a": b"aaaa", "output/b": b"bbbb"})
    assert got.changed and got.transferred_files == 1
    assert (tmp_path / "local-1" / "output" / "a").read_bytes() == b"aaaa"


def test_short_or_corrupt_stream_is_an_error_and_commits_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    put(store, "local-1", {"output/a": b"old"})
    st = store.stage("local-1")
    with pytest.raises(TransferError, match="2 bytes arrived, 10 announced"):
        st.write("output/b", [b"ab"], size=10, mtime_ns=0, source_mtime="t")
    with pytest.raises(TransferError, match="sha256"):
        st.write("output/c", [b"abc"], size=3, mtime_ns=0, source_mtime="t", sha256="0" * 64)
    store.discard(st)
    store.close()
    assert read_manifest(tmp_path / "local-1")["files"][0]["path"] == "output/a"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "local-1"]


def test_unsafe_paths_and_job_ids_are_refused(tmp_path):
    for bad in ("../x", "/etc/passwd", "output/../../x", "output//x", "", "a/./b"):
        with pytest.raises(TransferError):
            safe_relpath(bad)
    st = ArtifactStore(tmp_path).stage("local-1")
    with pytest.raises(TransferError):
        st.write("output/../../escape", [b"x"], size=1, mtime_ns=0, source_mtime="t")
    assert not (tmp_path.parent / "escape").exists()
    for bad in ("../x", "a/b", ".", "-rf", ""):
        with pytest.raises(UsageError):
            ArtifactStore(tmp_path).stage(bad)


@pytest.mark.parametrize(("link", "target", "leaves"), [
    ("a", "/etc/passwd", True), ("a", "../x", True), ("d/a", "../x", False),
    ("d/a", "../../x", True), ("a", "b", False), ("a", "d/../../x", True), ("a", "", True),
    ("d/a", "./b/../c", False)])
def test_link_leaves_judges_the_text_only(link, target, leaves):
    assert link_leaves(link, target) is leaves


def test_list_and_gc_keep_and_age(tmp_path):
    store = ArtifactStore(tmp_path)
    for i in range(4):
        put(store, f"local-{i}", {"output/a": b"x" * (i + 1)})
    old = tmp_path / "local-0" / MANIFEST
    m = json.loads(old.read_text())
    m["fetched_at"] = (datetime.now(UTC) - timedelta(days=10)).isoformat()
    old.write_text(json.dumps(m))
    rows = store.entries()
    assert [r["job_id"] for r in rows][-1] == "local-0" and len(rows) == 4
    assert rows[0]["files"] == 1 and rows[0]["state"] == "COMPLETED"
    gone = store.gc(older_than_days=5, dry_run=True)
    assert [g["job_id"] for g in gone] == ["local-0"] and (tmp_path / "local-0").exists()
    assert [g["job_id"] for g in store.gc(older_than_days=5)] == ["local-0"]
    assert not (tmp_path / "local-0").exists()
    assert len(store.gc(keep=1)) == 2
    assert [r["job_id"] for r in store.entries()] == [rows[0]["job_id"]]
    with pytest.raises(UsageError, match="--older-than"):
        store.gc()


def test_gc_never_touches_what_the_tool_did_not_make(tmp_path):
    store = ArtifactStore(tmp_path)
    put(store, "local-1", {"output/a": b"x"})
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    (tmp_path / "fake-1").mkdir()  # a manifest of another kind
    (tmp_path / "fake-1" / MANIFEST).write_text(json.dumps({"kind": "other", "job_id": "fake-1"}))
    (tmp_path / "wrong-1").mkdir()  # our kind, but naming another directory
    (tmp_path / "wrong-1" / MANIFEST).write_text(json.dumps(
        {"kind": "warpforge-artifacts", "job_id": "local-1", "fetched_at": "2000-01-01"}))
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    (tmp_path / "linked-1").symlink_to(tmp_path / "local-1")  # a link to one of ours
    (tmp_path / "out-1").symlink_to(outside)
    (tmp_path / "loose-file").write_text("x")
    stale = tmp_path / ".wf-staging-foreign"  # looks like ours by name, carries no mark
    stale.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    removed = store.gc(older_than_days=0)
    assert [r["job_id"] for r in removed] == ["local-1"]
    for kept in ("notes/mine.txt", "fake-1", "wrong-1", "loose-file", ".wf-staging-foreign"):
        assert (tmp_path / kept).exists(), kept
    assert (outside / "precious").exists() and (tmp_path / "out-1").is_symlink()


def test_gc_removes_stale_leftovers_of_interrupted_fetches_only(tmp_path):
    fresh = ArtifactStore(tmp_path).stage("local-1")  # a fetch in progress: kept
    stale = ArtifactStore(tmp_path).stage("local-2")  # one that died an hour ago
    os.utime(stale.dir.parent, (time.time() - 7200, time.time() - 7200))
    removed = ArtifactStore(tmp_path).gc(keep=100)
    assert [r["path"] for r in removed] == [str(stale.dir.parent)]
    assert fresh.dir.parent.exists() and not stale.dir.parent.exists()


def test_commit_refuses_to_replace_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "local-1").mkdir(parents=True)
    (tmp_path / "local-1" / "thesis.tex").write_text("mine")
    with pytest.raises(UsageError, match="not made by warpforge-launch"):
        put(ArtifactStore(tmp_path), "local-1", {"output/a": b"x"})
    assert (tmp_path / "local-1" / "thesis.tex").read_text() == "mine"


def test_cli_artifacts_list_gc_and_bad_input(tmp_path):
    put(ArtifactStore(tmp_path / "artifacts"), "local-7", {"output/a": b"xyz"})
    env = {"WARPFORGE_HOME": str(tmp_path)}
    listed = run_cli("artifacts", "list", "--json", env=env, check_json=True)
    assert listed.returncode == 0 and listed.json[0]["job_id"] == "local-7"
    assert listed.json[0]["bytes"] == 3
    r = run_cli("artifacts", "list", "--root", str(tmp_path / "artifacts"), env=env)
    assert r.returncode == 0 and "local-7" in r.stdout
    r = run_cli("artifacts", "gc", env=env)
    assert r.returncode == 2 and r.stderr.startswith("error: say what to remove")
    assert "Traceback" not in r.stderr
    r = run_cli("artifacts", "gc", "--keep", "0", "--dry-run", env=env)
    assert r.returncode == 0 and "would remove local-7" in r.stdout
    assert (tmp_path / "artifacts" / "local-7").exists()
    r = run_cli("artifacts", "gc", "--keep", "0", "--json", env=env, check_json=True)
    assert r.json["removed"][0]["job_id"] == "local-7"
    assert not (tmp_path / "artifacts" / "local-7").exists()
    r = run_cli("fetch", "../etc", env=env)
    assert r.returncode == 2 and "is not a job id" in r.stderr and "Traceback" not in r.stderr
