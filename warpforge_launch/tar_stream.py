"""Read a tar stream member by member without tarfile's per-member objects (``TarFile``
builds a buffered file object per member; for hundreds of small files that costs more than
the files).

Only what GNU ``tar -c --format=gnu`` of regular files produces is expected: plain headers
and ``././@LongLink`` long names. Every header is parsed and checked by tarfile itself
(``TarInfo.frombuf``); member data is handed out without copies. Member types other than
regular files are handed to the caller to refuse.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator

BLOCK = 512
_ZERO = bytes(BLOCK)
CHUNK = 1 << 20


class TarStream:
    """``members()`` yields ``(TarInfo, chunks)``; read ``chunks`` (or not) before the next
    member. ``read1`` returns the next bytes of the stream, ``b""`` at its end."""

    def __init__(self, read1: Callable[[], bytes], initial: bytes = b""):
        self._read1 = read1
        self._buf = bytes(initial)  # replaced, never mutated: chunks handed out stay valid
        self._pos = 0
        self._left = 0  # data bytes of the current member not handed out yet

    def _more(self) -> None:
        chunk = self._read1()
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        self._buf = self._buf[self._pos:] + chunk if self._pos < len(self._buf) else chunk
        self._pos = 0

    def _take(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            self._more()
        data = self._buf[self._pos:self._pos + n]
        self._pos += n
        return data

    def _skip(self, n: int) -> None:
        while n > 0:
            if self._pos >= len(self._buf):
                self._more()
            step = min(n, len(self._buf) - self._pos)
            self._pos += step
            n -= step

    def _chunks(self) -> Iterator[memoryview]:
        while self._left > 0:
            if self._pos >= len(self._buf):
                self._more()
            n = min(self._left, len(self._buf) - self._pos, CHUNK)
            data = memoryview(self._buf)[self._pos:self._pos + n]  # no copy
            self._pos += n
            self._left -= n
            yield data

    def members(self) -> Iterator[tuple[tarfile.TarInfo, Iterator[bytes]]]:
        long_name = None
        while True:
            block = self._take(BLOCK)
            if block == _ZERO:  # end of archive (the rest is padding)
                return
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise tarfile.ReadError(f"bad header: {exc}") from None
            padding = -info.size % BLOCK
            if info.type == tarfile.GNUTYPE_LONGNAME:
                long_name = self._take(info.size).split(b"\0", 1)[0].decode(
                    "utf-8", "surrogateescape")
                self._skip(padding)
                continue
            if long_name is not None:
                info.name, long_name = long_name, None
            self._left = info.size
            yield info, self._chunks()
            self._skip(self._left + padding)
            self._left = 0

