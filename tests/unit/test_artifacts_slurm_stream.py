"""The Slurm fetch driver and its reader, run for real with bash, find and GNU tar on this
machine (LocalTransport: what a login node runs over SSH); the Slurm clients are not
needed because the driver only reads the work dir. The real cluster and login node are in
tests/integration/artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import pytest

from warpforge_launch.artifacts_store import MANIFEST, ArtifactStore, TransferError
from warpforge_launch.errors import InfrastructureError
from warpforge_launch.schedulers.slurm import SlurmConfig, SlurmScheduler
from warpforge_launch.schedulers.slurm_transport import LocalTransport


def make_job(work, native: str, files: dict[str, bytes]) -> None:
    out = work / f"output-{native}"
    for rel, data in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    (work / f"warpforge-{native}.out").write_text(f"SUCCESS job {native}\n")
    (work / f"warpforge-{native}.err").write_text("")


class Cut(LocalTransport):
    """A real pipe that ends after ``keep`` bytes: a login node that went away mid-stream."""

    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep

    def command(self, argv, timeout):
        full, env = super().command(argv, timeout)
        return ["bash", "-c", '"$@" | head -c "$KEEP"', "cut", *full], \
            {**os.environ, "KEEP": str(self.keep)}


@pytest.fixture
def work(tmp_path):
    d = tmp_path / "work dir"
    d.mkdir()
    return d


def scheduler(work, home, transport=None) -> SlurmScheduler:
    return SlurmScheduler("hpc", SlurmConfig(work_dir=str(work), runtime="none"), home=home,
                          transport=transport or LocalTransport())


def fetch(sched, store, ids):
    stagings = [store.stage(j) for j in ids]
    try:
        sched.fetch_outputs(stagings)
        return [store.commit(st, {}) for st in stagings]
    finally:
        store.close()


def test_many_jobs_in_one_round_trip_then_nothing_moves(work, tmp_path):
    big = os.urandom(300_000)
    for n in ("11", "12", "13"):
        make_job(work, n, {"model.mlir": b"module @main {}\n", "inputs/input_0.npy": big,
                           "odd name\nwith newline": b"x", "weights/w.npy": n.encode() * 9})
    sched, store = scheduler(work, tmp_path), ArtifactStore(tmp_path / "art")
    got = fetch(sched, store, ["hpc-11", "hpc-12", "hpc-13"])
    assert sched.calls["warpforge-fetch"] == 1 and sum(sched.calls.values()) == 1
    assert all(g.changed and g.files == 6 for g in got)
    first = sched.fetched_bytes.copy()
    assert first["archive"] > 3 * len(big) and first["wire"] > first["archive"]
    for n in ("11", "12", "13"):
        m = json.loads((tmp_path / "art" / f"hpc-{n}" / MANIFEST).read_text())
        for f in m["files"]:
            data = (tmp_path / "art" / f"hpc-{n}" / f["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["size"]
        assert {f["path"] for f in m["files"]} == {
            "output/model.mlir", "output/inputs/input_0.npy", "output/odd name\nwith newline",
            "output/weights/w.npy", "stdout.log", "stderr.log"}
    again = fetch(sched, store, ["hpc-11", "hpc-12", "hpc-13"])
    assert all(not g.changed and g.transferred_bytes == 0 for g in again)
    assert sched.fetched_bytes["archive"] == first["archive"]  # no archive was streamed
    assert sched.fetched_bytes["wire"] > first["wire"]  # the listing was
    assert sched.calls["warpforge-fetch"] == 2

    with open(work / "warpforge-12.out", "a") as f:  # one file changes at the source
        f.write("late line\n")
    third = fetch(sched, store, ["hpc-11", "hpc-12", "hpc-13"])
    assert [g.transferred_files for g in third] == [0, 1, 0]
    assert (tmp_path / "art" / "hpc-12" / "stdout.log").read_text().endswith(
        "late line\n")
    assert (tmp_path / "art" / "hpc-12" / "output" / "inputs" / "input_0.npy").read_bytes() \
        == big


def test_planted_links_are_refused_and_never_followed(work, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("private key")
    make_job(work, "21", {"model.mlir": b"m"})
    out = work / "output-21"
    (out / "evil").symlink_to(secret)
    (out / "up").symlink_to("../../secret")
    (out / "alias.mlir").symlink_to("model.mlir")  # stays inside: recorded, not recreated
    (out / "log").symlink_to("../warpforge-21.out")
    (out / "sub").mkdir()
    (out / "sub" / "dirlink").symlink_to(tmp_path)
    os.mkfifo(out / "pipe")
    make_job(work, "22", {"model.mlir": b"m"})
    (work / "output-22").rename(work / "real-22")
    (work / "output-22").symlink_to(tmp_path)  # the whole output dir is a link out
    (work / "warpforge-22.err").unlink()
    (work / "warpforge-22.err").symlink_to(secret)
    sched, store = scheduler(work, tmp_path), ArtifactStore(tmp_path / "art")
    a, b = fetch(sched, store, ["hpc-21", "hpc-22"])
    assert {r["path"] for r in a.refused} == {"output/evil", "output/up", "output/sub/dirlink",
                                               "output/pipe", "output/log"}
    # the output dir is the unit: the job's log beside it in the shared work dir is outside
    assert {r["reason"] for r in a.refused if r["path"] != "output/pipe"} == {
        "a symlink leading out of the job's output directory: not followed"}
    assert a.exit_code == 1 and b.exit_code == 1
    assert {r["path"] for r in b.refused} == {"output", "stderr.log"}
    landed = [p for p in (tmp_path / "art").rglob("*") if p.is_file()]
    assert all(p.read_bytes() != b"private key" for p in landed)
    assert not any(p.is_symlink() for p in (tmp_path / "art").rglob("*"))
    m = json.loads((tmp_path / "art" / "hpc-21" / MANIFEST).read_text())
    assert m["links"] == [{"path": "output/alias.mlir", "target": "model.mlir"}]
    assert {f["path"] for f in m["files"]} == {"output/model.mlir", "stdout.log",
                                               "stderr.log"}


def test_a_cut_stream_is_an_error_and_leaves_nothing_that_looks_complete(work, tmp_path):
    make_job(work, "31", {"model.mlir": b"m" * 200_000, "weights/w.npy": b"w" * 200_000})
    store = ArtifactStore(tmp_path / "art")
    for keep in (20, 30_000, 250_000):
        with pytest.raises(TransferError):
            fetch(scheduler(work, tmp_path, Cut(keep)), store, ["hpc-31"])
        assert not (tmp_path / "art" / "hpc-31").exists()
        assert [p.name for p in (tmp_path / "art").iterdir()] == []


def test_a_cut_stream_keeps_the_last_complete_fetch(work, tmp_path):
    make_job(work, "41", {"model.mlir": b"v1"})
    store = ArtifactStore(tmp_path / "art")
    fetch(scheduler(work, tmp_path), store, ["hpc-41"])
    (work / "output-41" / "model.mlir").write_bytes(b"v2" * 100_000)
    with pytest.raises(TransferError):
        fetch(scheduler(work, tmp_path, Cut(40_000)), store, ["hpc-41"])
    assert (tmp_path / "art" / "hpc-41" / "output" / "model.mlir").read_bytes() == b"v1"


def test_missing_work_dir_is_infrastructure(tmp_path):
    sched = scheduler(tmp_path / "gone", tmp_path)
    with pytest.raises(InfrastructureError, match="cannot enter the work dir"):
        fetch(sched, ArtifactStore(tmp_path / "art"), ["hpc-1"])


class Flip(LocalTransport):
    """A real pipe that flips one bit at byte ``at``: corruption the tar framing cannot see."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def command(self, argv, timeout):
        import sys

        full, env = super().command(argv, timeout)
        flip = ("import sys; d = sys.stdin.buffer.read(); i = int(sys.argv[1]); "
                "sys.stdout.buffer.write(d[:i] + bytes([d[i] ^ 1]) + d[i + 1:])")
        return ["bash", "-c", '"$@" | "$PY" -c "$FLIP" "$AT"', "flip", *full], \
            {**os.environ, "PY": sys.executable, "FLIP": flip, "AT": str(self.at)}


