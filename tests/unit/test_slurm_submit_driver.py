"""The submit driver (slurm_remote.SUBMIT_DRIVER) run by the real bash on this machine, with
a recording stand-in for `sbatch` on PATH: that each script reaches sbatch through a pipe and
never lands in a file (also around a rejection), verbatim, that secret values reach sbatch's
environment and nothing else, and which work dirs it refuses. tests/integration/slurm
repeats the important parts with the real sbatch, locally and through the SSH login node."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import uuid

import pytest

from tests.unit.test_slurm_script import submission
from warpforge_launch.errors import UsageError
from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler
from warpforge_launch.schedulers.slurm_transport import LocalTransport

SECRET = "tok 'q' \"dq\" $(id) `id`\n\ttab; |&"

FAKE_SBATCH = r"""#!/usr/bin/env python3
import json, os, stat, sys
st = os.fstat(0)  # the script is stdin
text = sys.stdin.read()
with open(os.environ["WF_RECORD"], "a") as rec:
    rec.write(json.dumps({"argv": sys.argv[1:], "fifo": stat.S_ISFIFO(st.st_mode),
                          "secret": os.environ.get("HF_TOKEN"), "text": text}) + "\n")
if "--partition=slow" in text:
    import time
    time.sleep(30)
if "--partition=nosuch" in text:
    print("sbatch: error: Batch job submission failed: Invalid partition name specified",
          file=sys.stderr)
    sys.exit(1)
