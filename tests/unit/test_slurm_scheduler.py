"""SlurmScheduler's call pattern and error mapping, with a scripted transport that answers
with real captured output (tests/unit/fixtures/slurm). The real-cluster behaviour is covered
by tests/integration/slurm."""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from warpforge_launch.errors import InfrastructureError, NotFoundError, UsageError
from warpforge_launch.jobs import JobState
from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler
from warpforge_launch.schedulers.slurm_transport import Completed, LocalTransport, Transport

FIX = Path(__file__).parent / "fixtures" / "slurm"


class Scripted(Transport):
    """Answers each client by its name; records every argv."""

    def __init__(self, answers: dict[str, Completed]):
        self.answers = answers
        self.argvs: list[list[str]] = []

    def run(self, argv, *, input=None, timeout, program=None):
        self.argvs.append(list(argv))
        cmd = argv[2] if argv[0] == "env" else argv[0]
        return self.answers.get(cmd, Completed(0, "", ""))


def ok(name: str) -> Completed:
    return Completed(0, (FIX / name).read_text(), "")


def err(name: str, rc: int = 1) -> Completed:
    return Completed(rc, "", (FIX / name).read_text())


def sched(tmp_path, answers, **cfg) -> tuple[SlurmScheduler, Scripted]:
    t = Scripted(answers)
    return SlurmScheduler("hpc", SlurmConfig(work_dir="/scratch/wf", **cfg), home=tmp_path,
                          transport=t), t


def test_active_jobs_need_only_squeue(tmp_path):
    s, t = sched(tmp_path, {"squeue": ok("squeue_active.txt"), "sacct": ok("sacct_mixed_x.txt")})
    got = s.statuses(["hpc-14", "hpc-15"])
    assert got["hpc-14"].state is JobState.RUNNING and got["hpc-15"].state is JobState.PENDING
    assert s.calls == {"squeue": 1}
    squeue = t.argvs[0]
    assert squeue[:6] == ["squeue", "-h", "-r", "-t", "all", "-j"] and squeue[6] == "14,15"


def test_finished_jobs_one_squeue_one_sacct_then_cached(tmp_path):
    s, t = sched(tmp_path, {"squeue": ok("squeue_mixed.txt"), "sacct": ok("sacct_mixed_x.txt")})
    ids = [f"hpc-{n}" for n in (1, 2, 4, 5, 6, 8, 13)]
    got = s.statuses(ids)
    assert s.calls == {"squeue": 1, "sacct": 1}
    assert [a[0] for a in t.argvs] == ["squeue", "sacct"]
    assert got["hpc-2"].scheduler_metadata["exit_code"] == 3
    assert got["hpc-13"].state is JobState.TIMEOUT
    assert got["hpc-8"].state is JobState.FAILED and "out of memory" in got["hpc-8"].message
    assert t.argvs[1][:4] == ["sacct", "-X", "-P", "-n"]
    s.calls.clear()
    assert s.statuses(ids) == got and not s.calls


def test_expired_ids_squeue_exit_1_then_sacct(tmp_path):
    s, _ = sched(tmp_path, {"squeue": err("squeue_invalid.stderr"),
                            "sacct": ok("sacct_mixed_x.txt")})
    assert s.status("hpc-1").state is JobState.COMPLETED
    assert s.calls == {"squeue": 1, "sacct": 1}


def test_accounting_disabled_detected_once_and_remembered(tmp_path):
    answers = {"squeue": err("squeue_invalid.stderr"), "sacct": err("sacct_disabled.stderr"),
               "scontrol": ok("scontrol_noacct_failed.txt")}
    s, _ = sched(tmp_path, answers)
    status = s.status("hpc-1")
    assert status.state is JobState.FAILED and status.scheduler_metadata["exit_code"] == 3
    assert s.calls == {"squeue": 1, "sacct": 1, "scontrol": 1}
    again, _ = sched(tmp_path, answers)  # a later process, same home
    again.statuses(["hpc-1", "hpc-2"])
    assert again.calls == {"scontrol": 1}