def test_a_corrupted_byte_fails_the_sha256_check_and_commits_nothing(work, tmp_path):
    make_job(work, "51", {"weights/w.npy": b"w" * 300_000})
    store = ArtifactStore(tmp_path / "art")
    with pytest.raises(TransferError, match="sha256 .* differs from the source's"):
        fetch(scheduler(work, tmp_path, Flip(150_000)), store, ["hpc-51"])
    assert not (tmp_path / "art" / "hpc-51").exists()
    fetch(scheduler(work, tmp_path), store, ["hpc-51"])  # the clean stream passes
    assert (tmp_path / "art" / "hpc-51" / "output" / "weights" / "w.npy").read_bytes() == \
        b"w" * 300_000


class NoOpenSSL(LocalTransport):
    """A login node without openssl: only the tools the driver needs are on its PATH."""

    def __init__(self, bin_dir, flip_at: int | None = None):
        super().__init__()
        bin_dir.mkdir(exist_ok=True)
        for tool in ("bash", "mktemp", "rm", "find", "sort", "comm", "sed", "xargs",
                     "sha256sum", "tar", "base64"):
            (bin_dir / tool).symlink_to(shutil.which(tool))
        self.path, self.flip_at = str(bin_dir), flip_at

    def command(self, argv, timeout):
        full, env = super().command(argv, timeout)
        env = {**(env or os.environ), "PATH": self.path}
        if self.flip_at is None:
            return full, env
        flip = ("import sys; d = sys.stdin.buffer.read(); i = int(sys.argv[1]); "
                "sys.stdout.buffer.write(d[:i] + bytes([d[i] ^ 1]) + d[i + 1:])")
        return [shutil.which("bash"), "-c", '"$@" | "$PY" -c "$FLIP" "$AT"', "flip", *full], \
            {**env, "PY": sys.executable, "FLIP": flip, "AT": str(self.flip_at)}