n = sum(1 for _ in open(os.environ["WF_RECORD"]))
print(100 + n)
"""

class Recording(LocalTransport):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.argvs: list[list[str]] = []

    def start(self, argv, **kw):  # run() starts through here too
        self.argvs.append(list(argv))
        return super().start(argv, **kw)


@pytest.fixture
def lab(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    record = tmp_path / "record.jsonl"
    transport = Recording(env={"PATH": f"{bin_dir}:{os.environ['PATH']}",
                               "WF_RECORD": str(record)})
    monkeypatch.setenv("HF_TOKEN", SECRET)
    work = tmp_path / "home" / "work"

    def make(**cfg):
        settings = dict(work_dir=str(work), runtime="none", partition="debug", **cfg)
        return SlurmScheduler("hpc", SlurmConfig(**settings), home=tmp_path / "wfhome",
                              transport=transport)

    def seen():
        return [json.loads(ln) for ln in record.read_text().splitlines()] if record.exists() \
            else []

    return make, seen, transport, work


def test_scripts_only_through_pipes_and_secrets_only_in_sbatch_env(lab):
    make, seen, transport, work = lab
    sched = make()
    subs = [submission(secret_env=("HF_TOKEN",)), submission(env={"NOTE": "caf\u00e9 \u2603"})]
    ids = sched.submit_many(subs)
    assert ids == ["hpc-101", "hpc-102"]
    first, second = seen()
    assert first["secret"] == SECRET and second["secret"] is None  # only the job that asked
    for rec, sub in zip((first, second), subs, strict=True):
        assert rec["fifo"] is True  # never a file: nobody else can read or swap it
        assert rec["text"] == sched.plan(sub).request.script  # verbatim, whole
        assert "tok 'q'" not in rec["text"] and "tok 'q'" not in " ".join(rec["argv"])
        assert rec["argv"] == ["--parsable"]
    assert "caf\u00e9 \u2603" in second["text"]  # multi-byte text: the byte counts hold
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert not any(SECRET in " ".join(argv) for argv in transport.argvs)  # never on a cmdline
    assert list(work.iterdir()) == []


def test_a_rejected_script_does_not_shift_the_next_one(lab):
    make, seen, _transport, work = lab
    subs = [submission(env={"N": "one"}), submission(queue="nosuch", env={"N": "two"}),
            submission(env={"N": "three \u00e9"}), submission(env={"N": "four"})]
    sched = make()
    with pytest.raises(UsageError, match="Invalid partition name.*3 of 4 submitted"):
        sched.submit_many(subs)
    recs = seen()
    assert len(recs) == 4 and list(work.iterdir()) == []
    assert [r["text"] for r in recs] == [sched.plan(s).request.script for s in subs]


def test_missing_secret_is_bad_input_and_nothing_is_sent(lab, monkeypatch):
    make, seen, transport, _work = lab
    monkeypatch.delenv("HF_TOKEN")
    sched = make()
    plan = sched.plan(submission(secret_env=("HF_TOKEN",)))  # the dry run needs no value
    with pytest.raises(UsageError, match="HF_TOKEN"):
        sched.execute(plan)
    assert transport.argvs == [] and seen() == []


def _refused(make, match):
    with pytest.raises(UsageError, match=match) as err:
        make().submit(submission())
    assert err.value.exit_code == 2
    return err


def test_work_dir_symlink_is_refused(lab, tmp_path):
    make, seen, _t, work = lab
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    work.parent.mkdir()
    work.symlink_to(elsewhere)
    _refused(make, "is a symlink")
    assert seen() == [] and list(elsewhere.iterdir()) == []


def test_work_dir_writable_by_others_is_refused(lab):
    make, seen, _t, work = lab
    work.mkdir(parents=True)
    work.chmod(0o777)
    _refused(make, r"writable by other users \(mode 777\)")
    assert seen() == []


def test_ancestor_writable_by_others_without_sticky_bit_is_refused(lab):
    make, seen, _t, work = lab
    work.parent.mkdir()
    work.parent.chmod(0o777)
    _refused(make, "not sticky")
    work.parent.chmod(0o1777)  # like /tmp or /scratch: fine, our own dir below it
    assert make().submit(submission()) == "hpc-101"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another user")
def test_work_dir_of_another_user_is_refused(lab):
    make, seen, _t, work = lab
    work.mkdir(parents=True, mode=0o700)
    os.chown(work, 65534, 65534)
    _refused(make, "belongs to uid 65534")
    assert seen() == []


def test_driver_stopped_at_the_deadline_leaves_no_scripts(lab):
    from warpforge_launch.errors import InfrastructureError

    make, seen, _t, work = lab
    with pytest.raises(InfrastructureError, match="`sbatch` did not answer within 2s"):
        make(command_timeout=1.0).submit_many([submission(queue="slow"), submission()])
    assert len(seen()) == 1 and list(work.iterdir()) == []


def test_a_driver_started_ahead_and_abandoned_submits_nothing(lab):
    make, seen, _transport, work = lab
    sched = make()
    started = sched.start_driver(str(work), 1)  # checks (and makes) the work dir, then waits
    started.abandon()
    assert seen() == [] and list(work.iterdir()) == []


def test_a_driver_started_ahead_submits_once_the_scripts_come(lab):
    make, seen, _transport, work = lab
    sched = make()
    from warpforge_launch.schedulers import slurm_remote as remote

    script = sched.plan(submission()).request.script
    started = sched.start_driver(str(work), 1)
    done = sched._run_driver(str(work), [remote.Job("a.sbatch", script)], {}, started)
    assert remote.submit_results(done.stdout) == {"a.sbatch": (0, "101")}
    assert [r["text"] for r in seen()] == [script] and sched.calls["sbatch"] == 1


def test_scripts_sent_ahead_wait_for_go(lab):
    """The scripts go out while the caller records its jobs; only GO submits them, and a
    caller that gives up (EOF) or sends anything else submits nothing."""
    make, seen, _transport, work = lab
    from warpforge_launch.schedulers import slurm_remote as remote

    sched = make()
    script = sched.plan(submission()).request.script
    data = remote.submit_input([remote.Job("a.sbatch", script)], {})
    started = sched.start_driver(str(work), 1)
    started.send(data)
    started.abandon()
    assert seen() == []
    started = sched.start_driver(str(work), 1)
    started.send(data)
    assert started.finish("NO\n").returncode == remote.BAD_INPUT and seen() == []
    started = sched.start_driver(str(work), 1)
    started.send(data)
    done = sched._run_driver(str(work), [remote.Job("a.sbatch", script)], {}, started,
                             sent=True)
    assert remote.submit_results(done.stdout) == {"a.sbatch": (0, "101")}
    assert [r["text"] for r in seen()] == [script]


def test_driver_answers_are_read_per_script():
    from warpforge_launch.schedulers import slurm_remote as remote

    out = ("WF+ a.sbatch\n7\n\nWF a.sbatch 0\n"
           "WF+ b.sbatch\nsbatch: error: one\nWF a.sbatch 0\nsbatch: error: two\n\n"
           "WF b.sbatch 1\nWF+ c.sbatch\n")  # c: the driver died before its answer
    assert remote.submit_results(out) == {
        "a.sbatch": (0, "7"),
        "b.sbatch": (1, "sbatch: error: one\nWF a.sbatch 0\nsbatch: error: two")}


@pytest.mark.parametrize("cut", [1, 10, 200])
def test_a_script_cut_short_is_refused_not_submitted(lab, cut):
    make, seen, transport, work = lab
    from warpforge_launch.schedulers import slurm_remote as remote

    sched = make()
    script = sched.plan(submission()).request.script
    data = remote.submit_input([remote.Job("a.sbatch", script)], {})
    done = transport.run(["bash", "-c", remote.SUBMIT_DRIVER, "x", str(work)],
                         input=data[:-cut], timeout=30)
    assert done.returncode == remote.CANNOT_UNPACK and "cut short" in done.stderr
    assert seen() == []


def test_a_prepared_batch_is_sent_by_its_started_driver_or_released_unsent(lab):
    make, seen, transport, work = lab
    sched = make()
    subs = [dataclasses.replace(submission(), correlation_id=str(uuid.uuid4()))
            for _ in range(3)]
    batch = sched.plan_batch(subs)
    sched.prepare_batch(batch)
    sched.release_batch(batch)
    assert seen() == [] and sched.prepared == {}
    sched.prepare_batch(batch)
    outcomes = sched.execute_batch(batch)
    assert sorted(o.native_id for o in outcomes.values()) == ["101_0", "101_1", "101_2"]
    assert sched.calls["sbatch"] == 2 and len(transport.argvs) == 2
    assert [r["text"] for r in seen()] == [batch.requests[0].script]
    sched.release_batch(batch)  # after use: nothing left to release
    assert len(seen()) == 1


def test_big_scripts_arrive_whole_and_in_order(lab):
    make, seen, _transport, _work = lab
    sched = make()
    subs = [submission(env={"BIG": "\u00e9x" * 150_000}), submission(env={"N": "second"})]
    assert sched.submit_many(subs) == ["hpc-101", "hpc-102"]
    assert [r["text"] for r in seen()] == [sched.plan(s).request.script for s in subs]


def test_a_command_that_never_reads_what_was_sent_ahead_times_out():
    """Scripts sent ahead go through a pipe: a command stuck before reading them (a work
    dir on a hung file system) cannot hang the caller past its deadline, and abandoning it
    returns too."""
    import time

    from warpforge_launch.errors import InfrastructureError

    transport = LocalTransport()
    started = transport.start(["sleep", "30"], timeout=1.0, program="sbatch")
    started.send("x" * (4 << 20))  # far more than a pipe holds
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError, match="did not answer within 1s"):
        started.finish("GO\n")
    assert time.monotonic() - t0 < 5
    started = transport.start(["sleep", "30"], timeout=1.0, program="sbatch")
    started.send("x" * (4 << 20))
    t0 = time.monotonic()
    started.abandon()
    assert time.monotonic() - t0 < 10
