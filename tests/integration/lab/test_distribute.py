"""Distribution to real sshd boxes: atomic releases, incremental, rollback, per-box lock."""

import json
import os
import subprocess
import threading
from dataclasses import replace

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.lab import commands
from warpforge_launch.lab import distribute as dist_mod
from warpforge_launch.lab.manifest import Manifest, scan

pytestmark = pytest.mark.ssh


def current(ssh_lab, name, install_dir) -> str:
    return os.readlink(ssh_lab.landed(name, f"{install_dir}/current"))


def runs(ssh_lab, name, install_dir) -> subprocess.CompletedProcess:
    return ssh_lab.ssh(name, f"{install_dir}/bin/snakegrinder", "--trace-example", "--out",
                       f"/tmp/wf-out-{name}", check=False)


def test_full_tree_lands_and_runs_on_every_box(ssh_lab, box, install_dir, fake_dist):
    results = dist_mod.distribute([box("nvidia"), box("amd")], fake_dist)
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
    [first] = dist_mod.distribute([b], fake_dist)
    releases = ssh_lab.landed("nvidia", f"{install_dir}/releases")
    before = {p.name: p.stat().st_mtime_ns for p in releases.rglob("*")}
    [again] = dist_mod.distribute([b], fake_dist)
    assert again.ok and again.action == "unchanged"
    assert (again.files_sent, again.bytes_sent) == (0, 0)
    assert again.release == first.release
    assert {p.name: p.stat().st_mtime_ns for p in releases.rglob("*")} == before


def test_changed_file_only_is_sent_the_rest_is_linked(ssh_lab, box, install_dir,
                                                      make_fake_dist):
    dist = make_fake_dist()
    b = box("nvidia")
    [v1] = dist_mod.distribute([b], dist)
    (dist / "venv/lib/python3.12/site-packages/torch/__init__.py").write_text("v = 2\n")
    [v2] = dist_mod.distribute([b], dist)
    assert v2.ok and v2.action == "pushed" and v2.release != v1.release
    assert v2.files_sent == 1 and v2.files_linked == len(scan(dist).files) - 1
    rel = ssh_lab.landed("nvidia", f"{install_dir}/releases")
    same = "venv/lib/python3.12/site-packages/torch/lib/libtorch_part0.so"
    assert (rel / v1.release / same).stat().st_ino == (rel / v2.release / same).stat().st_ino
    assert runs(ssh_lab, "nvidia", install_dir).returncode == 0


class KillConnectionAfter(dist_mod.Progress):
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
    [r1] = dist_mod.distribute([b], v1)
    # big enough that the cut lands mid-stream (GNU tar's progress is polled every 0.1 s)
    v2 = make_fake_dist(size_mb=80, seed=7)
    hook = KillConnectionAfter(ssh_lab, "amd", 4 * 1024 * 1024)
    [cut] = dist_mod.distribute([b], v2, progress=hook,
                                opts=dist_mod.Options(local_tar=local_tar))
    assert hook.killed and not cut.ok
    assert cut.exit_code == 3 and "amd" in cut.error, cut.error
    assert current(ssh_lab, "amd", install_dir) == f"releases/{r1.release}"
    p = runs(ssh_lab, "amd", install_dir)
    assert p.returncode == 0 and "SUCCESS" in p.stdout, p.stderr
    releases = ssh_lab.landed("amd", f"{install_dir}/releases")
    assert any(p.name.startswith(".partial-") for p in releases.iterdir())
    [r2] = dist_mod.distribute([b], v2)  # the next push completes and sweeps the leftovers
    assert r2.ok and r2.action == "pushed"
    assert current(ssh_lab, "amd", install_dir) == f"releases/{r2.release}"
    assert not any(p.name.startswith(".partial-") for p in releases.iterdir())


def test_rollback_switches_back_and_forth(ssh_lab, box, install_dir, make_fake_dist,
                                          write_inventory, capsys):
    b = box("nvidia")
    [r1] = dist_mod.distribute([b], make_fake_dist())
    [r2] = dist_mod.distribute([b], make_fake_dist(seed=5))
    inv = write_inventory(names=["nvidia"])
    assert commands.rollback(boxes="nvidia", inventory=str(inv)) == 0
    assert "rolled-back" in capsys.readouterr().out
    assert current(ssh_lab, "nvidia", install_dir) == f"releases/{r1.release}"
    assert runs(ssh_lab, "nvidia", install_dir).returncode == 0
    [back] = dist_mod.rollback([b], to=r2.release[:6])
    assert back.ok and back.release == r2.release and back.previous == r1.release
    [again] = dist_mod.distribute([b], make_fake_dist())  # r1's tree: switched, not re-sent
    assert again.action == "reactivated" and again.bytes_sent == 0


def test_rollback_without_an_earlier_release_is_bad_input(box, fake_dist):
    b = box("nvidia")
    [first] = dist_mod.rollback([b])  # nothing there at all
    assert not first.ok and first.exit_code == 2 and "no earlier release" in first.error
    dist_mod.distribute([b], fake_dist)
    [r] = dist_mod.rollback([b], to="ffff")
    assert not r.ok and "matches 0 releases" in r.error


