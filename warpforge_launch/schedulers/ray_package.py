"""The model source as a Ray working_dir package: read once at plan time, shipped with the job.

Workers cannot see the client's files, so the source travels the way the Ray SDK ships a
working dir: a zip in the cluster's GCS named ``gcs://_ray_pkg_<hash>.zip``, which Ray unpacks
as the job's working directory. The name is a hash of the file's name and content, so an
unchanged source is uploaded once and a changed one never reuses a stale package.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warpforge_launch.errors import UsageError

MAX_SOURCE_BYTES = 64 * 2**20  # Ray keeps packages in the GCS (512 MiB cap, warns at half)


@dataclass(frozen=True)
class SourcePackage:
    """The zip bytes and the URI they go under; plans carry it from plan to execute."""

    uri: str
    file_name: str  # the payload's --source: the file sits at the top of its working dir
    source_sha256: str
    data: bytes = b""

    @property
    def gcs_name(self) -> str:
        return self.uri.removeprefix("gcs://")

    def to_dict(self) -> dict[str, Any]:
        """What the job store keeps: the package's identity, not its bytes."""
        return {"uri": self.uri, "file": self.file_name, "source_sha256": self.source_sha256,
                "zip_bytes": len(self.data)}


def build(source: str) -> SourcePackage:
    """Read ``source`` once and pack it; unreadable or oversized sources are bad input."""
    name = Path(source).name
    data = _read(source)
    digest = hashlib.sha256(b"warpforge-source\0" + name.encode() + b"\0" + data)
    return SourcePackage(
        uri=f"gcs://_ray_pkg_{digest.hexdigest()[:32]}.zip",
        file_name=name,
        source_sha256=hashlib.sha256(data).hexdigest(),
        data=_zip(name, data),
    )


def _zip(name: str, data: bytes) -> bytes:
    """A reproducible zip holding one file at its top level."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = 0o644 << 16
        archive.writestr(entry, data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _read(source: str) -> bytes:
    try:
        with open(source, "rb") as fh:
            data = fh.read(MAX_SOURCE_BYTES + 1)
    except IsADirectoryError:
        raise UsageError(f"model source {source} is a directory, not a file") from None
    except OSError as exc:
        raise UsageError(
            f"model source {source} cannot be read: {exc.strerror or exc}",
            hint="give --source a readable file",
        ) from None
    if len(data) > MAX_SOURCE_BYTES:
        raise UsageError(
            f"model source {source} is over {MAX_SOURCE_BYTES // 2**20} MiB, the most that "
            "ships with a job",
            hint="keep weights out of the source, or set upload_source: false and share it",
        )
    return data
