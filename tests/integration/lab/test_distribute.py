"""Distribution to real sshd boxes: atomic releases, incremental, rollback, per-box lock."""

import json
import os
import subprocess
import threading
from dataclasses import replace

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.lab import commands, releases
from warpforge_launch.lab.manifest import Manifest, scan

pytestmark = pytest.mark.ssh


def current(ssh_lab, name, install_dir) -> str:
    return os.readlink(ssh_lab.landed(name, f"{install_dir}/current"))


def runs(ssh_lab, name, install_dir) -> subprocess.CompletedProcess:
    return ssh_lab.ssh(name, f"{install_dir}/bin/snakegrinder", "--trace-example", "--out",
                       f"/tmp/wf-out-{name}", check=False)


def test_full_tree_lands_and_runs_on_every_box(ssh_lab, box, install_dir, fake_dist):
    results = releases.distribute([box("nvidia"), box("amd")], fake_dist)
    m = scan(fake_dist)
    for r, name in zip(results, ("nvidia", "amd"), strict=True):
        assert r.ok and r.action == "pushed", r.error
        assert r.release == m.hash and r.files_sent == len(m.files)
        assert current(ssh_lab, name, install_dir) == f"releases/{m.hash}"
        landed = ssh_lab.landed(name, f"{install_dir}/releases/{m.hash}")
        for e in m.files:  # launcher, program and the whole bundled venv, byte for byte
            assert (landed / e.path).read_bytes() == (fake_dist / e.path).read_bytes(), e.path
            assert (landed / e.path).stat().st_mode & 0o777 == e.mode
        assert os.readlink(landed / "venv/bin/python3") == "/usr/bin/python3"
        p = runs(ssh_lab, name, install_dir)
        assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stderr
    amd_file = ssh_lab.landed("amd", f"{install_dir}/releases/{m.hash}/bin/snakegrinder")
    assert amd_file.stat().st_uid != 0  # amd logs in as forge: files belong to it


def test_unchanged_repush_transfers_nothing(ssh_lab, box, install_dir, fake_dist):
    b = box("nvidia")
    [first] = releases.distribute([b], fake_dist)
    rels = ssh_lab.landed("nvidia", f"{install_dir}/releases")
    before = {p.name: p.stat().st_mtime_ns for p in rels.rglob("*")}
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "unchanged"
    assert (again.files_sent, again.bytes_sent) == (0, 0)
    assert again.release == first.release
    assert {p.name: p.stat().st_mtime_ns for p in rels.rglob("*")} == before


def test_changed_file_only_is_sent_the_rest_is_linked(ssh_lab, box, install_dir,
                                                      make_fake_dist):
    dist = make_fake_dist()
    b = box("nvidia")
    [v1] = releases.distribute([b], dist)
    (dist / "venv/lib/python3.12/site-packages/torch/__init__.py").write_text("v = 2\n")
    [v2] = releases.distribute([b], dist)
    assert v2.ok and v2.action == "pushed" and v2.release != v1.release
    assert v2.files_sent == 1 and v2.files_linked == len(scan(dist).files) - 1
    rel = ssh_lab.landed("nvidia", f"{install_dir}/releases")
    same = "venv/lib/python3.12/site-packages/torch/lib/libtorch_part0.so"
    assert (rel / v1.release / same).stat().st_ino == (rel / v2.release / same).stat().st_ino
    assert runs(ssh_lab, "nvidia", install_dir).returncode == 0


class KillConnectionAfter(releases.Progress):
    """Progress hook that kills the box's SSH connections once `limit` bytes went out."""

    def __init__(self, ssh_lab, name, limit):
        self.lab, self.name, self.limit, self.sent, self.killed = ssh_lab, name, limit, 0, False

    def advance(self, box, n):
        self.sent += n
        if self.sent >= self.limit and not self.killed:
            self.killed = self.lab.kill_connections(self.name) > 0


