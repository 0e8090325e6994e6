"""The files a NIfTI write touches: suffix → format, pair halves, and the sources it must spare."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ._header import is_url
from ._readers import is_random_access
from .array import NiftiBackendArray

__all__ = [
    "SUFFIXES",
    "is_url",
    "output_paths",
    "reads_in_any_order",
    "refuse_overwriting_source",
    "suffix_of",
]

#: suffix → (``.hdr``/``.img`` pair, gzip-compressed)
SUFFIXES = {
    ".nii": (False, False),
    ".nii.gz": (False, True),
    ".hdr": (True, False),
    ".img": (True, False),
    ".hdr.gz": (True, True),
    ".img.gz": (True, True),
}


def suffix_of(name: str) -> str:
    """The NIfTI suffix of a file name; ``ValueError`` for anything else.

    Examples
    --------
    >>> suffix_of("sub-01_bold.NII.GZ")
    '.nii.gz'
    """
    lowered = name.rsplit("/", 1)[-1].lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lowered.endswith(suffix) and len(lowered) > len(suffix):
            return suffix
    raise ValueError(
        f"{name}: unsupported suffix; write NIfTI as .nii, .nii.gz, .hdr/.img or .img.gz"
    )


def output_paths(name: str) -> list[str]:
    """The files written for ``name``: itself, or the ``.hdr`` and ``.img`` of a pair.

    Examples
    --------
    >>> output_paths("scan.img.gz")
    ['scan.hdr.gz', 'scan.img.gz']
    """
    suffix = suffix_of(name)
    if not SUFFIXES[suffix][0]:
        return [name]
    gz = ".gz" if suffix.endswith(".gz") else ""
    stem = name[: -len(suffix)]
    return [stem + ".hdr" + gz, stem + ".img" + gz]


def _companions(name: str) -> set[str]:
    try:
        return {name, *output_paths(name)}
    except ValueError:
        return {name}


def _backend_array(obj: Any) -> NiftiBackendArray | None:
    """The file reader under xarray's lazy wrappers (indexing, decoding) of ``obj``, if any."""
    for _ in range(16):
        if obj is None or isinstance(obj, NiftiBackendArray):
            return obj
        obj = getattr(obj, "array", None)
    return None


def _backend_paths(obj: Any) -> Iterator[str]:
    backend = _backend_array(obj)
    if backend is not None:
        yield backend.location.name
        if backend.location.path is not None:
            yield backend.location.path


def reads_in_any_order(array: xr.DataArray) -> bool:
    """Whether the regions of ``array`` cost the same to read in any order.

    True for data in memory and for lazily read local uncompressed files
    (``.nii``, ``.hdr``/``.img`` pairs, Analyze). False for a gzip stream
    (``.nii.gz``, ``.img.gz``: a region behind the inflate position is inflated
    again), for remote objects (every region is a request) and for images
    opened from file objects. Dask arrays are not looked into (True whatever
    their source): the writer follows their chunks instead.
    """
    backend = _backend_array(array.variable._data)
    return backend is None or is_random_access(backend.location)


def _sources_read(array: xr.DataArray) -> set[str]:
    """Files and URLs that computing ``array`` still reads (by its encoding and dask graph)."""
    data = array.variable._data
    if isinstance(data, np.ndarray):
        return set()
    names: set[str] = set()
    source = array.encoding.get("source")
    if isinstance(source, str | os.PathLike):
        names.add(os.fspath(source))
    names.update(_backend_paths(data))
    graph = getattr(data, "__dask_graph__", None)
    if graph is not None:
        # The arrays a dask graph reads from are stored as plain values
        # beside its tasks (dask's own task objects are skipped).
        for value in graph().values():
            if hasattr(value, "array") and not type(value).__module__.startswith("dask"):
                names.update(_backend_paths(value))
    found: set[str] = set()
    for name in names:
        found.update(_companions(name))
    return found


def _same_file(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return a.rstrip("/") == b.rstrip("/")
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def refuse_overwriting_source(array: xr.DataArray, targets: list[str]) -> None:
    """``ValueError`` when a target is a file that the lazy ``array`` still reads."""
    sources = _sources_read(array)
    for target in targets:
        if any(_same_file(target, source) for source in sources):
            raise ValueError(
                f"{target}: refusing to overwrite the file this lazy dataset reads from; "
                "write to another path, or call .load() first to read the data into memory"
            )
