"""The pure parts of a push: reading a box's state, and deciding what to send, link, verify
and prune (no box involved)."""

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.lab import boxstate, pushplan, releases
from warpforge_launch.lab.boxstate import BoxState, parse_state
from warpforge_launch.lab.manifest import Entry, Manifest


def manifest(**files):
    return Manifest(tuple(Entry(p, "f", 0o644, len(body), f"{hash(body):x}")
                          for p, body in sorted(files.items())))


def on_box(m, *, name=None, changed=(), **kw):
    """A box whose current release is m's tree, intact and verified (unless told)."""
    name = name or m.hash
    kw.setdefault("releases", [name])
    kw.setdefault("history", [name])
    return BoxState(current=name, listing=m.listing, manifest=m,
                    changed=None if changed is None else list(changed),
                    sizes={e.path: e.size for e in m.files}, holder="1", **kw)


def test_parse_state_reads_the_probe_report():
    text = "\n".join([
        "current releases/abc", "bin ours", "release abc", "release old1",
        "partial .partial-x-1", "swept .partial-y-2", "foreign not ours; rm -rf",
        "foreign stray", "release with space",
        "history 2026-01-01T00:00:00Z old1", "history 2026-01-02T00:00:00Z abc",
        "python3 yes", "holder 4242", "changed venv/a.py", "listing ff"])
    s = parse_state(text)
    assert s.current == "abc" and s.releases == ["abc", "old1"]
    assert s.partials == [".partial-x-1"] and s.swept == [".partial-y-2"]
    assert s.foreign == ["not ours; rm -rf", "stray", "with space"]
    assert s.history == ["old1", "abc"] and s.python3 and s.holder == "4242"
    assert s.changed == ["venv/a.py"] and s.listing == "ff" and not s.bin_foreign


def test_parse_state_marks_what_the_tool_did_not_make():
    s = parse_state("current releases/x\nforeign x\nbin foreign")
    assert s.current is None and s.current_foreign and s.bin_foreign
    assert parse_state("current /elsewhere").current_foreign
    assert parse_state("current-foreign").current_foreign
    dangling = parse_state("current releases/gone")  # our link, its target gone: replaceable
    assert dangling.current is None and not dangling.current_foreign
    assert parse_state("current releases/a\nrelease a\nunverified").changed is None


@pytest.mark.parametrize("path", ["/", "//", "/.", "/opt/..", "/opt", "/usr", "/usr/", "/etc",
                                  "/usr/local", "///usr//./local/", "/home", "/var/lib/.."])
def test_install_dir_refuses_root_and_system_trees(path):
    with pytest.raises(UsageError, match="system directory"):
        boxstate.check_install_dir("b", path)


def test_install_dir_must_be_absolute_and_is_normalised():
    with pytest.raises(UsageError, match="absolute"):
        boxstate.check_install_dir("b", "relative/dir")
    with pytest.raises(UsageError, match="absolute"):
        boxstate.check_install_dir("b", "")
    assert boxstate.check_install_dir("b", "/opt/warpforge/") == "/opt/warpforge"
    assert boxstate.check_install_dir("b", "//opt//x/../warpforge") == "/opt/warpforge"


def test_a_current_verified_release_is_left_alone():
    m = manifest(a="1", b="22")
    d = pushplan.decide(on_box(m), m, keep=3, suffix="s")
    assert d.action == pushplan.UNCHANGED and d.release == m.hash and not d.send
    check = pushplan.decide(on_box(m), m, keep=3, suffix="s", check_current=True)
    assert check.action == pushplan.CHECK and {e.path for e in check.verify} == {"a", "b"}


def test_a_same_size_change_since_verification_is_resent_and_the_rest_verified():
    m = manifest(a="1", b="22", c="333")
    state = on_box(m, changed=["b"])  # same size, so the listing still matches
    d = pushplan.decide(state, m, keep=3, suffix="s1")
    assert d.action == pushplan.PUSH and d.release == f"{m.hash}.s1"
    assert [e.path for e in d.send] == ["b"] and [e.path for e in d.link] == ["a", "c"]
    assert {e.path for e in d.verify} == {"a", "b", "c"}  # the source is suspect
    assert m.hash in d.prune  # the damaged copy of the same tree goes


def test_a_truncated_file_is_resent_even_when_nothing_reports_it_changed():
    m = manifest(a="1", b="22")
    state = on_box(m)
    state.sizes["b"] = 0
    state.listing = "other"
    d = pushplan.decide(state, m, keep=3, suffix="s")
    assert [e.path for e in d.send] == ["b"] and {e.path for e in d.verify} == {"a", "b"}


def test_a_new_tree_links_identical_files_and_verifies_only_what_it_sends():
    old = manifest(a="1", b="22", c="333")
    new = manifest(a="1", b="xx", c="333", n="new")
    d = pushplan.decide(on_box(old), new, keep=3, suffix="s")
    assert d.action == pushplan.PUSH and d.release == new.hash and d.link_from == old.hash
    assert [e.path for e in d.link] == ["a", "c"]
    assert [e.path for e in d.send] == ["b", "n"] == [e.path for e in d.verify]
    full = pushplan.decide(on_box(old), new, keep=3, suffix="s", verify_all=True)
    assert {e.path for e in full.verify} == {"a", "b", "c", "n"}


