"""Parsers against real squeue/sacct/scontrol/sinfo output captured from the lab cluster."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from warpforge_launch.schedulers import slurm_parse as p

FIX = Path(__file__).parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


@pytest.fixture(scope="module")
def sacct():
    return p.parse_sacct(fixture("sacct_mixed_x.txt"))


def test_sacct_completed_job_has_exit_code_zero(sacct):
    rec = sacct["1"]
    assert (rec.state, rec.exit_code, rec.signal) == ("COMPLETED", 0, None)
    assert rec.elapsed == timedelta(seconds=1)
    assert rec.node == "vm"
    assert rec.started == datetime(2026, 11, 28, 12, 36, 26)
    assert rec.terminal


def test_sacct_failed_exit_3_reports_the_exit_code(sacct):
    rec = sacct["2"]
    assert (rec.state, rec.exit_code) == ("FAILED", 3)
    assert "exit code 3" in rec.message


def test_sacct_killed_by_signal(sacct):
    rec = sacct["4"]
    assert (rec.state, rec.exit_code, rec.signal) == ("FAILED", 0, 9)
    assert "signal 9" in rec.message


def test_cancelled_by_uid_takes_first_word(sacct):
    for native in ("5", "6"):
        rec = sacct[native]
        assert rec.slurm_state == "CANCELLED" and rec.state == "CANCELLED"
        assert rec.detail == "by 0"
        assert rec.message.startswith("cancelled by uid 0")


def test_cancelled_pending_job_has_no_node_and_no_start(sacct):
    rec = sacct["6"]
    assert rec.node is None  # "None assigned"
    assert rec.started is None
    assert rec.ended == datetime(2026, 11, 28, 12, 36, 29)


def test_out_of_memory_is_failed_with_a_clear_message(sacct):
    rec = sacct["8"]
    assert rec.slurm_state == "OUT_OF_MEMORY" and rec.state == "FAILED"
    assert "out of memory" in rec.message
    assert (rec.exit_code, rec.signal) == (0, 125)


def test_timeout(sacct):
    rec = sacct["13"]
    assert rec.state == "TIMEOUT" and rec.terminal
    assert rec.elapsed == timedelta(minutes=1)
    assert "time limit" in rec.message


def test_pending_job_in_sacct_is_not_terminal(sacct):
    # the fixture holds job 3 while it was pending (requeued after a node failure)
    rec = sacct["3"]
    assert rec.state == "PENDING" and not rec.terminal
    assert rec.started is None and rec.ended is None


def test_steps_are_skipped_and_the_job_row_wins():
    recs = p.parse_sacct(fixture("sacct_with_steps.txt"))
    assert set(recs) == {"1", "2", "4", "5", "8", "9", "10"}
    assert all("." not in k for k in recs)
    assert recs["10"].state == "COMPLETED"  # a failing srun step does not fail the job
    assert recs["4"].state == "FAILED"      # its batch step says "CANCELLED by 0"
    assert recs["9"].state == "CANCELLED"  # requeued after its node failure, then cancelled


def test_node_fail():
    for recs in (p.parse_sacct(fixture("sacct_nodefail_x.txt")),
                 p.parse_squeue(fixture("squeue_nodefail.txt"))):
        rec = recs["18"]
        assert rec.slurm_state == "NODE_FAIL" and rec.state == "FAILED" and rec.terminal
        assert "node failure" in rec.message


def test_requeued_job_last_row_wins():
    text = "7|NODE_FAIL|0:0|00:00:03|vm||||None\n7|COMPLETED|0:0|00:00:09|vm||||None\n"
    assert p.parse_sacct(text)["7"].state == "COMPLETED"


def test_sacct_tolerates_garbage_header_and_short_lines():
    text = ("JobIDRaw|State|ExitCode\n\n  \nnot a line\n12|RUNNING|0:0|00:00:05|vm\n"
            "12.batch|RUNNING\n")
    recs = p.parse_sacct(text)
    assert list(recs) == ["12"]
    assert recs["12"].state == "RUNNING" and recs["12"].elapsed == timedelta(seconds=5)


def test_squeue_mixed_states():
    recs = p.parse_squeue(fixture("squeue_mixed.txt"))
    assert recs["5"].state == "CANCELLED"
    assert recs["1"].state == "COMPLETED"
    assert recs["2"].state == "FAILED" and recs["2"].reason == "NonZeroExitCode"
    assert recs["8"].state == "FAILED" and recs["8"].slurm_state == "OUT_OF_MEMORY"
    assert recs["3"].state == "PENDING" and recs["3"].reason == "BeginTime"
    assert recs["11"].node is None


def test_squeue_active_running_pending_timeout():
    recs = p.parse_squeue(fixture("squeue_active.txt"))
    assert recs["14"].state == "RUNNING"
    assert recs["14"].elapsed == timedelta(minutes=3, seconds=12)
    assert recs["15"].state == "PENDING" and "BeginTime" in recs["15"].message
    assert recs["13"].state == "TIMEOUT"


def test_scontrol_one_line_per_job():
    recs = p.parse_scontrol_jobs(fixture("scontrol_show_job.txt"))
    assert recs["2"].state == "FAILED" and recs["2"].exit_code == 3
    assert recs["8"].slurm_state == "OUT_OF_MEMORY"
    assert recs["13"].state == "RUNNING" and recs["13"].ended is None
    assert recs["1"].extra["StdOut"].endswith("/1.out")


def test_scontrol_no_accounting_failed_job():
    rec = p.parse_scontrol_jobs(fixture("scontrol_noacct_failed.txt"))["1"]
    assert (rec.state, rec.exit_code, rec.node) == ("FAILED", 3, "vm")


def test_scontrol_kv_values_with_spaces():
    kv = p.parse_scontrol_kv("JobId=5 JobName=a b c UserId=root(0) Reason=None Comment=x = y")
    assert kv["JobName"] == "a b c" and kv["UserId"] == "root(0)"


@pytest.mark.parametrize("raw,expected", [
    ("0:01", timedelta(seconds=1)),
    ("3:12", timedelta(minutes=3, seconds=12)),
    ("00:01:00", timedelta(minutes=1)),
    ("1:02:03", timedelta(hours=1, minutes=2, seconds=3)),
    ("2-00:00:00", timedelta(days=2)),
    ("365-00:00:00", timedelta(days=365)),
    ("1-02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("3-04", timedelta(days=3, hours=4)),
    ("3-04:05", timedelta(days=3, hours=4, minutes=5)),
    ("07:15.500", timedelta(minutes=7, seconds=15.5)),
    ("45", timedelta(seconds=45)),
    ("UNLIMITED", None), ("INVALID", None), ("", None), ("N/A", None),
    ("x-1:00", None), ("1:2:3:4", None), ("ab:cd", None),
])
def test_elapsed_formats(raw, expected):
    assert p.parse_elapsed(raw) == expected


def test_timelimit_day_formats_from_real_output():
    rows = [line.split("|") for line in fixture("sacct_timelimit.txt").splitlines()]
    limits = {r[0]: p.parse_elapsed(r[1]) for r in rows}
    assert limits == {"6": timedelta(days=2), "3": timedelta(minutes=1),
                      "13": timedelta(minutes=1), "14": timedelta(days=365)}


@pytest.mark.parametrize("raw,expected", [
    ("0:0", (0, None)), ("3:0", (3, None)), ("0:9", (0, 9)), ("0:125", (0, 125)),
    ("", (None, None)), ("x:y", (None, None)), ("2", (2, None)),
])
def test_exit_codes(raw, expected):
    assert p.parse_exit_code(raw) == expected


@pytest.mark.parametrize("raw,state", [
    ("COMPLETED", "COMPLETED"), ("CANCELLED by 12345", "CANCELLED"), ("CANCELLED+", "CANCELLED"),
    ("OUT_OF_MEMORY", "FAILED"), ("NODE_FAIL", "FAILED"), ("BOOT_FAIL", "FAILED"),
    ("DEADLINE", "TIMEOUT"), ("PREEMPTED", "FAILED"), ("COMPLETING", "RUNNING"),
    ("CONFIGURING", "PENDING"), ("REQUEUED", "PENDING"), ("SOMETHING_NEW", "RUNNING"),
])
def test_state_map(raw, state):
    assert p.map_state(raw) == state


def test_sinfo_nodes_merge_partitions_and_count_gpus_by_vendor():
    nodes = p.parse_sinfo_nodes(fixture("sinfo_nodes.txt"))
    assert len(nodes) == 1
    n = nodes[0]
    assert (n.name, n.state, n.cpus, n.memory_mb) == ("vm", "idle", 4, 16000)
    assert n.gpus == {"nvidia": 1, "amd": 1}
    assert n.partitions == ("debug", "short")
    assert n.available and n.cpus_allocated == 0


@pytest.mark.parametrize("raw,expected", [
    ("gpu:nvidia:1,gpu:amd:1", {"nvidia": 1, "amd": 1}),
    ("gpu:2(S:0-1)", {"gpu": 2}),
    ("gpu:a100:4(IDX:0-3),gpu:a100:2(IDX:0,1)", {"a100": 6}),
    ("gpu:nvidia:2(S:0,1),mps:100", {"nvidia": 2}),
    ("(null)", {}), ("", {}),
])
def test_gres(raw, expected):
    assert p.parse_gres(raw) == expected


def test_down_node_is_not_available():
    nodes = p.parse_sinfo_nodes("n1|down*|8|1000|(null)|debug*|0/0/8/8|N/A\n")
    assert not nodes[0].available and nodes[0].free_memory_mb is None


def test_version():
    assert p.parse_version(fixture("sinfo_version.txt")) == "22.05.8"


def test_sbatch_parsable():
    assert p.parse_sbatch_parsable("42\n") == "42"
    assert p.parse_sbatch_parsable("43;testlab\n") == "43"
    with pytest.raises(ValueError):
        p.parse_sbatch_parsable("sbatch: error: nope\n")


def test_sbatch_errors_become_one_line():
    assert p.sbatch_error_line(fixture("sbatch_bad_partition.stderr")) == \
        "Invalid partition name specified"
    assert p.sbatch_error_line(fixture("sbatch_bad_gres.stderr")) == \
        "Requested node configuration is not available"
    assert p.sbatch_error_line("") == "sbatch failed without a message"


def test_accounting_disabled_detection():
    assert p.accounting_disabled(fixture("sacct_disabled.stderr"))
    assert not p.accounting_disabled(fixture("scontrol_invalid.stderr"))


def test_a_job_squeue_shows_completed_exited_zero():
    """squeue has no exit code column, but COMPLETED means every process exited 0: a job
    that accounting has not caught up with yet still gives `result` its code."""
    recs = p.parse_squeue("14|COMPLETED|0:06|vm|None|2026-11-30T06:50:50|2026-11-30T06:50:51\n"
                          "15|RUNNING|0:03|vm|None|2026-11-30T06:50:50|2026-11-30T06:50:51\n"
                          "16|FAILED|0:01|vm|NonZeroExitCode|2026-11-30T06:50:50|"
                          "2026-11-30T06:50:51\n")
    assert [recs[n].exit_code for n in ("14", "15", "16")] == [0, None, None]


def test_pending_jobs_have_no_start_time_but_their_estimate():
    """Real output with backfill estimates: squeue's %S of a pending job is when Slurm
    expects to start it; sacct says Unknown; scontrol's StartTime is the estimate too."""
    queued = p.parse_squeue(fixture("squeue_pending_estimate.txt"))
    assert [queued[n].started for n in ("38", "39_0")] == [None, None]
    assert queued["37"].started == datetime(2026, 11, 30, 8, 52, 42)
    assert queued["38"].raw_id == "38" and queued["39_2"].raw_id == "39"
    acct = p.parse_sacct(fixture("sacct_pending_estimate_x.txt"))
    assert acct["38"].started is None and acct["39_1"].started is None
    fields = p.status_fields(queued["38"])
    assert fields["state_changed_at"] == datetime(2026, 11, 30, 8, 52, 44).astimezone()
    line = ("JobId=25 JobName=job.sh JobState=PENDING Reason=Resources "
            "SubmitTime=2026-11-30T08:50:20 StartTime=2026-11-30T09:00:18")
    assert p.parse_scontrol_jobs(line)["25"].started is None


def test_sacct_job_id_raw_is_the_last_column():
    recs = p.parse_sacct(fixture("sacct_array_done_x.txt"))
    assert [(recs[n].raw_id, recs[n].exit_code) for n in ("29_0", "29_1")] == [("30", 0),
                                                                               ("29", 4)]
    assert recs["29_1"].reason == "None"  # the column before it, whole


def test_scontrol_array_tasks_by_array_job_and_index():
    recs = p.parse_scontrol_jobs(fixture("scontrol_array_noacct.txt"))
    assert sorted(recs, key=p.id_key) == ["1_0", "1_1", "3_0", "3_1", "3_2", "3_3", "3_4",
                                          "3_5"]
    assert (recs["1_0"].raw_id, recs["1_0"].state) == ("2", "COMPLETED")
    assert (recs["1_1"].raw_id, recs["1_1"].exit_code) == ("1", 4)
    assert recs["3_4"].state == "CANCELLED" and recs["3_4"].raw_id == "3"
