"""The parsed inventory is reused while its file and this package are unchanged."""

import os
import stat

import pytest

from warpforge_launch import inventory, inventorycache
from warpforge_launch.errors import UsageError

DOC = """\
schedulers:
  local: {type: local}
boxes:
  nvidia: {address: 127.0.0.21, port: 2221, install_dir: /opt/wf-x}
"""


@pytest.fixture
def inv_file(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text(DOC)
    return path


@pytest.fixture
def parses(monkeypatch):
    """How often the inventory was parsed (the real parse runs)."""
    calls = []
    real = inventory.parse
    monkeypatch.setattr(inventory, "parse", lambda *a: calls.append(a[1]) or real(*a))
    return calls


def test_a_repeat_load_is_not_parsed_again(inv_file, parses):
    first = inventory.load(str(inv_file))
    again = inventory.load(str(inv_file))
    assert again == first and len(parses) == 1
    cached = inventorycache._file(str(inv_file))
    assert stat.S_IMODE(os.stat(cached).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(cached)).st_mode) == 0o700


def test_an_edit_is_parsed(inv_file, parses):
    inventory.load(str(inv_file))
    inv_file.write_text(DOC.replace("127.0.0.21", "127.0.0.22"))
    assert inventory.load(str(inv_file)).boxes["nvidia"].address == "127.0.0.22"
    inv_file.write_text(DOC.replace("port: 2221", "port: 99999"))
    with pytest.raises(UsageError, match="invalid"):
        inventory.load(str(inv_file))
    assert len(parses) == 3


def test_overrides_apply_to_the_cached_inventory(inv_file, monkeypatch):
    inventory.load(str(inv_file))
    monkeypatch.setenv("NVIDIA_HOST_OVERRIDE", "127.0.0.9")
    assert inventory.load(str(inv_file)).boxes["nvidia"].address == "127.0.0.9"
    monkeypatch.delenv("NVIDIA_HOST_OVERRIDE")
    assert inventory.load(str(inv_file)).boxes["nvidia"].address == "127.0.0.21"


def test_a_damaged_cache_is_parsed_again(inv_file, parses):
    first = inventory.load(str(inv_file))
    with open(inventorycache._file(str(inv_file)), "wb") as f:
        f.write(b"\x80\x04not a pickle")
    assert inventory.load(str(inv_file)) == first and len(parses) == 2


def test_a_credential_is_never_written(tmp_path, parses):
    path = tmp_path / "ray.yaml"
    path.write_text("schedulers:\n  r:\n    type: ray\n    auth_header: 'X-Token: s3cr3t'\n")
    inventory.load(str(path))
    inventory.load(str(path))
    assert len(parses) == 2 and not os.path.exists(inventorycache._file(str(path)))


def test_a_cache_others_can_write_is_not_read(inv_file, parses):
    inventory.load(str(inv_file))
    cached = inventorycache._file(str(inv_file))
    os.chmod(cached, 0o666)
    inventory.load(str(inv_file))
    assert len(parses) == 2
    os.chmod(cached, 0o600)
    os.chmod(os.path.dirname(cached), 0o777)
    inventory.load(str(inv_file))
    assert len(parses) == 3


def test_cache_files_of_a_kind_are_capped_at_the_newest(tmp_path):
    """Every inventory path (and every distribute command) leaves a cache file: only the
    newest CACHE_KEEP of a kind stay, and nothing of another shape is touched."""
    import os

    from warpforge_launch.storefile import write_cache

    cache = tmp_path / "cache"
    others = [cache / "notes.txt", cache / "inventory-XYZ.pickle", cache / "distribute-"
              "0123456789abcdef.json"]
    cache.mkdir(mode=0o700)
    for p in others:
        p.write_text("not ours to prune")
    for n in range(7):
        path = cache / f"inventory-{n:016x}.pickle"
        write_cache(str(path), b"x" * n, keep=3)
        os.utime(path, ns=(n * 10**9, n * 10**9))  # written in order, whatever the clock
    kept = sorted(p.name for p in cache.glob("inventory-*.pickle") if p.name[10] == "0")
    assert kept == [f"inventory-{n:016x}.pickle" for n in (4, 5, 6)]
    assert all(p.read_text() == "not ours to prune" for p in others)
    assert oct((cache / f"inventory-{6:016x}.pickle").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError):
        write_cache(str(cache / "../jobs.sqlite3"), b"")