def test_only_the_last_releases_are_kept(ssh_lab, box, install_dir, make_fake_dist):
    b = box("nvidia")
    opts = dist_mod.Options(keep=2)
    pushed = [dist_mod.distribute([b], make_fake_dist(seed=s), opts=opts)[0] for s in (1, 2, 3)]
    names = sorted(p.name for p in ssh_lab.landed("nvidia", f"{install_dir}/releases").iterdir()
                   if not p.name.startswith("."))
    assert names == sorted([pushed[1].release, pushed[2].release])
    with pytest.raises(UsageError, match="at least 2"):
        dist_mod.Options(keep=1)


def test_concurrent_runs_on_one_box_serialize(box, make_fake_dist):
    b = box("nvidia")
    dists = [make_fake_dist(seed=11, size_mb=6), make_fake_dist(seed=12, size_mb=6)]
    start = threading.Barrier(2)
    results = [None, None]

    def run(i):
        start.wait()
        [results[i]] = dist_mod.distribute([b], dists[i])

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
        [r] = dist_mod.distribute([box("nvidia")], fake_dist,
                                  opts=dist_mod.Options(lock_wait=1))
        assert not r.ok and r.exit_code == 3 and "holds the box's lock" in r.error
    finally:
        holder.stdin.close()
        holder.wait(timeout=20)
    [r] = dist_mod.distribute([box("nvidia")], fake_dist, opts=dist_mod.Options(lock_wait=5))
    assert r.ok


def test_paramiko_stream_works_without_the_openssh_client(ssh_lab, box, install_dir,
                                                          fake_dist):
    [r] = dist_mod.distribute([box("amd")], fake_dist, opts=dist_mod.Options(bulk="paramiko"))
    assert r.ok and r.action == "pushed", r.error
    assert runs(ssh_lab, "amd", install_dir).returncode == 0


def test_local_transport_runs_the_same_pipeline(tmp_path, box, fake_dist):
    target = tmp_path / "local-box"
    b = box("nvidia", transport="local", install_dir=str(target))
    [r] = dist_mod.distribute([b], fake_dist)
    assert r.ok and r.action == "pushed", r.error
    p = subprocess.run([str(target / "bin/snakegrinder"), "--trace-example", "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and (tmp_path / "out/model.mlir").stat().st_size > 100
    [again] = dist_mod.distribute([b], fake_dist)
    assert again.action == "unchanged"


def test_bad_input_is_refused_before_anything_is_sent(box, tmp_path, fake_dist,
                                                      write_inventory, capsys):
    [r] = dist_mod.distribute([box("nvidia", install_dir="opt/relative")], fake_dist)
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
    [r1] = dist_mod.distribute([b], make_fake_dist())
    dist2 = make_fake_dist(seed=9)
    m = scan(dist2)
    # the dist changed between scan and send: the box must notice before switching
    victim = next(e for e in m.files if e.path.endswith("libtorch_part1.so"))
    forged = Manifest(tuple(replace(e, sha256="0" * 64) if e is victim else e
                            for e in m.entries))
    [r] = dist_mod.distribute([b], dist2, manifest=forged)
    assert not r.ok and r.exit_code == 1
    assert f"{victim.path}: FAILED checksum" in r.error
    assert current(ssh_lab, "nvidia", install_dir) == f"releases/{r1.release}"
    assert runs(ssh_lab, "nvidia", install_dir).returncode == 0


def test_early_stream_connection_is_let_go_when_nothing_needs_sending(
        ssh_lab, box, install_dir, fake_dist, tmp_path, monkeypatch):
    b = box("amd")
    [first] = dist_mod.distribute([b], fake_dist)
    # another machine (no record of this box) pushes the same tree: it opens the stream
    # connection early, finds the box current, and lets that connection go unused
    monkeypatch.setenv("WARPFORGE_HOME", str(tmp_path / "other-machine"))
    started = []
    real = dist_mod.prestart
    monkeypatch.setattr(dist_mod, "prestart",
                        lambda *a: started.append(real(*a)) or started[-1])
    [again] = dist_mod.distribute([b], fake_dist)
    assert again.ok and again.action == "unchanged" and again.bytes_sent == 0
    assert len(started) == 1 and started[0].proc.returncode == 0  # ended cleanly, unused
    releases = ssh_lab.landed("amd", f"{install_dir}/releases")
    assert sorted(p.name for p in releases.iterdir()) == [".history", first.release]
    [third] = dist_mod.distribute([b], fake_dist)  # now this machine knows: no early stream
    assert third.action == "unchanged" and len(started) == 1


def test_a_damaged_current_release_is_repaired_beside_it(ssh_lab, box, install_dir, fake_dist):
    b = box("nvidia")
    [first] = dist_mod.distribute([b], fake_dist)
    victim = "venv/lib/python3.12/site-packages/pkg03/mod0003.py"
    ssh_lab.ssh("nvidia", "truncate", "-s", "0", f"{install_dir}/current/{victim}")
    [fixed] = dist_mod.distribute([b], fake_dist)
    assert fixed.ok and fixed.action == "pushed" and fixed.files_sent == 1
    assert fixed.release.startswith(first.release + ".")  # same tree, new directory
    assert current(ssh_lab, "nvidia", install_dir) == f"releases/{fixed.release}"
    landed = ssh_lab.landed("nvidia", f"{install_dir}/releases/{fixed.release}/{victim}")
    assert landed.read_bytes() == (fake_dist / victim).read_bytes()
    [again] = dist_mod.distribute([b], fake_dist)
    assert again.action == "unchanged"
