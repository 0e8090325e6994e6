"""File identity: notice that a file changed after a lazy dataset was opened on it.

A lazy dataset reads its file long after ``open_dataset`` returned, often in
another process. If the file was rewritten in between (a notebook re-running
``nib.save`` on the same path), the read would mix the old header (and, for
gzip, old inflate checkpoints) with new bytes. So every file an image is read
from is *stamped* at open time, the stamp travels (pickled) with the array to
dask workers, and reads compare it with the file as it is now:

* local files: size, ``st_mtime_ns``, device + inode, and a CRC32 of the first
  and last 4 KiB (for gzip the last 8 bytes are the stream's own CRC32 and
  size, so a same-size rewrite within one mtime tick is still caught);
* fsspec objects: size and the ETag that the filesystem's ``info()`` reports
  (the version id, else the modification time, where there is no ETag). The
  stamp may come from the entry of a listing that was just made (a BIDS
  dataset is listed before its images are opened): a later ``info()`` of the
  same object gives the same fields, so no request is spent on stamping.

A file that was only touched (new mtime, same bytes) counts as changed: a
cheap check cannot tell it from a rewrite, and a false alarm that asks the
user to re-open is better than mixed voxels.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from ._errors import NiftiFileChangedError

__all__ = ["FileStamp", "check_stamps", "fresh_info", "stamp_fsspec", "stamp_local"]

_SAMPLE = 4096  # bytes checksummed at each end of a local file
# The fields that identify a version of a remote object, best first: the first one
# ``info()`` reports is compared. Listings and ``info()`` spell the ETag alike, but not
# always the rest (S3 gives a version id only to HEAD, and timestamps in other zones).
_REMOTE_VERSION_KEYS = (
    "ETag",
    "etag",
    "VersionId",
    "version_id",
    "LastModified",
    "mtime",
    "created",
)


@dataclass(frozen=True)
class FileStamp:
    """What one file looked like when the image was opened.

    ``fs`` is the fsspec filesystem of a remote object (``None`` for a local
    path); ``version`` holds the fields compared besides the size (for a
    remote object, ``(field name, value)`` pairs).
    """

    name: str
    path: str
    size: int | None
    version: tuple[Any, ...]
    fs: Any = field(default=None, compare=False)

    @property
    def cheap(self) -> bool:
        """Whether checking costs no network round trip (local or in-memory files)."""
        return self.fs is None or not getattr(self.fs, "async_impl", False)


def _edges_crc(f: BinaryIO, size: int) -> int:
    f.seek(0)
    head = f.read(_SAMPLE)
    if size > _SAMPLE:
        f.seek(max(_SAMPLE, size - _SAMPLE))
        head += f.read(_SAMPLE)
    return zlib.crc32(head)


def stamp_local(
    path: str, name: str | None = None, content: bool = True, opened: BinaryIO | None = None
) -> FileStamp:
    """Stamp a local file (raises ``FileNotFoundError`` if it is gone).

    ``content=False`` skips the checksum (its place holds ``None``);
    ``opened`` is the file already open on ``path``, to stamp what it reads.
    """
    if opened is not None:
        stat = os.fstat(opened.fileno())
        crc = _edges_crc(opened, stat.st_size) if content else None
    else:
        stat = os.stat(path)
        crc = None
        if content:
            with open(path, "rb") as f:
                crc = _edges_crc(f, stat.st_size)
    version = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, crc)
    return FileStamp(name or path, path, stat.st_size, version)


def fresh_info(fs: Any, path: str) -> dict[str, Any]:
    """``fs.info(path)`` from the store itself, not from a cached listing."""
    fs.invalidate_cache(path)
    info: dict[str, Any] = fs.info(path)
    return info


def _field(value: Any) -> str:
    if isinstance(value, datetime):  # the same instant in any time zone
        return repr(value.timestamp())
    return str(value)


def _remote_version(
    info: Mapping[str, Any], keys: tuple[str, ...] | None = None
) -> tuple[tuple[str, str], ...]:
    """The identity fields of ``info``: those named by ``keys``, else the first present."""
    if keys is None:
        present = [key for key in _REMOTE_VERSION_KEYS if info.get(key) is not None]
        keys = tuple(present[:1])
    return tuple((key, _field(info.get(key))) for key in keys)


def stamp_fsspec(
    fs: Any, path: str, name: str | None = None, info: Mapping[str, Any] | None = None
) -> FileStamp:
    """Stamp an fsspec object from ``info`` (a fresh listing's entry) or a fresh ``info()``."""
    if info is None:
        info = fresh_info(fs, path)
    size = info.get("size")
    return FileStamp(
        name or path, path, None if size is None else int(size), _remote_version(info), fs
    )


def _restamp(stamp: FileStamp, content: bool) -> FileStamp:
    if stamp.fs is None:
        now = stamp_local(stamp.path, stamp.name, content)
        if not content:  # compare size, device, inode and mtime only
            return FileStamp(now.name, now.path, now.size, (*now.version[:3], stamp.version[3]))
        return now
    info = fresh_info(stamp.fs, stamp.path)
    size = info.get("size")
    keys = tuple(key for key, _ in stamp.version)  # the fields the stamp compares
    version = _remote_version(info, keys)
    return FileStamp(stamp.name, stamp.path, None if size is None else int(size), version, stamp.fs)


def _what_changed(old: FileStamp, new: FileStamp) -> str:
    if old.size is not None and new.size is not None and new.size < old.size:
        return f"it shrank from {old.size} to {new.size} bytes: truncated or rewritten"
    if old.size != new.size:
        return f"its size went from {old.size} to {new.size} bytes"
    if old.fs is not None:
        before = ", ".join(f"{key} {value}" for key, value in old.version)
        after = ", ".join(f"{key} {value}" for key, value in new.version)
        return f"its version changed ({before} -> {after})"
    if old.version[:2] != new.version[:2]:
        return "it was replaced by another file"
    if old.version[2] != new.version[2]:
        return "its modification time changed"
    return "its content changed"


def changed_error(stamp: FileStamp, reason: str) -> NiftiFileChangedError:
    """The error for a file that no longer matches its stamp."""
    return NiftiFileChangedError(
        f"{stamp.name}: the file changed since it was opened ({reason}); the lazy data "
        "refers to the old version, so nothing was read. Re-open it (xr.open_dataset "
        "again) to read the new content"
    )


def check_stamps(
    stamps: tuple[FileStamp, ...], *, cheap_only: bool = False, content: bool = True
) -> None:
    """Raise :class:`NiftiFileChangedError` if a stamped file changed or disappeared.

    With ``cheap_only`` remote objects behind a network filesystem are
    skipped (s3fs checks the ETag with each ranged GET itself); with
    ``content=False`` local files are compared by ``stat`` alone.
    """
    for stamp in stamps:
        if cheap_only and not stamp.cheap:
            continue
        try:
            now = _restamp(stamp, content)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{stamp.name}: the file was removed or renamed after it was opened; "
                "re-open the new file"
            ) from err
        if now != stamp:
            raise changed_error(stamp, _what_changed(stamp, now))
