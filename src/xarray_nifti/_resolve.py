"""Resolve what the user passed (path, file object, fsspec URL or ``OpenFile``) into a source.

This is the one place that decides how an input is read: local paths and
local file objects by path (memory mapped, picklable), other file objects as
they are, URLs through fsspec; single files by :mod:`._source`, header/image
pairs by :mod:`._pairs`.
"""

from __future__ import annotations

import functools
import inspect
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ._header import _checked_path, is_url
from ._identity import fresh_info, stamp_fsspec
from ._optional import require
from ._pairs import is_pair_path, open_fsspec_pair, open_pair_path
from ._source import ImageSource, open_fileobj, open_single_path

__all__ = ["ListedObject", "open_source"]

_HEADER_READ_AHEAD = 1 << 16  # bytes fetched by the first read of a remote header


def _open_path(path: str) -> ImageSource:
    path = os.path.abspath(path)
    _checked_path(path)
    if is_pair_path(path):
        return open_pair_path(path)
    return open_single_path(path)


def _local_path_of(fileobj: Any) -> str | None:
    """The path of a regular local file object (so that we can reopen it), or ``None``."""
    name = getattr(fileobj, "name", None)
    if not isinstance(fileobj, io.BufferedReader | io.FileIO) or not isinstance(name, str):
        return None
    try:
        opened, named = os.fstat(fileobj.fileno()), os.stat(name)
    except (OSError, ValueError):
        return None
    if (opened.st_dev, opened.st_ino) != (named.st_dev, named.st_ino):
        return None
    return os.path.abspath(name)


def open_source(filename_or_obj: Any, storage_options: dict[str, Any] | None = None) -> ImageSource:
    """Parse the header of a path, URL or binary file object.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        For a missing path (or the missing half of a pair) or a directory.
    NiftiFormatError
        For anything that is not a readable NIfTI-1/2 or Analyze header.
    """
    if isinstance(filename_or_obj, ListedObject):
        return _open_listed(filename_or_obj)
    if isinstance(filename_or_obj, str | os.PathLike):
        text = os.fspath(filename_or_obj)
        if isinstance(text, bytes):
            text = text.decode()
        if is_url(text):
            return _open_url(text, storage_options or {})
        if text.startswith("file://"):
            text = text[len("file://") :]
        return _open_path(os.path.expanduser(text))
    if hasattr(filename_or_obj, "read") and hasattr(filename_or_obj, "seek"):
        local = _local_path_of(filename_or_obj)
        if local is not None:  # reopen by path: memory mapped, picklable
            return _open_path(local)
        name = str(getattr(filename_or_obj, "name", None) or f"<{type(filename_or_obj).__name__}>")
        return open_fileobj(filename_or_obj, name)
    if hasattr(filename_or_obj, "open") and hasattr(filename_or_obj, "path"):  # fsspec OpenFile
        return _open_fsspec(filename_or_obj, str(filename_or_obj.path))
    raise TypeError(
        "engine='nifti' opens a path, a URL or a binary file object, not "
        f"{type(filename_or_obj).__name__}"
    )


@dataclass(frozen=True, eq=False)
class ListedObject:
    """A remote object that a listing of ``fs`` found, to be opened as ``open_dataset`` opens URLs.

    ``info`` is the listing's entry for it (size, ETag): it stamps the object and
    sizes the read, so that parsing the header costs one ranged GET and no HEAD.
    """

    fs: Any
    url: str
    info: Mapping[str, Any] | None = None


def _open_listed(listed: ListedObject) -> ImageSource:
    fsspec = require("fsspec", "remote", f"reading {listed.url}")
    path = listed.fs._strip_protocol(listed.url)
    return _open_fsspec(fsspec.core.OpenFile(listed.fs, path, mode="rb"), listed.url, listed.info)


def _open_url(url: str, storage_options: dict[str, Any]) -> ImageSource:
    fsspec = require("fsspec", "remote", f"reading {url}")
    open_file = fsspec.open(url, mode="rb", **storage_options)
    return _open_fsspec(open_file, url)


@functools.cache
def _opens_with_size(fs_class: Any) -> bool:
    """Whether ``fs_class.open`` takes the object's ``size`` (and then asks the store nothing)."""
    try:
        return "size" in inspect.signature(fs_class._open).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _open_known(fs: Any, path: str, info: Mapping[str, Any]) -> Any:
    """Open an object for reading its header, told its size and details (``info``).

    A small read-ahead: filesystems such as s3fs default to 50 MiB blocks,
    which would download whole images to parse a header. Without the size,
    s3fs would ask for the object's details (a HEAD request) once more.
    """
    options: dict[str, Any] = {"block_size": _HEADER_READ_AHEAD, "cache_type": "readahead"}
    size = info.get("size")
    # (An HTTP server that cannot serve ranges says "partial": False; fsspec then streams.)
    if size is not None and info.get("partial", True) and _opens_with_size(fs.__class__):
        options["size"] = int(size)
    fileobj = fs.open(path, mode="rb", **options)
    if "size" in options:
        from fsspec.spec import AbstractBufferedFile

        if isinstance(fileobj, AbstractBufferedFile):
            fileobj.details = dict(info)
    return fileobj


def _open_fsspec(open_file: Any, name: str, info: Mapping[str, Any] | None = None) -> ImageSource:
    fs = open_file.fs
    if is_pair_path(open_file.path):
        return open_fsspec_pair(fs, open_file.path, name, type(open_file))
    try:
        if info is None:
            info = fresh_info(fs, open_file.path)
        stamp = stamp_fsspec(fs, open_file.path, name, info)
        with _open_known(fs, open_file.path, info) as fileobj:
            source = open_fileobj(fileobj, name, (stamp,))
    except FileNotFoundError as err:  # also an object listed, then deleted
        raise FileNotFoundError(f"{name}: no such object ({err})") from err
    except PermissionError as err:
        raise PermissionError(f"{name}: access denied, check the credentials ({err})") from err
    return replace(source, data=replace(source.data, fileobj=open_file))
