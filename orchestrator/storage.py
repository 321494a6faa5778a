"""Where a sweep's files live: a local folder, an NFS mount, or an object store.

``storage:`` (and ``--storage``) is a folder or a URI that pyarrow understands: ``s3://bucket/
prefix``, ``gs://bucket/prefix``, ``hdfs://…``. An S3-compatible store (MinIO, Ceph, a local
test server) takes pyarrow's URI options, e.g. ``s3://bucket/runs?endpoint_override=
127.0.0.1:9000&scheme=http``, or the ``AWS_ENDPOINT_URL`` environment variable; credentials come
from the usual places (``AWS_ACCESS_KEY_ID``…, instance roles).

Everything a sweep writes and reads later goes through a :class:`SweepFolder`: the manifest,
Tune's experiment state and trial checkpoints (Tune is handed the same filesystem, so trials on
any node write there) and the newest-readable-checkpoint search of ``resume``. Nothing needs a
disk that the driver and the workers share.
"""

from __future__ import annotations

import io
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from dynsweep.errors import ConfigError
from tracking.secrets import redact

# How long an S3 request may go without a byte moving before it is abandoned (the AWS SDK's
# default is 3 s), and tried again (3 tries in all). An S3 server unreachable for 30 s (a
# network partition, a restarting MinIO) then stalls a checkpoint upload, or the driver's save of
# Tune's state, until it answers again, instead of failing the trial after ~10 s; a store that
# stays away longer than ~3 minutes fails the trial (see ``storage_failure``). A slow transfer
# is not cut: only one where nothing arrives for this long.
S3_STALL_S = float(os.environ.get("DYNSWEEP_S3_STALL_S", 60))


def is_uri(location: str) -> bool:
    """A ``scheme://`` location other than a local ``file://`` one."""
    scheme = urlsplit(location).scheme
    return len(scheme) > 1 and scheme != "file"


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    if not is_uri(location):
        local = location.removeprefix("file://")
        return pafs.LocalFileSystem(), str(Path(local).expanduser().resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ConfigError(
            f"storage: cannot use {describe(location)!r}: expected a folder or a URI such as "
            f"s3://bucket/prefix or gs://bucket/prefix ({exc})"
        ) from None
    if isinstance(fs, pafs.S3FileSystem):  # pickled with it, so Tune's trials get it too
        options = fs.__reduce__()[1][0]
        if (options.get("request_timeout") or -1) < 0:  # -1: the SDK's default
            fs = pafs.S3FileSystem._reconstruct({**options, "request_timeout": S3_STALL_S})
    return fs, path.rstrip("/")


@dataclass(frozen=True)
class SweepFolder:
    """One folder of the storage (a sweep's, or the storage root), with its filesystem.

    ``location`` is what users see and what the manifest keeps (a local path or the URI,
    options included); ``fs`` and ``path`` are what pyarrow (and Tune) use.
    """

    location: str
    fs: pafs.FileSystem
    path: str

    @classmethod
    def at(cls, location: str) -> SweepFolder:
        fs, path = _filesystem(location)
        if not is_uri(location):
            location = path
        return cls(location, fs, path)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def child(self, name: str) -> SweepFolder:
        """The folder ``name`` inside this one (the URI's options kept)."""
        if self.local:
            return SweepFolder(str(Path(self.location) / name), self.fs, f"{self.path}/{name}")
        parts = urlsplit(self.location)
        path = parts.path.rstrip("/") + "/" + name
        location = parts._replace(path=path).geturl()
        return SweepFolder(location, self.fs, f"{self.path}/{name}")

    def parent_path(self) -> str:
        return posixpath.dirname(self.path)

    # --- files ----------------------------------------------------------------------------
    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self.file(name)).type == pafs.FileType.File

    def size(self, name: str) -> int:
        return self.fs.get_file_info(self.file(name)).size or 0

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.file(name)) as stream:
            return stream.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def write_text(self, name: str, text: str) -> None:
        """Write a file whole (on a local disk through a rename, so readers never see half)."""
        if self.local:
            target = Path(self.file(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, target)
            return
        self.fs.create_dir(self.path, recursive=True)
        with self.fs.open_output_stream(self.file(name)) as stream:  # an object put: atomic
            stream.write(text.encode())

    def list(self) -> list[pafs.FileInfo]:
        """What is in this folder (nothing when it does not exist)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return self.fs.get_file_info(selector)

    def open_bytes(self, path: str) -> io.BytesIO:
        """A file of this filesystem (a path from :meth:`list`) read into memory."""
        with self.fs.open_input_stream(path) as stream:
            return io.BytesIO(stream.read())


class StorageUnreachable(RuntimeError):
    """The sweep's object store did not answer (retried: Tune may still retry the trial)."""


def unreachable(location: str, exc: BaseException) -> BaseException:
    """``exc`` as one clear error when it is an S3 store that did not answer, else ``exc``."""
    if not is_uri(location) or "AWS Error NETWORK_CONNECTION" not in str(exc):
        return exc
    where = redact(describe(location))
    return StorageUnreachable(
        f"the S3 storage {where} did not answer (each request tried 3 times, each given up after "
        f"DYNSWEEP_S3_STALL_S seconds without a byte, 60 by default): what is already stored is "
        f"kept (metrics, and checkpoints in S3), this trial stops. Make S3 reachable; Tune retries "
        f"the trial from its newest checkpoint up to `max_failures` times; a sweep whose driver "
        f"stopped continues with `dynsweep resume {where}` (a trial that ended FAILED is not run "
        f"again by it) ({redact(str(exc))})"
    )


def describe(location: str) -> str:
    """The location without URI options (endpoints, regions) for messages and tags."""
    if not is_uri(location):
        return location
    return urlsplit(location)._replace(query="").geturl()