@pytest.mark.parametrize("local_tar", [True, False], ids=["gnu-tar", "python-tar"])
def test_interrupted_push_leaves_the_old_release_working(ssh_lab, box, install_dir,
                                                         make_fake_dist, local_tar):
    b = box("amd")
    v1 = make_fake_dist()
    [r1] = releases.distribute([b], v1)
    # big enough that the cut lands mid-stream (GNU tar's progress is polled every 0.1 s)
    v2 = make_fake_dist(size_mb=80, seed=7)
    hook = KillConnectionAfter(ssh_lab, "amd", 4 * 1024 * 1024)
    [cut] = releases.distribute([b], v2, progress=hook,
                                opts=releases.Options(local_tar=local_tar))
    assert hook.killed and not cut.ok
    assert cut.exit_code == 3 and "amd" in cut.error, cut.error
    assert current(ssh_lab, "amd", install_dir) == f"releases/{r1.release}"
    p = runs(ssh_lab, "amd", install_dir)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stderr
    rels = ssh_lab.landed("amd", f"{install_dir}/releases")
    assert any(p.name.startswith(".partial-") for p in rels.iterdir())
    # the cut killed the box's side too (no chance to clean up): the next push, holding the
    # lock, sweeps the partial whose holder is gone
    [r2] = releases.distribute([b], v2)
    assert r2.ok and r2.action == "pushed"
    assert any("removed a stale partial upload" in n for n in r2.notes), r2.notes
    assert current(ssh_lab, "amd", install_dir) == f"releases/{r2.release}"
    assert not any(p.name.startswith(".partial-") for p in rels.iterdir())


def test_rollback_switches_back_and_forth(ssh_lab, box, install_dir, make_fake_dist,
                                          write_inventory, capsys):
    b = box("nvidia")
    [r1] = releases.distribute([b], make_fake_dist())
    [r2] = releases.distribute([b], make_fake_dist(seed=5))
    inv = write_inventory(names=["nvidia"])
    assert commands.rollback(boxes="nvidia", inventory=str(inv)) == 0
    assert "rolled-back" in capsys.readouterr().out
    assert current(ssh_lab, "nvidia", install_dir) == f"releases/{r1.release}"
    assert runs(ssh_lab, "nvidia", install_dir).returncode == 0
    [back] = releases.rollback([b], to=r2.release[:6])
    assert back.ok and back.release == r2.release and back.previous == r1.release
    [again] = releases.distribute([b], make_fake_dist())  # r1's tree: switched, not re-sent
    assert again.action == "reactivated" and again.bytes_sent == 0


def test_rollback_without_an_earlier_release_is_bad_input(box, fake_dist):
    b = box("nvidia")
    [first] = releases.rollback([b])  # nothing there at all
    assert not first.ok and first.exit_code == 2 and "no earlier release" in first.error
    releases.distribute([b], fake_dist)
    [r] = releases.rollback([b], to="ffff")
    assert not r.ok and "matches 0 releases" in r.error


def test_only_the_last_releases_are_kept(ssh_lab, box, install_dir, make_fake_dist):
    b = box("nvidia")
    opts = releases.Options(keep=2)
    pushed = [releases.distribute([b], make_fake_dist(seed=s), opts=opts)[0] for s in (1, 2, 3)]
    names = sorted(p.name for p in ssh_lab.landed("nvidia", f"{install_dir}/releases").iterdir()
                   if not p.name.startswith("."))
    assert names == sorted([pushed[1].release, pushed[2].release])
    with pytest.raises(UsageError, match="at least 2"):
        releases.Options(keep=1)


