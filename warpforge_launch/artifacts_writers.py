"""Write arriving files on a few threads while the caller goes on reading the stream.

Fetching many small files spends its time creating them, mostly inside the kernel (inode
allocation), where threads run in parallel while Python reads and checks the next members.
Each Staging is bound to one thread, so no Staging is ever touched by two at once; the bytes
waiting in the queues are bounded (BUDGET), and a file larger than a batch (BATCH) is
streamed to disk by the caller itself once the threads are idle.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from warpforge_launch.artifacts_store import Staging

THREADS = 2
BUDGET = 32 << 20  # bytes read but not yet written
BATCH = 4 << 20  # a file larger than this is written at once, streamed


class Writers:
    """``put`` queues one file's data for its Staging's thread; ``close`` waits for all of
    them and raises the first error any write met (later writes are skipped after one)."""

    def __init__(self, threads: int = THREADS, budget: int = BUDGET):
        self._budget = budget
        self._queued = 0
        self._cond = threading.Condition()
        self._queues: list[deque] = [deque() for _ in range(threads)]
        self._slots: dict[int, int] = {}
        self._error: BaseException | None = None
        self._closing = self._dropped = False
        self._pending: list[tuple] = []
        self._pending_bytes = 0
        self._threads = [threading.Thread(target=self._run, args=(q,), daemon=True,
                                          name=f"wf-fetch-writer-{i}")
                         for i, q in enumerate(self._queues)]
        for t in self._threads:
            t.start()

    def put(self, st: Staging, path: str, chunks: Iterable[bytes], *, size: int,
            mtime_ns: int, source_mtime: str) -> None:
        """Read ``chunks`` (``size`` bytes) now; write them soon, or now when large."""
        if size > BATCH:  # alone, streamed: wait until nothing else is in flight
            self._flush()
            with self._cond:
                self._cond.wait_for(lambda: not self._queued or self._error)
                self._raise()
            st.write(path, chunks, size=size, mtime_ns=mtime_ns, source_mtime=source_mtime)
            return
        data = b"".join(chunks)
        if self._pending and self._pending[0][0] is not st or \
                self._pending_bytes + size > BATCH:
            self._flush()
        self._pending.append((st, path, data, size, mtime_ns, source_mtime))
        self._pending_bytes += size

    def make_dirs(self, st: Staging, *parents: str) -> None:
        """Make these dirs of ``st`` on its thread, while the caller waits for the source."""
        self._flush()
        with self._cond:
            slot = self._slots.setdefault(id(st), len(self._slots) % len(self._queues))
            self._queued += 1  # counted, so that a large file waits for it too
            self._queues[slot].append([(st, None, parents, 1, 0, "")])
            self._cond.notify_all()

    def _flush(self) -> None:
        """Hand the files gathered for one Staging to its thread in one go (one wake-up per
        job rather than per file)."""
        if not self._pending:
            return
        batch, size = self._pending, self._pending_bytes
        self._pending, self._pending_bytes = [], 0
        st = batch[0][0]
        with self._cond:
            self._cond.wait_for(lambda: self._queued + size <= self._budget or self._error)
            self._raise()
            slot = self._slots.setdefault(id(st), len(self._slots) % len(self._queues))
            self._queued += size
            self._queues[slot].append(batch)
            self._cond.notify_all()

    def close(self, *, quiet: bool = False) -> None:
        """Wait for every queued write and raise the first error; ``quiet``: the fetch
        failed already, so what is still queued is dropped (its staging dir goes too)."""
        if not quiet:
            self._flush()
        with self._cond:
            if quiet:
                self._dropped = True
            self._closing = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        if not quiet:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self, q: deque) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: q or self._closing)
                if not q:
                    return
                batch = q.popleft()
            try:
                for st, path, data, size, mtime_ns, source_mtime in batch:
                    if self._error is not None or self._dropped:
                        break
                    if path is None:
                        st.make_dirs(*data)
                    else:
                        st.write(path, (data,), size=size, mtime_ns=mtime_ns,
                                 source_mtime=source_mtime)
            except BaseException as exc:  # handed to the reading thread
                if self._error is None:
                    self._error = exc
            finally:
                with self._cond:
                    self._queued -= sum(item[3] for item in batch)
                    self._cond.notify_all()
