"""The Slurm read driver (slurm_remote.READ_DRIVER) run for real by bash on this machine,
over a work dir laid out as Slurm jobs leave it: `results` of many jobs is one round trip
with no status call, the caps hold, and no symlink a job left behind is ever followed.
(Slurm itself is not needed: the statuses are given, as the job store gives them.)"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from warpforge_launch.errors import UsageError
from warpforge_launch.jobs import JobState, JobStatus, utcnow
from warpforge_launch.schedulers import slurm_remote as remote
from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler
from warpforge_launch.schedulers.slurm_transport import LocalTransport

SECRET = "top secret line\n"


def job(work: Path, native: str, *, mlir: str = "", out: str = "", err: str = "") -> Path:
    (work / f"warpforge-{native}.out").write_text(out or f"SUCCESS {native}\n")
    (work / f"warpforge-{native}.err").write_text(err)
    o = work / f"output-{native}"
    (o / "weights").mkdir(parents=True)
    (o / "weights" / "w 0.npy").write_bytes(b"\x93NUMPY")
    (o / "model.mlir").write_text(mlir or f"module @m{native} {{ stablehlo.return }}\n")
    (o / "manifest.json").write_text('{"ok": true}')
    return o


def done(job_id: str, state=JobState.COMPLETED, exit_code=0) -> JobStatus:
    return JobStatus(job_id, None, state, utcnow(), elapsed=timedelta(seconds=2),
                     message="exit code 3" if exit_code else None,
                     scheduler_metadata={"exit_code": exit_code})


@pytest.fixture
def work(tmp_path) -> Path:
    w = tmp_path / "work"
    w.mkdir()
    return w


@pytest.fixture
def secret(tmp_path) -> Path:
    s = tmp_path / "secret"
    s.write_text(SECRET)
    return s


@pytest.fixture
def sched(tmp_path, work):
    s = SlurmScheduler("hpc", SlurmConfig(work_dir=str(work)), home=tmp_path / "home",
                       transport=LocalTransport())
    yield s
    s.close()


def shown(result) -> str:
    return " ".join(str(v) for v in result.to_dict().values())


def test_results_of_many_finished_jobs_is_one_read_and_no_status_call(sched, work):
    for n in ("7", "8", "9_0", "9_1"):
        job(work, n)
    (work / "warpforge-8.err").write_text("model exploded\n")
    known = {f"hpc-{n}": done(f"hpc-{n}") for n in ("7", "9_0", "9_1")}
    known["hpc-8"] = done("hpc-8", JobState.FAILED, 3)
    got = sched.results(known)
    assert sched.calls == {"warpforge-read": 1}  # no squeue, no sacct: the statuses are known
    assert list(got) == list(known)
    for n in ("7", "9_0", "9_1"):
        r = got[f"hpc-{n}"]
        assert r.success and r.exit_code == 0 and r.error_message is None
        assert r.mlir_output == f"module @m{n} {{ stablehlo.return }}\n"
        assert r.outputs == tuple(f"{work}/output-{n}/{p}" for p in
                                  ("manifest.json", "model.mlir", "weights/w 0.npy"))
        assert r.log_tail == f"SUCCESS {n}"
        assert r.execution_time == timedelta(seconds=2)
    bad = got["hpc-8"]
    assert not bad.success and bad.exit_code == 3
    assert bad.error_message == "failed; exit code 3; model exploded"
    # the same as each job read on its own
    for job_id, status in known.items():
        assert sched.results({job_id: status}) == {job_id: got[job_id]}


def test_results_refuse_a_job_that_has_not_finished(sched, work):
    job(work, "7")
    with pytest.raises(UsageError, match="has not finished"):
        sched.results({"hpc-7": JobStatus("hpc-7", None, JobState.RUNNING, utcnow())})
    assert not sched.calls


def test_many_ids_are_read_in_chunks(sched, work, monkeypatch):
    monkeypatch.setattr(remote, "READ_MAX_JOBS", 2)
    natives = [str(n) for n in range(10, 15)]
    for n in natives:
        job(work, n)
    got = sched.results({f"hpc-{n}": done(f"hpc-{n}") for n in natives})
    assert sched.calls == {"warpforge-read": 3}
    assert all(got[f"hpc-{n}"].mlir_output.startswith(f"module @m{n} ") for n in natives)


def test_logs_are_tails_and_follow_reads_from_offsets(sched, work):
    big = "".join(f"line {i:07d}\n" for i in range(40000))  # 520,000 bytes
    job(work, "5", out=big, err="warning\n")
    files = sched._read_jobs(["5"], "logs")["5"]
    assert files["out"] == big[-256 * 1024:] and files["err"] == "warning\n"
    assert "list" not in files and "mlir" not in files  # logs read no output files
    assert "".join(sched.logs("hpc-5")) == big[-256 * 1024:] + "warning\n"
    step = sched._read_jobs(["5"], "from", (len(big) - 12, 3))["5"]
    assert step["out"] == big[-12:] and step["err"] == "ning\n"
    first = sched._read_jobs(["5"], "from", (0, 0))["5"]
    assert first["out"] == big[:256 * 1024] and first["out_bytes"] == str(256 * 1024)


def test_a_listing_cut_at_its_cap_drops_its_unfinished_line():
    import base64

    cut = base64.b64encode(b"a.txt\nb.txt\nc.t").decode()
    assert remote.read_jobs(f"WF 3 list {cut}\n")["3"]["list"] == "a.txt\nb.txt\n"


@pytest.mark.parametrize("planted", ["model.mlir", "manifest.json", "out", "err", "output dir"])
def test_a_planted_symlink_is_never_followed(sched, work, secret, tmp_path, planted):
    o = job(work, "557")
    if planted == "output dir":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "model.mlir").write_text(SECRET)
        (elsewhere / "manifest.json").write_text(SECRET)
        os.rename(o, tmp_path / "moved")
        o.symlink_to(elsewhere)
        link = o
    elif planted in ("out", "err"):
        link = work / f"warpforge-557.{planted}"
        link.unlink()
        link.symlink_to(secret)
    else:
        link = o / planted
        link.unlink()
        link.symlink_to(secret)
    result = sched.results({"hpc-557": done("hpc-557")})["hpc-557"]
    assert "top secret" not in shown(result)
    assert not result.success
    assert result.error_message == (f"refused {link}: a symlink or not a regular file "
                                    "(never followed)")
    if planted == "model.mlir":
        assert result.mlir_output is None
        assert f"{o}/model.mlir" not in result.outputs  # the listing holds regular files only
    if planted == "output dir":
        assert result.outputs == () and result.mlir_output is None
    logs = "".join(sched.logs("hpc-557"))
    assert "top secret" not in logs
    assert (f"[refused {link}: a symlink or not a regular file (never followed)]"
            in logs) == (planted in ("out", "err"))
    follow = sched._read_jobs(["557"], "from", (0, 0))["557"]
    assert "top secret" not in "".join(follow.values())


def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(sched, work):
    o = job(work, "9")
    (o / "model.mlir").unlink()
    os.mkfifo(o / "model.mlir")
    t0 = time.monotonic()
    result = sched.results({"hpc-9": done("hpc-9")})["hpc-9"]
    assert time.monotonic() - t0 < 10
    assert result.mlir_output is None and "refused" in result.error_message


def test_ids_that_are_not_slurm_ids_never_reach_the_driver(sched, work):
    from warpforge_launch.errors import NotFoundError

    with pytest.raises(NotFoundError):
        sched.results({"hpc-../etc": done("hpc-../etc")})
    assert not sched.calls