def test_linked_files_are_verified_when_the_source_was_never_verified():
    old = manifest(a="1", b="22")
    new = manifest(a="1", b="xx")
    d = pushplan.decide(on_box(old, changed=None), new, keep=3, suffix="s")
    assert [e.path for e in d.link] == ["a"] and {e.path for e in d.verify} == {"a", "b"}


def test_a_bad_source_is_never_linked_from_and_is_pruned():
    old = manifest(a="1", b="22")
    new = manifest(a="1", b="xx")
    d = pushplan.decide(on_box(old), new, keep=3, suffix="s", bad={old.hash})
    assert not d.link and d.link_from is None and len(d.send) == 2
    assert old.hash in d.prune


def test_reactivation_prefers_an_earlier_release_and_skips_bad_ones():
    m = manifest(a="1")
    other = manifest(a="2")
    state = on_box(other, releases=[m.hash, other.hash], history=[m.hash, other.hash])
    d = pushplan.decide(state, m, keep=3, suffix="s")
    assert d.action == pushplan.REACTIVATE and d.release == m.hash
    again = pushplan.decide(state, m, keep=3, suffix="s", bad={m.hash})
    assert again.action == pushplan.PUSH and again.release == f"{m.hash}.s"
    assert m.hash in again.prune and not again.link  # nothing identical to link


def test_a_foreign_directory_with_the_release_name_is_never_reused():
    m = manifest(a="1")
    d = pushplan.decide(BoxState(foreign=[m.hash]), m, keep=3, suffix="s")
    assert d.release == f"{m.hash}.s" and m.hash not in d.prune


def test_damage_found_by_a_full_check_is_resent():
    m = manifest(a="1", b="22")
    d = pushplan.decide(on_box(m), m, keep=3, suffix="s", check_current=True, damaged=["a"])
    assert d.action == pushplan.PUSH and [e.path for e in d.send] == ["a"]
    assert {e.path for e in d.verify} == {"a", "b"}


def test_foreign_current_or_bin_is_refused():
    with pytest.raises(UsageError, match="bin exists and was not made by warpforge"):
        pushplan.refuse_foreign("b", "/opt/x", BoxState(bin_foreign=True))
    with pytest.raises(UsageError, match="current exists"):
        pushplan.refuse_foreign("b", "/opt/x", BoxState(current_foreign=True))
    pushplan.refuse_foreign("b", "/opt/x", BoxState())


def test_prune_keeps_the_newest_current_releases_and_never_foreign_ones():
    s = BoxState(current="r3", releases=["r1", "r2", "r3"], foreign=["stray"],
                 history=["r1", "r2", "r3"])
    assert pushplan.plan_prune(s, "r4", keep=3) == ["r1"]
    assert pushplan.plan_prune(s, "r4", keep=2) == ["r2", "r1"]
    back = BoxState(current="r1", releases=["r1", "r2", "r3"], history=["r2", "r3", "r1"])
    assert pushplan.plan_prune(back, "r1", keep=2) == ["r2"]
    assert pushplan.plan_prune(s, "r4", keep=3, bad={"r3"}) == ["r3"]


def test_rollback_target_is_the_previous_distinct_release():
    s = BoxState(current="b", releases=["a", "b"], history=["a", "b"])
    assert pushplan.rollback_target("x", s, None) == "a"
    s = BoxState(current="a", releases=["a", "b"], history=["a", "b", "a"])
    assert pushplan.rollback_target("x", s, None) == "b"
    assert pushplan.rollback_target("x", s, "b") == "b"
    with pytest.raises(UsageError, match="no earlier release"):
        pushplan.rollback_target("x", BoxState(current="a", releases=["a"], history=["a"]),
                                 None)
    with pytest.raises(UsageError, match="matches 2 releases"):
        pushplan.rollback_target("x", BoxState(releases=["ab1", "ab2"]), "ab")


def test_verifier_failures_are_read_from_both_verifiers():
    from warpforge_launch.lab.boxscripts import failed_paths, stamps

    text = ("./venv/a b.py: FAILED checksum\n./bin/x: FAILED\n"
            "./gone: FAILED open or read\nsha256sum: WARNING: 1 computed checksum did NOT match")
    assert failed_paths(text) == ["venv/a b.py", "bin/x", "gone"]
    assert stamps("stamp received 2000000000\nswitched r\nstamp x y") == {"received": 2.0}


def test_exit_code_prefers_bad_input_then_work_then_unreachable():
    ok = releases.BoxResult("a", action="pushed")
    bad = releases.BoxResult("b", error="x", exit_code=2)
    work = releases.BoxResult("c", error="x", exit_code=1)
    down = releases.BoxResult("d", error="x", exit_code=3)
    assert releases.exit_code([ok]) == 0
    assert releases.exit_code([ok, down]) == 3
    assert releases.exit_code([down, work]) == 1
    assert releases.exit_code([down, work, bad]) == 2


@pytest.mark.parametrize("kw, message", [({"keep": 1}, "keep"), ({"parallel": 0}, "parallel")])
def test_options_refuse_nonsense(kw, message):
    with pytest.raises(UsageError, match=message):
        releases.Options(**kw)
