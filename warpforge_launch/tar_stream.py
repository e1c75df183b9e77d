"""Read a tar stream member by member without tarfile's per-member objects (``TarFile``
builds a buffered file object per member and parses every header field through several
layers; for hundreds of small files that costs more than the files).

Only what GNU ``tar -c --format=gnu`` of regular files produces is expected: plain headers
and ``././@LongLink`` long names. A plain GNU header is read quickly (name, size, type, and
its checksum checked); any other header goes to ``tarfile.TarInfo.frombuf``, which checks
it in full. Member types other than regular files are handed to the caller to refuse.
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
            info = _plain(block)
            if info is None:  # anything unusual: tarfile's own parser decides
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


def _plain(block: bytes) -> tarfile.TarInfo | None:
    """The common header quickly: GNU magic, octal size, a checksum that holds; else None.
    Only name, size and type are read (all the fetch uses)."""
    if block[257:265] != b"ustar  \0":
        return None
    try:
        size = int(block[124:136].split(b"\0", 1)[0] or b"0", 8)
        checksum = int(block[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
    except ValueError:  # base-256 sizes and the like
        return None
    if checksum != sum(block) - sum(block[148:156]) + 8 * 32:
        return None
    info = tarfile.TarInfo(block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape"))
    info.size, info.type = size, block[156:157]
    return info
