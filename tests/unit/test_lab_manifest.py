"""The dist manifest: what is hashed, what changes the release name, and bad dists."""

import hashlib
import os

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.lab import manifest as mf


def tree(root):
    (root / "bin").mkdir(parents=True)
    (root / "venv/lib").mkdir(parents=True)
    for name, body in (("bin/snakegrinder", "#!/bin/sh\n"), ("bin/snakegrinder-bin", "x")):
        (root / name).write_text(body)
        (root / name).chmod(0o755)
    (root / "venv/lib/a.py").write_text("a = 1\n")
    os.symlink("a.py", root / "venv/lib/link.py")
    return root


def test_scan_records_files_dirs_and_symlinks(tmp_path):
    m = mf.scan(tree(tmp_path / "d"))
    by = m.by_path()
    assert by["bin/snakegrinder"].kind == "f" and by["bin/snakegrinder"].mode == 0o755
    assert by["venv/lib"].kind == "d"
    assert by["venv/lib/link.py"].kind == "l" and by["venv/lib/link.py"].target == "a.py"
    assert by["venv/lib/a.py"].sha256 == hashlib.sha256(b"a = 1\n").hexdigest()
    assert m.total_bytes == len("#!/bin/sh\n") + 1 + len("a = 1\n")


def test_release_hash_follows_content_mode_and_links_only(tmp_path):
    d = tree(tmp_path / "d")
    h = mf.scan(d).hash
    assert mf.scan(d).hash == h  # stable
    os.utime(d / "venv/lib/a.py", (1, 1))
    assert mf.scan(d).hash == h  # a touch is not a change
    (d / "venv/lib/a.py").write_text("a = 2\n")
    h2 = mf.scan(d).hash
    assert h2 != h
    (d / "venv/lib/a.py").chmod(0o600)
    assert mf.scan(d).hash != h2
    os.remove(d / "venv/lib/link.py")
    os.symlink("elsewhere.py", d / "venv/lib/link.py")
    assert mf.scan(d).hash not in (h, h2)


def test_hash_cache_skips_rereading_unchanged_files(tmp_path, monkeypatch):
    d = tree(tmp_path / "d")
    cache = tmp_path / "cache.json"
    first = mf.scan(d, cache=cache)
    calls = []
    monkeypatch.setattr(mf, "_sha256", lambda p: calls.append(p) or "0" * 64)
    assert mf.scan(d, cache=cache) == first and calls == []
    (d / "venv/lib/a.py").write_text("changed\n")
    mf.scan(d, cache=cache)
    assert [os.path.basename(p) for p in calls] == ["a.py"]


def test_manifest_round_trips_and_lists_checksums(tmp_path):
    m = mf.scan(tree(tmp_path / "d"))
    again = mf.Manifest.from_json(m.to_json(source="x"))
    assert again == m and again.hash == m.hash
    sums = m.sha256sums()
    assert sums.count("\n") == 3 and "  ./venv/lib/a.py\n" in sums


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "bin/snakegrinder-bin").unlink(), "has no bin/snakegrinder-bin"),
    (lambda d: (d / "bin/snakegrinder").chmod(0o644), "bin/snakegrinder is not executable"),
    (lambda d: __import__("shutil").rmtree(d / "venv"), "has no venv/"),
])
def test_check_dist_says_what_is_missing(tmp_path, breakage, message):
    d = tree(tmp_path / "d")
    mf.check_dist(d)
    breakage(d)
    with pytest.raises(UsageError, match=message) as err:
        mf.check_dist(d)
    assert "DIST_DIR_OVERRIDE" in err.value.hint


def test_check_dist_refuses_a_missing_directory(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        mf.check_dist(tmp_path / "nothing")


def test_odd_file_names_are_refused(tmp_path):
    d = tree(tmp_path / "d")
    (d / "venv/lib/bad\nname").write_text("x")
    with pytest.raises(UsageError, match="unsupported file name"):
        mf.scan(d)


def test_summary_is_the_scans_hash_and_listing_and_follows_every_change(tmp_path):
    d = tree(tmp_path / "d")
    cache = tmp_path / "cache.json"
    first = mf.summary(d, cache=cache)
    assert isinstance(first, mf.Manifest)  # nothing recorded yet: a full scan
    again = mf.summary(d, cache=cache)
    assert isinstance(again, mf.Summary) and (again.hash, again.listing) == (
        first.hash, first.listing)
    st = os.stat(d / "venv/lib/a.py")
    (d / "venv/lib/a.py").write_text("a = 9\n")  # same size, its times put back
    os.utime(d / "venv/lib/a.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = mf.summary(d, cache=cache)
    assert changed.hash == mf.scan(d).hash != first.hash
    os.remove(d / "venv/lib/link.py")
    os.symlink("elsewhere.py", d / "venv/lib/link.py")
    assert mf.summary(d, cache=cache).hash == mf.scan(d).hash != changed.hash
