"""`warpforge-launch fetch` against the real backends: the Local scheduler's job dirs, the Ray
head's shared output root, and the Slurm cluster's work dir through the SSH login node (one
archive in one round trip). What landed is checked against the manifest byte for byte, a
second fetch moves nothing, and a symlink planted in a job's output dir is refused."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import run_cli, wait_finished
from tests.testlab import slurm as slurm_lab
from tests.testlab.builders import definition, inventory, local_inventory, model_file
from tests.testlab.payload import behaviour
from warpforge_launch import artifacts
from warpforge_launch.jobs import ResourceRequirements
from warpforge_launch.launcher import Launcher

MODEL = Path(__file__).parents[2] / "unit" / "fixtures" / "slurm" / "models" / "simple_mlp.py"
SMALL = ResourceRequirements(memory_mb=200)
ARCHIVE_FLOOR = 10240  # GNU tar pads every archive to one 10 KiB record


def check_manifest(job_dir: Path) -> dict:
    """Every file the manifest lists is there with its sha256 and size, and nothing else."""
    m = json.loads((job_dir / "artifacts.json").read_text())
    assert m["kind"] == "warpforge-artifacts" and m["job_id"] == job_dir.name
    listed = {f["path"]: f for f in m["files"]}
    on_disk = {str(p.relative_to(job_dir)) for p in job_dir.rglob("*")
               if p.is_file() and p.name != "artifacts.json"}
    assert on_disk == set(listed)
    for path, f in listed.items():
        data = (job_dir / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
    return m


# -- Local ------------------------------------------------------------------------------------
def test_local_fetch_cli_then_nothing_moves_and_bad_ids_exit_2(tmp_path, _private_home):
    inv = local_inventory(tmp_path / "inv.yaml")
    src = model_file(tmp_path)
    with Launcher(str(inv)) as launcher:
        ok = launcher.submit(definition(src))
        failed = launcher.submit(definition(src, env=behaviour(exit=3, stderr="boom")))
        slow = launcher.submit(definition(src, env=behaviour(sleep=60)))
        wait_finished(launcher, [ok, failed])
    base = ["--inventory", str(inv)]
    r = run_cli(*base, "fetch", ok, failed, "--json", check_json=True)
    assert r.returncode == 0, r.stderr
    assert [f["job_id"] for f in r.json] == [ok, failed]
    assert all(f["changed"] and f["transferred_bytes"] > 0 for f in r.json)
    m = check_manifest(_private_home / "artifacts" / ok)
    assert {"output/model.mlir", "output/manifest.json", "stdout.log",
            "stderr.log"} <= {f["path"] for f in m["files"]}
    assert m["status"]["state"] == "COMPLETED" and m["scheduler"] == {"instance": "local",
                                                                       "type": "local"}
    assert m["definition"]["source"] == str(src) and m["timings"]["elapsed_seconds"] >= 0
    fm = check_manifest(_private_home / "artifacts" / failed)
    assert fm["status"]["state"] == "FAILED"
    assert "boom" in (_private_home / "artifacts" / failed / "stderr.log").read_text()

    again = run_cli(*base, "fetch", ok, failed, "--json", check_json=True)
    assert again.returncode == 0
    assert all(not f["changed"] and f["transferred_bytes"] == 0 for f in again.json)

    r = run_cli(*base, "fetch", ok, slow)
    assert r.returncode == 2 and r.stderr.startswith("error: not finished yet, nothing fetched")
    assert slow not in {p.name for p in (_private_home / "artifacts").iterdir()}
    r = run_cli(*base, "fetch", "local-deadbeef")
    assert r.returncode == 2 and "no local job" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(*base, "fetch", "nosuch-1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli(*base, "result", ok, "--fetch", "--to", str(tmp_path / "elsewhere"))
    assert r.returncode == 0 and f"{ok}: " in r.stdout
    check_manifest(tmp_path / "elsewhere" / ok)
    listed = run_cli("artifacts", "list", "--json", check_json=True)
    assert {row["job_id"] for row in listed.json} == {ok, failed}
    run_cli(*base, "cancel", slow)


def finished_local_job(tmp_path, home: Path) -> tuple[Path, str, Path, Path]:
    """(inventory, job id, its out dir, a secret file outside it) of a finished Local job."""
    inv = local_inventory(tmp_path / "inv.yaml")
    secret = tmp_path / "secret"
    secret.write_text("private key")
    with Launcher(str(inv)) as launcher:
        job = launcher.submit(definition(model_file(tmp_path)))
        wait_finished(launcher, [job])
    return inv, job, home / "local" / "local" / job.removeprefix("local-") / "out", secret


def test_local_planted_symlink_is_refused(tmp_path, _private_home):
    inv, job, out, secret = finished_local_job(tmp_path, _private_home)
    (out / "weights").mkdir(exist_ok=True)
    (out / "weights" / "weight_0.npy").symlink_to(secret)
    (out / "inner").symlink_to("../stdout.log")  # the job's own log: outside its output dir
    r = run_cli("--inventory", str(inv), "fetch", job)
    assert r.returncode == 1
    assert (f"error: {job}: refused output/weights/weight_0.npy -> {secret}: a symlink "
            "leading out of the job's output directory: not followed") in r.stderr
    assert (f"error: {job}: refused output/inner -> ../stdout.log: a symlink leading out of "
            "the job's output directory: not followed") in r.stderr
    job_dir = _private_home / "artifacts" / job
    m = check_manifest(job_dir)
    assert sorted(x["path"] for x in m["refused"]) == ["output/inner",
                                                      "output/weights/weight_0.npy"]
    assert "private key" not in "".join(p.read_text() for p in job_dir.rglob("*") if p.is_file())


def test_a_refetch_keeps_what_the_source_lost(tmp_path, _private_home):
    """The artifact store outlives the backend's copy: a file deleted at the source, or
    replaced by a link that is refused, keeps the copy the last fetch verified."""
    inv, job, out, secret = finished_local_job(tmp_path, _private_home)
    r = run_cli("--inventory", str(inv), "fetch", job)
    assert r.returncode == 0, r.stderr
    job_dir = _private_home / "artifacts" / job
    mlir = (job_dir / "output" / "model.mlir").read_bytes()
    (out / "model.mlir").unlink()
    (out / "manifest.json").unlink()
    (out / "manifest.json").symlink_to(secret)
    r = run_cli("--inventory", str(inv), "fetch", job, "--json", check_json=True)
    assert r.returncode == 1  # the link is refused
    (got,) = r.json
    assert got["kept_gone"] == ["output/manifest.json", "output/model.mlir"]
    assert "warning" not in r.stdout
    m = check_manifest(job_dir)  # the kept files are on disk as the manifest says
    assert (job_dir / "output" / "model.mlir").read_bytes() == mlir
    assert "private key" not in (job_dir / "output" / "manifest.json").read_text()
    assert any("kept 2 file(s) of the last fetch" in n for n in m["notes"])
    r = run_cli("--inventory", str(inv), "fetch", job)
    assert r.returncode == 1 and "warning: " + job + ": kept 2 file(s)" in r.stderr


# -- Ray --------------------------------------------------------------------------------------
def test_ray_fetch_from_the_shared_output_root(ray_head, fake_snakegrinder, output_root,
                                               tmp_path, _private_home):
    inv = inventory(tmp_path / "inv.yaml", {"ray": {
        "type": "ray", "dashboard_url": ray_head.url, "snakegrinder": str(fake_snakegrinder),
        "output_root": str(output_root), "connect_timeout": 2, "request_timeout": 15}})
    src = model_file(tmp_path)
    with Launcher(str(inv)) as launcher:
        jobs = [launcher.submit(definition(src)) for _ in range(2)]
        wait_finished(launcher, jobs)
        first = artifacts.fetch(launcher, jobs)
        assert all(f.changed and f.exit_code == 0 for f in first)
        for job in jobs:
            m = check_manifest(_private_home / "artifacts" / job)
            paths = {f["path"] for f in m["files"]}
            assert {"output/model.mlir", "output/manifest.json", "stdout.log"} <= paths
            mlir = (_private_home / "artifacts" / job / "output" / "model.mlir").read_text()
            assert "stablehlo" in mlir
            log = (_private_home / "artifacts" / job / "stdout.log").read_text()
            assert "SUCCESS" in log
        again = artifacts.fetch(launcher, jobs)
        assert all(not f.changed and f.transferred_bytes == 0 and f.transferred_files == 0
                   for f in again)
        # a link planted in the job's output directory on the shared root, pointing out of it
        secret = tmp_path / "secret"
        secret.write_text("private key")
        sid = jobs[0].removeprefix("ray-")
        (output_root / sid / "evil.npy").symlink_to(secret)
        third = artifacts.fetch(launcher, jobs[:1])[0]
    assert third.exit_code == 1 and third.refused[0]["path"] == "output/evil.npy"
    assert third.transferred_bytes == 0
    m = check_manifest(_private_home / "artifacts" / jobs[0])
    assert m["refused"][0]["target"] == str(secret)


# -- Slurm through the SSH login node ---------------------------------------------------------
@pytest.fixture
def stop_masters(_private_home):
    """The shared SSH connections this test's launcher and CLI calls opened (ControlPersist
    keeps them for minutes otherwise)."""
    opened = []
    yield opened.append
    for sched in opened:
        sched.transport.stop_master()


def test_slurm_fetch_through_the_login_node_in_one_round_trip(slurm_cluster, shared_dir,
                                                              login_node, tmp_path,
                                                              _private_home, stop_masters):
    inv = slurm_lab.login_inventory(tmp_path / "inv.yaml", shared_dir, login_node)
    with Launcher(str(inv)) as launcher:
        jobs = [launcher.submit(definition(MODEL, resources=SMALL)) for _ in range(3)]
        jobs.append(launcher.submit(definition(MODEL, resources=SMALL, env=behaviour(exit=3))))
        wait_finished(launcher, jobs)
        sched = launcher._for_record(launcher.store.get(jobs[0]))
        stop_masters(sched)
        sched.calls.clear()
        first = artifacts.fetch(launcher, jobs)
        assert sched.calls["warpforge-fetch"] == 1  # one archive for all four jobs
        assert all(f.changed and f.exit_code == 0 for f in first)
        first_archive = sched.fetched_bytes["archive"]
        assert first_archive > ARCHIVE_FLOOR
        user_dir = slurm_lab.user_work_dir(shared_dir, login_node["user"])
        for job in jobs:
            job_dir = _private_home / "artifacts" / job
            m = check_manifest(job_dir)
            native = job.removeprefix("hpc-")
            remote = user_dir / f"output-{native}"
            for f in m["files"]:
                if f["path"].startswith("output/"):
                    src = remote / f["path"].removeprefix("output/")
                    assert hashlib.sha256(src.read_bytes()).hexdigest() == f["sha256"]
            out_log = (job_dir / "stdout.log").read_bytes()
            assert out_log == (user_dir / f"warpforge-{native}.out").read_bytes()
            assert m["scheduler"]["type"] == "slurm" and m["native_id"] == native
            assert login_node["host"] in m["source"]
        assert "stablehlo" in (_private_home / "artifacts" / jobs[0] / "output" /
                               "model.mlir").read_text()
        assert m["status"]["state"] == "FAILED"

        again = artifacts.fetch(launcher, jobs)
        assert sched.calls["warpforge-fetch"] == 2
        assert all(not f.changed and f.transferred_bytes == 0 for f in again)
        assert sched.fetched_bytes["archive"] == first_archive  # a listing, and no archive
    r = run_cli("--inventory", str(inv), "fetch", *jobs, "--json", check_json=True)
    assert r.returncode == 0 and all(f["transferred_bytes"] == 0 for f in r.json)


def test_slurm_planted_symlink_is_refused_over_ssh(slurm_cluster, shared_dir, login_node,
                                                   tmp_path, _private_home, stop_masters):
    inv = slurm_lab.login_inventory(tmp_path / "inv.yaml", shared_dir, login_node)
    with Launcher(str(inv)) as launcher:
        job = launcher.submit(definition(MODEL, resources=SMALL))
        wait_finished(launcher, [job])
        stop_masters(launcher._for_record(launcher.store.get(job)))
    out = slurm_lab.user_work_dir(shared_dir, login_node["user"]) / f"output-{job[4:]}"
    # readable by the login user, outside the job's output directory: must not be copied
    secret = shared_dir / "secret-for-fetch"
    secret.write_text("private key")
    secret.chmod(0o644)
    (out / "evil").symlink_to(secret)
    try:
        r = run_cli("--inventory", str(inv), "fetch", job)
    finally:
        (out / "evil").unlink()
    assert r.returncode == 1, r.stderr
    assert (f"error: {job}: refused output/evil -> {secret}: a symlink leading out of the "
            "job's output directory: not followed") in r.stderr
    job_dir = _private_home / "artifacts" / job
    m = check_manifest(job_dir)
    assert [x["path"] for x in m["refused"]] == ["output/evil"]
    assert "private key" not in "".join(p.read_text(errors="replace")
                                        for p in job_dir.rglob("*") if p.is_file())


def test_slurm_fetch_of_an_unreachable_login_node_exits_3(slurm_cluster, shared_dir, tmp_path,
                                                          _private_home):
    """A job the store knows, whose login node is down: exit 3 and nothing half-fetched."""
    from warpforge_launch.jobs import JobState, JobStatus, utcnow
    from warpforge_launch.store import JobRecord

    inv = slurm_lab.login_inventory(tmp_path / "inv.yaml", shared_dir, {
        "host": "127.0.0.1", "port": 1, "user": "nobody", "identity_file": str(tmp_path / "k"),
        "known_hosts_file": str(tmp_path / "kh")})
    with Launcher(str(inv)) as launcher:
        config = launcher.inventory.scheduler("hpc").config
        from warpforge_launch import codec

        status = JobStatus("hpc-999", None, JobState.COMPLETED, utcnow())
        launcher.store.add(JobRecord(
            "hpc-999", "hpc", "slurm", "999", "00000000-0000-4000-8000-000000000000", "x",
            "me", utcnow(), {}, {}, codec.to_jsonable(config), status))
    r = run_cli("--inventory", str(inv), "fetch", "hpc-999")
    assert r.returncode == 3, r.stderr
    assert "cannot reach login node" in r.stderr and "Traceback" not in r.stderr
    assert not (_private_home / "artifacts" / "hpc-999").exists()
