"""artifacts_writers.Writers: files handed over while the stream is read are written on the
writer threads, each Staging by one thread; a write's error reaches the reader."""

from __future__ import annotations

import hashlib
import threading

import pytest

from warpforge_launch import artifacts_writers
from warpforge_launch.artifacts_store import MANIFEST, ArtifactStore, TransferError


def test_many_jobs_written_and_hashed_each_by_one_thread(tmp_path, monkeypatch):
    seen: dict[str, set[str]] = {}
    real = artifacts_writers.Staging.write

    def write(self, *a, **kw):
        seen.setdefault(self.job_id, set()).add(threading.current_thread().name)
        return real(self, *a, **kw)

    monkeypatch.setattr(artifacts_writers.Staging, "write", write)
    store = ArtifactStore(tmp_path / "art")
    stagings = [store.stage(f"hpc-{n}") for n in range(12)]
    writers = artifacts_writers.Writers()
    for k in range(5):  # interleaved: a job's files come in several batches
        for st in stagings:
            data = f"{st.job_id} file {k}\n".encode() * (k + 1)
            writers.put(st, f"output/d{k}/f{k}", [data[:3], data[3:]], size=len(data),
                        mtime_ns=1_700_000_000_000_000_000, source_mtime="t")
    writers.close()
    for st in stagings:
        assert len(seen[st.job_id]) == 1 and st.new.keys() == {f"output/d{k}/f{k}"
                                                                 for k in range(5)}
        for path, entry in st.new.items():
            data = (st.dir / path).read_bytes()
            assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.size == len(data)
        store.commit(st, {})
    store.close()
    assert (tmp_path / "art" / "hpc-11" / MANIFEST).is_file()
    assert len({name for names in seen.values() for name in names}) == 2


def test_a_file_larger_than_a_batch_is_streamed_by_the_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts_writers, "BATCH", 1000)
    store = ArtifactStore(tmp_path / "art")
    st = store.stage("hpc-1")
    writers = artifacts_writers.Writers()
    writers.put(st, "output/small", [b"s" * 10], size=10, mtime_ns=1, source_mtime="t")

    def chunks():
        assert not writers._queued  # the small file was written before this one is read
        yield b"b" * 3000
        yield b"c" * 3000

    writers.put(st, "output/big", chunks(), size=6000, mtime_ns=1, source_mtime="t")
    writers.close()
    assert (st.dir / "output" / "big").read_bytes() == b"b" * 3000 + b"c" * 3000
    assert st.new["output/small"].size == 10
    store.close()


def test_a_failed_write_is_raised_by_close_and_later_puts(tmp_path):
    store = ArtifactStore(tmp_path / "art")
    st = store.stage("hpc-1")
    writers = artifacts_writers.Writers()
    writers.put(st, "output/a", [b"1"], size=1, mtime_ns=1, source_mtime="t")
    writers.put(st, "output/a", [b"2"], size=1, mtime_ns=1, source_mtime="t")  # twice
    with pytest.raises(TransferError, match="arrived twice"):
        writers.close()
    store.close()
