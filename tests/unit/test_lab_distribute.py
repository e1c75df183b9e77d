"""The pure parts of distribute: reading a box's state, what to link, what to prune."""

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.lab import distribute as d
from warpforge_launch.lab.manifest import Entry, Manifest


def manifest(**files):
    return Manifest(tuple(Entry(p, "f", 0o644, len(body), str(hash(body)) * 1)
                          for p, body in sorted(files.items())))


def test_parse_state_reads_the_probe_report():
    m = manifest(a="1", b="22")
    text = "\n".join([
        "current releases/abc", "release abc", "release old1", "release .partial-x-1",
        "release not ours; rm -rf", "release with space",
        "history 2026-01-01T00:00:00Z old1", "history 2026-01-02T00:00:00Z abc",
        "python3 yes", "holder 4242", "manifest " + m.to_json(), "size 1 a", "size 2 b",
        "size 3 dir with space/c"])
    s = d.parse_state(text)
    assert s.current == "abc" and s.releases == ["abc", "old1"]
    assert s.partials == [".partial-x-1"] and s.history == ["old1", "abc"]
    assert s.python3 and s.holder == "4242" and s.manifest == m
    assert s.sizes == {"a": 1, "b": 2, "dir with space/c": 3}


def test_a_damaged_release_record_means_unknown_content():
    s = d.parse_state("current releases/abc\nmanifest {not json")
    assert s.current == "abc" and s.manifest is None


def test_intact_compares_sizes_of_every_file():
    m = manifest(a="1", b="22")
    s = d.BoxState(sizes={"a": 1, "b": 2, ".warpforge-release.json": 99})
    assert d.intact(s, m)
    assert not d.intact(d.BoxState(sizes={"a": 1}), m)
    assert not d.intact(d.BoxState(sizes={"a": 1, "b": 3}), m)
    assert not d.intact(d.BoxState(sizes={"a": 1, "b": 2, "extra": 0}), m)


def test_split_links_only_identical_files_the_box_still_has():
    old = manifest(a="1", b="22", c="333")
    new = manifest(a="1", b="xx", c="333", n="new")
    state = d.BoxState(manifest=old, sizes={"a": 1, "b": 2, "c": 0})  # c was truncated
    link, send = d._split(new, state)
    assert [e.path for e in link] == ["a"]
    assert [e.path for e in send] == ["b", "c", "n"]
    assert d._split(new, None) == ([], new.files)


def test_prune_keeps_the_newest_current_releases():
    s = d.BoxState(current="r3", releases=["r1", "r2", "r3", "stray"],
                   partials=[".partial-x"], history=["r1", "r2", "r3"])
    assert d.plan_prune(s, "r4", keep=3) == ["r1", "stray", ".partial-x"]
    assert d.plan_prune(s, "r4", keep=2) == ["r2", "r1", "stray", ".partial-x"]
    # after a rollback to r1, r1 is newest-current and r3 (just left) is kept
    back = d.BoxState(current="r1", releases=["r1", "r2", "r3"], history=["r2", "r3", "r1"])
    assert d.plan_prune(back, "r1", keep=2) == ["r2"]


def test_rollback_target_is_the_previous_distinct_release():
    s = d.BoxState(current="b", releases=["a", "b"], history=["a", "b"])
    assert d._rollback_target("x", s, None) == "a"
    s = d.BoxState(current="a", releases=["a", "b"], history=["a", "b", "a"])
    assert d._rollback_target("x", s, None) == "b"
    assert d._rollback_target("x", s, "b") == "b"
    with pytest.raises(UsageError, match="no earlier release"):
        d._rollback_target("x", d.BoxState(current="a", releases=["a"], history=["a"]), None)
    with pytest.raises(UsageError, match="matches 2 releases"):
        d._rollback_target("x", d.BoxState(releases=["ab1", "ab2"]), "ab")


def test_exit_code_prefers_bad_input_then_work_then_unreachable():
    ok = d.BoxResult("a", action="pushed")
    bad = d.BoxResult("b", error="x", exit_code=2)
    work = d.BoxResult("c", error="x", exit_code=1)
    down = d.BoxResult("d", error="x", exit_code=3)
    assert d.exit_code([ok]) == 0
    assert d.exit_code([ok, down]) == 3
    assert d.exit_code([down, work]) == 1
    assert d.exit_code([down, work, bad]) == 2


@pytest.mark.parametrize("kw, message", [({"keep": 1}, "keep"), ({"parallel": 0}, "parallel")])
def test_options_refuse_nonsense(kw, message):
    with pytest.raises(UsageError, match=message):
        d.Options(**kw)


def test_install_dir_must_be_absolute():
    class B:
        name = "b"
        install_dir = "relative/dir"

    with pytest.raises(UsageError, match="absolute"):
        d._install_dir(B())
    B.install_dir = "/"
    with pytest.raises(UsageError):
        d._install_dir(B())
    B.install_dir = "/opt/warpforge/"
    assert d._install_dir(B()) == "/opt/warpforge"
