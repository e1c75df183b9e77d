"""Read a tar stream member by member without tarfile's per-member objects (``TarFile``
builds a buffered file object per member; for hundreds of small files that costs more than
the files).

Only what GNU ``tar -c --format=gnu`` of regular files produces is expected: plain headers
and ``././@LongLink`` long names. A plain GNU header is parsed here (name, size, type) after
its checksum is checked; any other header goes through tarfile's own parser
(``TarInfo.frombuf``). Member data is handed out without copies. Member types other than
regular files are handed to the caller to refuse.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator

BLOCK = 512
_ZERO = bytes(BLOCK)
CHUNK = 1 << 20
_GNU_MAGIC = b"ustar  \0"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)


class Member:
    """What the caller needs of a header: its name, data size and type."""

    __slots__ = ("name", "size", "type")

    def __init__(self, name: str, size: int, type: bytes):
        self.name, self.size, self.type = name, size, type

    def isreg(self) -> bool:
        return self.type in _REGULAR


def parse_header(block: bytes) -> Member:
    """One 512-byte header; tarfile.ReadError when it is damaged."""
    size_field = block[124:136]
    if block[257:265] == _GNU_MAGIC and not size_field[0] & 0x80:  # not base-256
        try:
            want = int(block[148:156].split(b"\0", 1)[0].strip() or b"0", 8)
            size = int(size_field.split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            raise tarfile.ReadError("bad header: invalid number field") from None
        if sum(block) - sum(block[148:156]) + 256 == want:  # the field counts as 8 spaces
            name = block[:100].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            kind = block[156:157]
            if kind == tarfile.AREGTYPE and name.endswith("/"):  # as tarfile reads it
                kind = tarfile.DIRTYPE
            return Member(name, size, kind)
    try:  # anything else, or a bad checksum: tarfile decides (and names the error)
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise tarfile.ReadError(f"bad header: {exc}") from None
    return Member(info.name, info.size, info.type)


class TarStream:
    """``members()`` yields ``(Member, chunks)``; read ``chunks`` (or not) before the next
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

    def members(self) -> Iterator[tuple[Member, Iterator[bytes]]]:
        long_name = None
        while True:
            block = self._take(BLOCK)
            if block == _ZERO:  # end of archive (the rest is padding)
                return
            member = parse_header(block)
            padding = -member.size % BLOCK
            if member.type == tarfile.GNUTYPE_LONGNAME:
                long_name = self._take(member.size).split(b"\0", 1)[0].decode(
                    "utf-8", "surrogateescape")
                self._skip(padding)
                continue
            if long_name is not None:
                member.name, long_name = long_name, None
            self._left = member.size
            yield member, self._chunks()
            self._skip(self._left + padding)
            self._left = 0