def test_unreachable_controller_is_exit_3(tmp_path):
    down = Completed(1, "", "slurm_load_jobs error: Unable to contact slurm controller "
                            "(connect failure)\n")
    s, _ = sched(tmp_path, {"squeue": down})
    with pytest.raises(InfrastructureError, match="controller unreachable") as e:
        s.status("hpc-7")
    assert e.value.exit_code == 3


def test_unknown_job_is_not_found(tmp_path):
    s, _ = sched(tmp_path, {"squeue": Completed(0, "", ""), "sacct": Completed(0, "", "")})
    with pytest.raises(NotFoundError):
        s.status("hpc-424242")
    with pytest.raises(NotFoundError):
        s.status("hpc-42; rm -rf /")
    with pytest.raises(NotFoundError):
        s.status("other-42")


def test_cancel_many_is_one_scancel_then_one_refresh_the_launcher_reuses(tmp_path):
    """scancel says nothing of jobs that had already ended (Slurm 22.05 exits 0), so the
    refresh after it tells: COMPLETED or unknown is not cancelled; CANCELLED, or still
    stopping (COMPLETING shows as RUNNING), is."""
    s, t = sched(tmp_path, {"squeue": ok("squeue_mixed.txt"), "sacct": ok("sacct_mixed_x.txt")})
    ids = ["hpc-10", "hpc-5", "hpc-3", "hpc-404", "hpc-1"]
    got = s.cancel_many(ids)
    assert got == {"hpc-10": False, "hpc-5": True, "hpc-3": True, "hpc-404": False,
                   "hpc-1": False}
    assert t.argvs[0] == ["scancel", "1", "3", "5", "10", "404"]
    assert [a[0] for a in t.argvs] == ["scancel", "squeue", "sacct"]
    s.calls.clear()
    known = [j for j in ids if j != "hpc-404"]
    s.statuses(known)  # the launcher's refresh right after: answered from the watcher
    assert not s.calls
    assert s.cancel_many([]) == {} and not s.calls


def test_sbatch_rejection_is_usage_error(tmp_path):
    driver_out = ("WF+ warpforge-x-0.sbatch\nsbatch: error: Batch job submission failed: "
                  "Invalid partition name specified\n\nWF warpforge-x-0.sbatch 1\n")

    class Submit(Scripted):
        def run(self, argv, *, input=None, timeout, program=None):
            self.argvs.append(list(argv))
            name = re.search(r"^J (\S+) ", input, re.M).group(1)  # the driver's stdin
            return Completed(0, driver_out.replace("warpforge-x-0.sbatch", name), "")

    t = Submit({})
    s = SlurmScheduler("hpc", SlurmConfig(work_dir="/scratch/wf", runtime="none"),
                       home=tmp_path, transport=t)
    from tests.unit.test_slurm_script import submission

    with pytest.raises(UsageError, match="^sbatch rejected the job: Invalid partition name"):
        s.submit(submission())
    assert t.argvs[0][:2] == ["bash", "-c"] and t.argvs[0][4] == "/scratch/wf"


def test_adaptive_interval_answers_from_memory(tmp_path):
    s, _ = sched(tmp_path, {"squeue": ok("squeue_active.txt")})
    s.status("hpc-14")
    s.status("hpc-14")  # asked again at once: no new call
    assert s.calls == {"squeue": 1}
    assert 0.5 <= s.poll_interval("hpc-14") <= 30  # 3:12 elapsed -> 19.2 s
    assert s.poll_interval("hpc-14") == pytest.approx(19.2)


