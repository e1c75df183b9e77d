"""tar_stream.TarStream against archives GNU tar itself writes (as the fetch driver does):
names (also past 100 characters), contents, sizes, and damaged or short streams."""

from __future__ import annotations

import subprocess
import tarfile

import pytest

from warpforge_launch.tar_stream import TarStream


def archive(tmp_path, files: dict[str, bytes]) -> bytes:
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return subprocess.run(["tar", "-c", "-f", "-", "--format=gnu", "--no-recursion", "-C",
                           str(tmp_path), "--", *files], capture_output=True, check=True).stdout


def pieces(data: bytes, size: int):
    chunks = [data[k:k + size] for k in range(0, len(data), size)]
    return lambda: chunks.pop(0) if chunks else b""


@pytest.mark.parametrize("size", [1, 333, 1 << 16])
def test_members_and_contents_as_tar_wrote_them(tmp_path, size):
    files = {"a.txt": b"hello\n", "empty": b"", "d/" + "x" * 150 + ".bin": bytes(range(256)) * 9,
             "big": b"\x01" * 70000}
    data = archive(tmp_path, files)
    got = {}
    for info, chunks in TarStream(pieces(data, size)).members():
        assert info.isreg()
        got[info.name] = b"".join(chunks)
        assert len(got[info.name]) == info.size
    assert got == files


def test_unread_members_are_skipped(tmp_path):
    files = {"a": b"1" * 700, "b": b"2" * 10}
    data = archive(tmp_path, files)
    names = [info.name for info, _chunks in TarStream(pieces(data, 100)).members()]
    assert names == ["a", "b"]


def test_a_stream_cut_short_or_damaged_is_an_error(tmp_path):
    data = archive(tmp_path, {"a": b"1" * 700, "b": b"2" * 10})
    with pytest.raises(tarfile.ReadError, match="unexpected end"):
        for _info, chunks in TarStream(pieces(data[:900], 64)).members():
            b"".join(chunks)
    bad = bytearray(data)
    bad[0] ^= 0x20  # the first header's name: its checksum no longer holds
    with pytest.raises(tarfile.ReadError, match="bad header"):
        list(TarStream(pieces(bytes(bad), 512)).members())


def test_headers_read_as_tarfile_reads_them(tmp_path):
    from warpforge_launch.tar_stream import parse_header

    files = {"a.txt": b"hello\n", "empty": b"", "d/" + "y" * 120: b"z" * 1000,
             "ünï cödé": b"u"}
    data = archive(tmp_path, files)
    pos, seen = 0, 0
    while data[pos:pos + 512] != bytes(512):
        block = data[pos:pos + 512]
        ours, theirs = parse_header(block), tarfile.TarInfo.frombuf(block, "utf-8",
                                                                     "surrogateescape")
        assert (ours.name, ours.size, ours.type) == (theirs.name, theirs.size, theirs.type)
        pos += 512 + -(-theirs.size // 512) * 512
        seen += 1
    assert seen == len(files) + 1  # and the long name's own header