def test_without_openssl_the_sums_come_from_sha256sum(work, tmp_path):
    make_job(work, "61", {"weights/w.npy": b"w" * 300_000, "odd\nname": b"x"})
    store = ArtifactStore(tmp_path / "art")
    with pytest.raises(TransferError, match="sha256 .* differs from the source's"):
        fetch(scheduler(work, tmp_path, NoOpenSSL(tmp_path / "bin1", 150_000)), store,
              ["hpc-61"])
    assert not (tmp_path / "art" / "hpc-61").exists()
    got, = fetch(scheduler(work, tmp_path, NoOpenSSL(tmp_path / "bin2")), store, ["hpc-61"])
    assert got.changed and got.files == 4
    assert (tmp_path / "art" / "hpc-61" / "output" / "odd\nname").read_bytes() == b"x"


def test_a_job_without_output_files_gets_no_output_dir(work, tmp_path):
    (work / "warpforge-71.out").write_text("no output\n")
    (work / "warpforge-71.err").write_text("")
    make_job(work, "72", {})
    (work / "output-72").mkdir()  # an output dir holding only a link
    (work / "output-72" / "alias").symlink_to("nothing")
    got = fetch(scheduler(work, tmp_path), ArtifactStore(tmp_path / "art"), ["hpc-71", "hpc-72"])
    assert [g.files for g in got] == [2, 2]
    for n in ("71", "72"):
        assert sorted(p.name for p in (tmp_path / "art" / f"hpc-{n}").iterdir()) == [
            MANIFEST, "stderr.log", "stdout.log"]