def test_client_timeout_is_bounded_and_names_the_client(tmp_path):
    """With slurm_conf set the argv starts with `env`: the message still names squeue, and
    says what the client printed before the deadline."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\n")
    slow = LocalTransport(prefix=[sys.executable, "-c", "import sys, time; sys.stderr.write("
                                  "'squeue: error: still retrying\\n'); sys.stderr.flush(); "
                                  "time.sleep(30)"])
    s = SlurmScheduler("hpc", SlurmConfig(work_dir="/scratch/wf", command_timeout=0.5,
                                          slurm_conf=str(conf)), home=tmp_path, transport=slow)
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError) as err:
        s.status("hpc-1")
    assert time.monotonic() - t0 < 5
    assert str(err.value) == ("`squeue` did not answer within 0.5s on this machine: "
                              "squeue: error: still retrying")


def test_slurm_conf_is_passed_to_every_client(tmp_path):
    s, t = sched(tmp_path, {"squeue": ok("squeue_active.txt")}, slurm_conf="/etc/slurm/x.conf")
    s.status("hpc-14")
    assert t.argvs[0][:2] == ["env", "SLURM_CONF=/etc/slurm/x.conf"]


def test_ssh_transport_argv_is_strict_and_reuses_connections(tmp_path):
    from warpforge_launch.schedulers.slurm_transport import SshTransport

    t = SshTransport("login.example", port=2222, user="alice", identity_file="/k",
                     known_hosts_file="/kh", control_dir=tmp_path / "cm")
    argv = t.base_argv()
    for opt in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ControlMaster=auto",
                "ControlPersist=600", "UserKnownHostsFile=/kh"):
        assert opt in argv
    assert "accept-new" not in " ".join(argv)
    assert len(str(t.control_path)) < 100  # unix socket path limit


def test_timeout_kills_the_whole_client_group(tmp_path):
    """A shell killed at the deadline must not leave an sbatch behind that submits later."""
    pidfile = tmp_path / "grandchild.pid"
    t = LocalTransport()
    with pytest.raises(InfrastructureError):
        t.run(["bash", "-c", f"sleep 30 & echo $! > {pidfile}; wait"], timeout=0.5)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {pid} survived the timeout")


@pytest.mark.parametrize("host,user", [("-oProxyCommand=touch /tmp/x", None),
                                       ("login node", None), ("login", "-oX"), ("", None)])
def test_ssh_login_host_and_user_cannot_become_options(tmp_path, host, user):
    from warpforge_launch.schedulers.slurm_transport import SshTransport

    with pytest.raises(UsageError):
        SshTransport(host, user=user, control_dir=tmp_path)


# -- client configuration failures are infrastructure (exit 3), with the client's words --------
@pytest.mark.parametrize("stderr", [
    "sbatch: error: Parse error in file /etc/slurm/slurm.conf line 1: \"garbage\"\n"
    "sbatch: fatal: Unable to process configuration file\n",
    "sbatch: error: Munge encode failed: Failed to access \"/run/munge/munge.socket.2\": "
    "No such file or directory\nsbatch: error: Batch job submission failed: Protocol "
    "authentication error\n",
])
def test_sbatch_configuration_failure_is_exit_3(tmp_path, stderr):
    class Driver(Scripted):
        def run(self, argv, *, input=None, timeout, program=None):
            self.argvs.append(list(argv))
            name = re.search(r"^J (\S+) ", input, re.M).group(1)  # the driver's stdin
            return Completed(0, f"WF+ {name}\n{stderr}\nWF {name} 1\n", "")

    from tests.unit.test_slurm_script import submission

    s = SlurmScheduler("hpc", SlurmConfig(work_dir="/scratch/wf", runtime="none"),
                       home=tmp_path, transport=Driver({}))
    with pytest.raises(InfrastructureError, match="Slurm client configuration failed") as err:
        s.submit(submission())
    assert err.value.exit_code == 3
    assert stderr.splitlines()[0].strip() in str(err.value)


def test_squeue_configuration_failure_is_exit_3(tmp_path):
    s, _ = sched(tmp_path, {"squeue": Completed(1, "", "squeue: fatal: Unable to process "
                                                    "configuration file\n")})
    with pytest.raises(InfrastructureError, match="squeue: fatal: Unable to process"):
        s.status("hpc-3")


def test_missing_slurm_conf_target_is_exit_3_at_once(tmp_path):
    s = SlurmScheduler("hpc", SlurmConfig(work_dir="/scratch/wf",
                                          slurm_conf=str(tmp_path / "absent.conf")),
                       home=tmp_path, transport=LocalTransport())
    t0 = time.monotonic()
    with pytest.raises(InfrastructureError, match="absent.conf is not a file"):
        s.status("hpc-1")
    assert time.monotonic() - t0 < 2  # not the clients' 60 s of retries


# -- reconcile: one squeue plus one sacct ---------------------------------------------------------
def test_reconcile_finds_jobs_by_comment_then_job_name(tmp_path):
    a, b, c = ("aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002",
               "cccccccc-0000-4000-8000-000000000003")
    squeue = (f"41|warpforge-aaaaaaaa|warpforge:{a}\n"
              "42|warpforge-bbbbbbbb|warpforge:bbbbbbbb-0000-4000-8000-ffffffffffff\n")
    sacct = ("40|warpforge-bbbbbbbb|\n40.batch|batch|\n"  # accounting without comments
             f"39|warpforge-cccccccc|warpforge:{c}x\n")   # another id with the same prefix
    s, t = sched(tmp_path, {"squeue": Completed(0, squeue, ""), "sacct": Completed(0, sacct, "")})
    assert s.reconcile([a, b, c]) == {a: "41", b: "40"}
    assert s.calls == {"squeue": 1, "sacct": 1}
    assert "--me" in t.argvs[0] and "%i|%j|%k" in t.argvs[0]
    assert t.argvs[1][t.argvs[1].index("--name") + 1] == "warpforge-bbbbbbbb,warpforge-cccccccc"


def test_reconcile_without_accounting_uses_one_scontrol(tmp_path):
    cid = "dddddddd-0000-4000-8000-000000000004"
    line = (f"JobId=7 JobName=warpforge-dddddddd UserId=root(0) Comment=warpforge:{cid} "
            "JobState=RUNNING\n")
    s, _ = sched(tmp_path, {"scontrol": Completed(0, line, "")})
    s.watcher.remember_accounting(False)
    assert s.reconcile([cid]) == {cid: "7"} and s.calls == {"scontrol": 1}


def test_call_counter_stays_bounded(tmp_path):
    s, _ = sched(tmp_path, {"squeue": ok("squeue_active.txt")})
    for _ in range(300):
        s.watcher.forget("14")
        s.status("hpc-14")
    assert s.calls == {"squeue": 300} and len(s.calls) == 1


DBD_DOWN = Completed(1, "", "sacct: error: slurm_persist_conn_open_without_init: failed to open "
                            "persistent connection to host:127.0.0.1:6819: Connection refused\n")


def test_slurmdbd_down_falls_back_to_squeue_and_names_slurmdbd(tmp_path):
    s, _ = sched(tmp_path, {"squeue": ok("squeue_mixed.txt"), "sacct": DBD_DOWN})
    got = s.statuses(["hpc-1"])  # squeue still shows it finished: its answer, not cached
    assert got["hpc-1"].state is JobState.COMPLETED
    assert got["hpc-1"].scheduler_metadata["source"] == "squeue"
    with pytest.raises(InfrastructureError, match=r"slurmdbd\) unreachable") as err:
        s.status("hpc-424242")  # only accounting could know this one
    assert err.value.exit_code == 3 and "Connection refused" in str(err.value)


def test_results_ask_again_only_for_a_failed_status_squeue_gave_without_its_exit_code(
        tmp_path):
    from warpforge_launch.jobs import JobStatus, utcnow

    s, t = sched(tmp_path, {"squeue": ok("squeue_mixed.txt"), "sacct": ok("sacct_mixed_x.txt")})
    from_squeue = JobStatus("hpc-2", None, JobState.FAILED, utcnow(), message="NonZeroExitCode",
                            scheduler_metadata={"slurm_state": "FAILED", "source": "squeue"})
    from_sacct = JobStatus("hpc-1", None, JobState.COMPLETED, utcnow(), scheduler_metadata={
        "slurm_state": "COMPLETED", "source": "sacct", "exit_code": 0})
    got = s.results({"hpc-1": from_sacct})
    assert s.calls == {"warpforge-read": 1} and got["hpc-1"].exit_code == 0
    s.calls.clear()
    got = s.results({"hpc-1": from_sacct, "hpc-2": from_squeue})
    assert s.calls == {"squeue": 1, "sacct": 1, "warpforge-read": 1}
    assert got["hpc-2"].exit_code == 3 and not got["hpc-2"].success
    assert t.argvs[-3][6] == "2"  # squeue, sacct, read: only the unsure job is asked about


# -- job arrays: a task's status comes only from a row that names that task ----------------------
def test_array_task_never_takes_another_tasks_row(tmp_path):
    """Real lab output (array 29, task 1 exits 4): squeue shows both tasks finished while
    accounting still lists the array's own job record, which ran as task 1, under the bare
    id 29 (``29|FAILED|4:0|...|29``). Task 0 is not that row: it stays COMPLETED (squeue, not
    cached), task 1 is the row (JobIDRaw 29 = squeue's %A of 29_1) with its exit code."""
    answers = {"squeue": ok("squeue_array_race.txt"), "sacct": ok("sacct_array_race_x.txt")}
    s, t = sched(tmp_path, answers)
    got = s.statuses(["hpc-29_0", "hpc-29_1"])
    assert got["hpc-29_0"].state is JobState.COMPLETED, got["hpc-29_0"]
    assert got["hpc-29_0"].scheduler_metadata == {"slurm_state": "COMPLETED",
                                                  "source": "squeue", "exit_code": 0}
    assert got["hpc-29_1"].state is JobState.FAILED
    assert got["hpc-29_1"].scheduler_metadata["exit_code"] == 4
    assert got["hpc-29_1"].scheduler_metadata["source"] == "sacct"
    assert "JobIDRaw" in t.argvs[1][-1] and t.argvs[0][-1].endswith("|%A")
    # accounting catches up: task 0's own row, then both are final and cached
    answers["sacct"] = ok("sacct_array_done_x.txt")
    s.watcher.forget("29_0", "29_1")
    again = s.statuses(["hpc-29_0", "hpc-29_1"])
    assert again["hpc-29_0"].scheduler_metadata["source"] == "sacct"
    assert [again[j].state for j in ("hpc-29_0", "hpc-29_1")] == [JobState.COMPLETED,
                                                                   JobState.FAILED]
    s.calls.clear()
    s.watcher.forget("29_0", "29_1")
    assert s.statuses(["hpc-29_0", "hpc-29_1"]) == again and not s.calls


def test_bare_array_row_without_a_task_that_squeue_names_is_nobodys(tmp_path):
    """Once the tasks have left squeue, nothing says which task the bare row ran as: no
    task gets it (the next refresh asks again), whatever its format."""
    bare = (FIX / "sacct_array_race_x.txt").read_text()
    for text in (bare, bare.rsplit("|", 1)[0] + "\n"):  # with and without JobIDRaw
        s, _ = sched(tmp_path, {"squeue": err("squeue_invalid.stderr"),
                                "sacct": Completed(0, text, "")})
        assert s.statuses(["hpc-29_0", "hpc-29_1"]) == {}


def test_bare_row_while_tasks_run_leaves_them_running(tmp_path):
    s, _ = sched(tmp_path, {"squeue": ok("squeue_array_running.txt"),
                            "sacct": ok("sacct_array_running_x.txt")})
    got = s.statuses(["hpc-29_0", "hpc-29_1"])
    assert {st.state for st in got.values()} == {JobState.RUNNING} and s.calls == {"squeue": 1}


def test_an_array_cancelled_while_pending_is_one_bare_record_of_every_task(tmp_path):
    """Real lab output: `sweep cancel` (scancel 146_0 ... 146_5) of an array that had not
    started leaves one record, 146, that never ran (no node): squeue and sacct list it under
    the bare id for good. It holds every task, and no task ran on its own."""
    for answers in ({"squeue": ok("squeue_array_cancelled.txt"),
                     "sacct": ok("sacct_array_cancelled_x.txt")},
                    {"squeue": err("squeue_invalid.stderr"),  # gone from squeue
                     "sacct": ok("sacct_array_cancelled_x.txt")}):
        s, _ = sched(tmp_path, answers)
        ids = [f"hpc-146_{i}" for i in range(6)]
        got = s.statuses(ids)
        assert [got[j].state for j in ids] == [JobState.CANCELLED] * 6
        assert {got[j].scheduler_metadata["source"] for j in ids} == {"sacct"}


def test_a_cancel_that_split_tasks_off_keeps_each_tasks_own_row(tmp_path):
    """Real lab output: array 140 (%2) cancelled with tasks 0 and 1 running (records 141,
    142); sacct lists the pending rest (record 140, never ran) under the bare id. Tasks 2-5
    are that record; tasks 0 and 1 are not, whatever it says."""
    s, _ = sched(tmp_path, {"squeue": ok("squeue_array_cancel_split.txt"),
                            "sacct": ok("sacct_array_cancel_split_x.txt")})
    got = s.statuses([f"hpc-140_{i}" for i in range(6)])
    assert {st.state for st in got.values()} == {JobState.CANCELLED}
    assert [got[f"hpc-140_{i}"].scheduler_metadata["source"] for i in range(6)] == [
        "squeue", "squeue", "sacct", "sacct", "sacct", "sacct"]
    assert got["hpc-140_0"].node_name == "vm" and got["hpc-140_2"].node_name is None

def test_pending_remainder_covers_exactly_its_indices(tmp_path):
    s, _ = sched(tmp_path, {"squeue": err("squeue_invalid.stderr"),
                            "sacct": ok("sacct_pending_estimate_x.txt")})
    got = s.statuses(["hpc-39_0", "hpc-39_2", "hpc-39_3"])
    assert sorted(got) == ["hpc-39_0", "hpc-39_2"]
    assert {st.state for st in got.values()} == {JobState.PENDING}


def test_without_accounting_array_tasks_are_named_by_their_array(tmp_path):
    """scontrol lists a task under its own job record (``JobId=2 ArrayJobId=1
    ArrayTaskId=0``): task 1_0 is JobId=2, never the array's record JobId=1 (task 1_1)."""
    s, _ = sched(tmp_path, {"scontrol": ok("scontrol_array_noacct.txt")})
    s.watcher.remember_accounting(False)
    got = s.statuses(["hpc-1_0", "hpc-1_1", "hpc-3_0", "hpc-3_5"])
    assert [got[j].state for j in ("hpc-1_0", "hpc-1_1")] == [JobState.COMPLETED,
                                                               JobState.FAILED]
    assert [got[j].scheduler_metadata["exit_code"] for j in ("hpc-1_0", "hpc-1_1")] == [0, 4]
    assert {got[j].state for j in ("hpc-3_0", "hpc-3_5")} == {JobState.CANCELLED}


def test_without_accounting_an_array_cancelled_before_it_ran_holds_every_task(tmp_path):
    """Real lab output: scontrol shows such an array as JobId=11 ArrayTaskId=4294967294
    (NO_VAL), NodeList=(null)."""
    s, _ = sched(tmp_path, {"scontrol": ok("scontrol_array_cancelled_noacct.txt")})
    s.watcher.remember_accounting(False)
    got = s.statuses([f"hpc-11_{i}" for i in range(6)])
    assert len(got) == 6 and {st.state for st in got.values()} == {JobState.CANCELLED}

def test_reconcile_without_accounting_finds_an_array_by_its_array_job(tmp_path):
    cid = "eeeeeeee-0000-4000-8000-000000000005"
    lines = "".join(f"JobId={raw} ArrayJobId=3 ArrayTaskId={task} JobName=warpforge-eeeeeeee "
                    f"Comment=warpforge:{cid} JobState=RUNNING\n"
                    for raw, task in ((4, "0"), (5, "1"), (3, "2-5%1")))
    s, _ = sched(tmp_path, {"scontrol": Completed(0, lines, "")})
    s.watcher.remember_accounting(False)
    assert s.reconcile([cid]) == {cid: "3"}


def test_a_pending_job_changed_state_when_submitted_not_at_its_estimated_start(tmp_path):
    """squeue's %S of a pending job is Slurm's estimate (here 09:02:42 and 09:17:00 for jobs
    submitted at 08:52:44): its state_changed_at is its submit time."""
    s, _ = sched(tmp_path, {"squeue": ok("squeue_pending_estimate.txt")})
    got = s.statuses(["hpc-38", "hpc-39_1", "hpc-37"])
    submitted = datetime(2026, 11, 30, 8, 52, 44).astimezone()
    assert got["hpc-38"].state is JobState.PENDING
    assert got["hpc-38"].state_changed_at == submitted
    assert got["hpc-39_1"].state_changed_at == submitted
    assert got["hpc-37"].state_changed_at == datetime(2026, 11, 30, 8, 52, 42).astimezone()