def test_concurrent_runs_on_one_box_serialize(box, make_fake_dist):
    b = box("nvidia")
    dists = [make_fake_dist(seed=11, size_mb=6), make_fake_dist(seed=12, size_mb=6)]
    start = threading.Barrier(2)
    results = [None, None]

    def run(i):
        start.wait()
        [results[i]] = releases.distribute([b], dists[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r.ok and r.action == "pushed" for r in results), results
    (a0, a1), (b0, b1) = sorted(r.locked for r in results)
    assert a1 <= b0, "the two pushes held the box at the same time"
    later = max(results, key=lambda r: r.locked[0])
    assert later.previous == min(results, key=lambda r: r.locked[0]).release


def test_a_busy_box_lock_times_out_with_a_clear_error(ssh_lab, box, install_dir, fake_dist):
    ssh_lab.ssh("nvidia", "mkdir", "-p", install_dir)
    holder = subprocess.Popen(
        ["ssh", "-F", str(ssh_lab.ssh_config), "nvidia",
         f"flock {install_dir}/.lock sh -c 'echo held; exec cat'"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        [r] = releases.distribute([box("nvidia")], fake_dist,
                                  opts=releases.Options(lock_wait=1))
        assert not r.ok and r.exit_code == 3 and "holds the box's lock" in r.error
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    [r] = releases.distribute([box("nvidia")], fake_dist, opts=releases.Options(lock_wait=5))
    assert r.ok


def test_paramiko_stream_works_without_the_openssh_client(ssh_lab, box, install_dir,
                                                          fake_dist):
    [r] = releases.distribute([box("amd")], fake_dist, opts=releases.Options(bulk="paramiko"))
    assert r.ok and r.action == "pushed", r.error
    assert runs(ssh_lab, "amd", install_dir).returncode == 0


def test_local_transport_runs_the_same_pipeline(tmp_path, box, fake_dist):
    target = tmp_path / "local-box"
    b = box("nvidia", transport="local", install_dir=str(target))
    [r] = releases.distribute([b], fake_dist)
    assert r.ok and r.action == "pushed", r.error
    p = subprocess.run([str(target / "bin/snakegrinder"), "--trace-example", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and (tmp_path / "out/model.mlir").stat().st_size > 100
    [again] = releases.distribute([b], fake_dist)
    assert again.action == "unchanged"


def test_bad_input_is_refused_before_anything_is_sent(box, tmp_path, fake_dist,
                                                      write_inventory, capsys):
    [r] = releases.distribute([box("nvidia", install_dir="opt/relative")], fake_dist)
    assert not r.ok and r.exit_code == 2 and "absolute" in r.error
    broken = tmp_path / "broken"
    (broken / "bin").mkdir(parents=True)
    (broken / "bin/snakegrinder").write_text("#!/bin/sh\n")
    (broken / "bin/snakegrinder").chmod(0o755)
    inv = write_inventory(names=["nvidia"])
    assert commands.distribute(inventory=str(inv), dist=str(broken)) == 2
    err = capsys.readouterr().err
    assert "has no bin/snakegrinder-bin" in err and "hint:" in err
    assert commands.distribute(inventory=str(inv), boxes="nope", dist=str(fake_dist)) == 2


def test_boxes_are_selected_by_name_alias_or_group(write_inventory, fake_dist, capsys):
    inv = write_inventory()  # nvidia, amd (gpu-boxes) and intel (asleep, no GPU)
    assert commands.distribute(inventory=str(inv), boxes="gpu-boxes", dist=str(fake_dist),
                               as_json=True) == 0
    assert [r["box"] for r in json.loads(capsys.readouterr().out)] == ["nvidia", "amd"]
    assert commands.distribute(inventory=str(inv), boxes="mark1amd", dist=str(fake_dist),
                               as_json=True) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["box"] == "amd" and row["action"] == "unchanged"


def test_bytes_that_do_not_match_the_manifest_block_the_switch(ssh_lab, box, install_dir,
                                                               make_fake_dist):
    b = box("nvidia")
    [r1] = releases.distribute([b], make_fake_dist())
    dist2 = make_fake_dist(seed=9)
    m = scan(dist2)
    # the dist changed between scan and send: the box must notice before switching
    victim = next(e for e in m.files if e.path.endswith("libtorch_part1.so"))
    forged = Manifest(tuple(replace(e, sha256="0" * 64) if e is victim else e
                            for e in m.entries))
    [r] = releases.distribute([b], dist2, manifest=forged)
    assert not r.ok and r.exit_code == 1
    assert f"{victim.path}: FAILED checksum" in r.error
    assert current(ssh_lab, "nvidia", install_dir) == f"releases/{r1.release}"
    # a failed push removes its own staging tree on the way out
    rels = ssh_lab.landed("nvidia", f"{install_dir}/releases")
    assert not [p.name for p in rels.iterdir() if p.name.startswith(".partial-")]
    assert runs(ssh_lab, "nvidia", install_dir).returncode == 0


def test_early_stream_connection_is_let_go_when_nothing_needs_sending(
        ssh_lab, box, install_dir, fake_dist, tmp_path, monkeypatch):
    b = box("amd")
    [first] = releases.distribute([b], fake_dist)
    # another machine (no record of this box) pushes the same tree: it opens the stream
    # connection early, finds the box current, and lets that connection go unused
    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "other-machine"))
    started = []
    real = releases.prestart
    monkeypatch.setattr(releases, "prestart",
                        lambda *a: started.append(real(*a)) or started[-1])
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "unchanged" and again.bytes_sent == 0
    assert len(started) == 1 and started[0].proc.returncode == 0  # ended cleanly, unused
    rels = ssh_lab.landed("amd", f"{install_dir}/releases")
    assert sorted(p.name for p in rels.iterdir()) == [".history", first.release]
    [third] = releases.distribute([b], fake_dist)  # now this machine knows: no early stream
    assert third.action == "unchanged" and len(started) == 1


def test_a_damaged_current_release_is_repaired_beside_it(ssh_lab, box, install_dir, fake_dist):
    b = box("nvidia")
    [first] = releases.distribute([b], fake_dist)
    victim = "venv/lib/python3.12/site-packages/pkg03/mod0003.py"
    ssh_lab.ssh("nvidia", "truncate", "-s", "0", f"{install_dir}/current/{victim}")
    [fixed] = releases.distribute([b], fake_dist)
    assert fixed.ok and fixed.action == "repaired" and fixed.files_sent == 1
    assert fixed.release.startswith(first.release + ".")  # same tree, new directory
    assert current(ssh_lab, "nvidia", install_dir) == f"releases/{fixed.release}"
    landed = ssh_lab.landed("nvidia", f"{install_dir}/releases/{fixed.release}/{victim}")
    assert landed.read_bytes() == (fake_dist / victim).read_bytes()
    [again] = releases.distribute([b], fake_dist)
    assert again.action == "unchanged"


# ---- a release is what it claims to be ---------------------------------------------------------
VICTIM = "venv/lib/python3.12/site-packages/pkg03/mod0003.py"
OTHER = "venv/lib/python3.12/site-packages/pkg04/mod0004.py"


def flip_first_byte(ssh_lab, name, path):
    """Change a file in place without changing its size (what a stray write does)."""
    ssh_lab.ssh(name, "sh", "-c", 'printf Z | dd of="$1" bs=1 count=1 conv=notrunc 2>/dev/null',
                "wf", path)


def assert_current_matches(ssh_lab, name, install_dir, dist):
    """Every file of the box's current release equals the dist's, byte for byte."""
    m = scan(dist)
    cur = ssh_lab.landed(name, f"{install_dir}/current")
    for e in m.files:
        assert (cur / e.path).read_bytes() == (dist / e.path).read_bytes(), e.path


def test_a_same_size_change_is_repaired_by_a_plain_repush(ssh_lab, box, install_dir,
                                                          fake_dist):
    b = box("nvidia")
    [first] = releases.distribute([b], fake_dist)
    flip_first_byte(ssh_lab, "nvidia", f"{install_dir}/current/{VICTIM}")
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "repaired", again
    assert again.files_sent == 1 and again.release.startswith(first.release + ".")
    assert_current_matches(ssh_lab, "nvidia", install_dir, fake_dist)
    [third] = releases.distribute([b], fake_dist)
    assert third.action == "unchanged" and third.bytes_sent == 0


def test_a_changed_and_a_truncated_file_never_survive_a_repush(ssh_lab, box, install_dir,
                                                               fake_dist):
    b = box("amd")
    releases.distribute([b], fake_dist)
    flip_first_byte(ssh_lab, "amd", f"{install_dir}/current/{VICTIM}")
    ssh_lab.ssh("amd", "truncate", "-s", "0", f"{install_dir}/current/{OTHER}")
    [again] = releases.distribute([b], fake_dist)
    assert again.ok and again.action == "repaired" and again.files_sent == 2, again
    assert_current_matches(ssh_lab, "amd", install_dir, fake_dist)


def test_a_reactivation_that_fails_verification_falls_back_to_a_fresh_push(
        ssh_lab, box, install_dir, make_fake_dist):
    b = box("nvidia")
    v1 = make_fake_dist()
    [r1] = releases.distribute([b], v1)
    [r2] = releases.distribute([b], make_fake_dist(seed=5))
    # damage a file only the older release has (not shared with the current one by a link)
    lib = "venv/lib/python3.12/site-packages/torch/lib/libtorch_part0.so"
    assert (v1 / lib).read_bytes() != (make_fake_dist(seed=5) / lib).read_bytes()
    flip_first_byte(ssh_lab, "nvidia", f"{install_dir}/releases/{r1.release}/{lib}")
    [back] = releases.distribute([b], v1)
    assert back.ok and back.action == "pushed", back
    assert back.release.startswith(r1.release + ".") and back.previous == r2.release
    assert any("failed verification" in n for n in back.notes), back.notes
    assert_current_matches(ssh_lab, "nvidia", install_dir, v1)
    [again] = releases.distribute([b], v1)  # not stuck: the next run finds it current
    assert again.ok and again.action == "unchanged"
    names = {p.name for p in ssh_lab.landed("nvidia", f"{install_dir}/releases").iterdir()}
    assert r1.release not in names  # the damaged release was ours, and is gone


def test_verify_finds_damage_a_repush_cannot_see_and_repair_fixes_it(
        ssh_lab, write_inventory, install_dir, fake_dist, capsys):
    inv = str(write_inventory(names=["nvidia"]))
    assert commands.distribute(inventory=inv, dist=str(fake_dist)) == 0
    cur = f"{install_dir}/current"
    # damage neither size nor mtime shows (as bit rot would): only reading the bytes finds it
    ssh_lab.ssh("nvidia", "touch", "-r", f"{cur}/{VICTIM}", f"/tmp/wf-ref-{install_dir[-10:]}")
    flip_first_byte(ssh_lab, "nvidia", f"{cur}/{VICTIM}")
    ssh_lab.ssh("nvidia", "touch", "-r", f"/tmp/wf-ref-{install_dir[-10:]}", f"{cur}/{VICTIM}")
    capsys.readouterr()
    assert commands.distribute(inventory=inv, dist=str(fake_dist), as_json=True) == 0
    assert json.loads(capsys.readouterr().out)[0]["action"] == "unchanged"
    assert commands.distribute(inventory=inv, dist=str(fake_dist), verify=True) == 1
    err = capsys.readouterr().err
    assert "damaged: 1 file(s) differ" in err and VICTIM in err and "--repair" in err
    assert commands.distribute(inventory=inv, dist=str(fake_dist), repair=True,
                               as_json=True) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["action"] == "repaired" and row["files_sent"] == 1
    assert_current_matches(ssh_lab, "nvidia", install_dir, fake_dist)
    assert commands.distribute(inventory=inv, dist=str(fake_dist), verify=True,
                               as_json=True) == 0
    assert json.loads(capsys.readouterr().out)[0]["action"] == "verified"


# ---- never act on what the tool did not make -----------------------------------------------
def test_foreign_entries_are_reported_and_never_pruned(ssh_lab, box, install_dir,
                                                       make_fake_dist):
    b = box("nvidia")
    ssh_lab.ssh("nvidia", "mkdir", "-p", f"{install_dir}/releases/keepme",
                f"{install_dir}/releases/.partial-notours")
    opts = releases.Options(keep=2)
    results = [releases.distribute([b], make_fake_dist(seed=s), opts=opts)[0] for s in (1, 2, 3)]
    assert all(r.ok for r in results)
    names = {p.name for p in ssh_lab.landed("nvidia", f"{install_dir}/releases").iterdir()}
    assert {"keepme", ".partial-notours"} <= names
    assert results[0].release not in names  # our own old release was pruned
    assert any("keepme" in n and "not made by warpforge" in n for n in results[-1].notes)


def test_files_an_operator_added_to_a_release_are_never_pruned_with_it(
        ssh_lab, write_inventory, install_dir, fake_dist, make_fake_dist, capsys):
    """README, Ownership: foreign entries are reported, never pruned. A release holding a
    file its record does not list stays (repair, --keep pruning, rollback), named in notes."""
    inv = str(write_inventory(names=["amd"]))
    assert commands.distribute(inventory=inv, dist=str(fake_dist)) == 0
    first = current(ssh_lab, "amd", install_dir).split("/", 1)[1]
    ssh_lab.ssh("amd", "sh", "-c", 'echo notes > "$1/current/bin/operator-notes2.txt"', "wf",
                install_dir)
    notes = ssh_lab.landed("amd", f"{install_dir}/releases/{first}/bin/operator-notes2.txt")
    said = f"kept releases/{first} (not pruned): holds files the tool did not put there: " \
           "bin/operator-notes2.txt"
    capsys.readouterr()
    assert commands.distribute(inventory=inv, dist=str(fake_dist), as_json=True) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["action"] == "repaired" and row["release"].startswith(first + ".")
    assert said in row["notes"], row["notes"]
    assert (row["files_sent"], row["bytes_sent"]) == (0, 0)  # the counts agree
    assert notes.read_text() == "notes\n"
    for seed in (1, 2):  # --keep 2 would prune it now: it is kept, and said so each time
        assert commands.distribute(inventory=inv, dist=str(make_fake_dist(seed=seed)),
                                   keep="2", as_json=True) == 0
        [row] = json.loads(capsys.readouterr().out)
        assert row["action"] == "pushed" and said in row["notes"], row
    assert notes.read_text() == "notes\n"
    assert commands.rollback(inventory=inv, to=first[:12], as_json=True) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["action"] == "rolled-back" and row["release"] == first
    assert notes.read_text() == "notes\n" and runs(ssh_lab, "amd", install_dir).returncode == 0


def test_a_foreign_bin_is_never_moved_aside(ssh_lab, box, install_dir, fake_dist):
    b = box("nvidia")
    ssh_lab.ssh("nvidia", "sh", "-c", 'mkdir -p "$1/bin" && echo mine > "$1/bin/tool"', "wf",
                install_dir)
    [r] = releases.distribute([b], fake_dist)
    assert not r.ok and r.exit_code == 2 and "bin exists and was not made by" in r.error
    landed = ssh_lab.landed("nvidia", install_dir)
    assert (landed / "bin/tool").read_text() == "mine\n" and not (landed / "current").exists()
    assert sorted(p.name for p in landed.iterdir()) == [".lock", "bin", "releases"]


@pytest.mark.parametrize("where", ["//", "/.", "/opt/..", "/usr", "/etc/", "/opt"])
def test_system_install_dirs_are_refused_before_connecting(box, fake_dist, where):
    [r] = releases.distribute([box("nvidia", install_dir=where)], fake_dist)
    assert not r.ok and r.exit_code == 2 and "system directory" in r.error


@pytest.mark.parametrize("receive", ["python", "tar"])
def test_the_box_unpacks_with_python_hashing_as_it_receives_or_with_tar(
        ssh_lab, box, install_dir, make_fake_dist, receive):
    b = box("amd")
    dist = make_fake_dist()
    [r] = releases.distribute([b], dist, opts=releases.Options(receive=receive))
    assert r.ok and r.action == "pushed", r.error
    assert {"pack", "transfer", "verify", "switch"} <= set(r.phases)
    assert_current_matches(ssh_lab, "amd", install_dir, dist)
    assert runs(ssh_lab, "amd", install_dir).returncode == 0
