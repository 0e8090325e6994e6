"""Lazy, picklable access to the voxel data of a NIfTI/Analyze file.

:class:`NiftiBackendArray` holds only a description of where the data lives
(:class:`~xarray_nifti._source.DataLocation`); open files and inflate state
live in per-process readers shared through xarray's ``CachingFileManager``,
so the array pickles at any time and carries no file handle to a dask worker.

The readers (memory map for ``.nii``, checkpointed inflate stream for
``.nii.gz``, byte ranges for file objects and URLs) are in :mod:`._readers`.
Every read checks that the file is still the version that was opened and
raises :class:`~xarray_nifti.NiftiFileChangedError` otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
from xarray.backends import BackendArray, CachingFileManager
from xarray.backends.locks import SerializableLock
from xarray.core import indexing

from ._cluster import owner_elsewhere, run_on
from ._errors import NiftiFileChangedError, NiftiFormatError
from ._identity import check_stamps
from ._readers import open_reader
from ._source import DataLocation

__all__ = ["NiftiBackendArray"]

# Arrays of this process using the shared reader of each file (cache key).
# The reader is closed when the last of them closes; see NiftiBackendArray.close.
_USERS: dict[str, int] = {}
_USERS_LOCK = threading.Lock()


def _add_user(key: str) -> None:
    with _USERS_LOCK:
        _USERS[key] = _USERS.get(key, 0) + 1


def _drop_user(key: str) -> bool:
    """Forget one user of ``key``; ``True`` when it was the last one."""
    with _USERS_LOCK:
        count = _USERS.get(key, 0) - 1
        if count > 0:
            _USERS[key] = count
            return False
        _USERS.pop(key, None)
        return True


def _native(array: np.ndarray) -> np.ndarray:
    if array.dtype.fields is None and not array.dtype.isnative:
        array = array.byteswap().view(array.dtype.newbyteorder("="))
    elif array.dtype.fields is not None and not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


class NiftiBackendArray(BackendArray):
    """Lazily indexed voxel data of one image, in stored (raw) values.

    Reads only the requested region; converts to native byte order; splits
    RGB(A) records into a trailing axis of ``uint8``. Scaling is applied by
    xarray's CF decoding on top of this array.

    Parameters
    ----------
    location
        Where and how the data is stored.
    """

    def __init__(self, location: DataLocation) -> None:
        self.location = location
        raw = location.dtype
        self._channels = len(raw.names) if raw.names is not None else 0
        self.shape = location.shape + ((self._channels,) if self._channels else ())
        self.dtype = np.dtype(np.uint8) if self._channels else raw.newbyteorder("=")
        key = location.cache_key()
        self._key = key
        # One lock per file and process for readers with a shared seek position (file
        # objects, remote files); local files and gzip streams read in parallel.
        self._lock = SerializableLock(token=key)
        self._manager = CachingFileManager(
            open_reader, location, mode="rb", manager_id=key, lock=False
        )
        self._grid: tuple[int, int, int] | None = None
        self._closed = False
        _add_user(key)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_closed", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._closed = False
        _add_user(self._key)  # an unpickled copy is one more user of its process's reader

    def set_chunks(self, chunks: Sequence[int]) -> None:
        """Tell the reader the preferred chunk sizes along the stored axes.

        A gzip reader then places its checkpoints where chunks start, so a
        backward jump to a chunk re-inflates that chunk only.
        """
        shape = self.location.shape
        unit = self.location.dtype.itemsize
        for size, chunk in zip(shape, chunks, strict=False):
            if 0 < chunk < size:  # chunks start every `chunk` steps along this axis
                self._grid = (self.location.offset, unit * chunk, unit)
                return
            unit *= size  # whole axis: chunk starts are regular along slower axes only
        # a single chunk, or no regular grid: nothing to hint

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        # xarray's slice decomposition fails (IndexError) on empty slices with a
        # negative step, e.g. ``[:-1:-1]``: give it the equivalent empty slice.
        parts = tuple(
            slice(0, 0, 1) if isinstance(k, slice) and not len(range(n)[k]) else k
            for k, n in zip(key.tuple, self.shape, strict=True)
        )
        if parts != key.tuple:
            key = type(key)(parts)
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._getitem
        )

    def _getitem(self, key: tuple[Any, ...]) -> np.ndarray:
        spatial = key[: len(self.location.shape)]
        selection: list[tuple[int, int, int]] = []
        post: list[Any] = []
        for k, size in zip(spatial, self.location.shape, strict=True):
            if isinstance(k, slice):
                r = range(size)[k]
                if r.step < 0 and len(r):
                    selection.append((r[-1], len(r), -r.step))
                    post.append(slice(None, None, -1))
                else:
                    selection.append((r.start if len(r) else 0, len(r), abs(r.step)))
                    post.append(slice(None))
            else:
                index = int(k) % size
                selection.append((index, 1, 1))
                post.append(0)
        if self._closed:  # read after close: this array uses the reader again
            self._closed = False
            _add_user(self._key)
        owner = owner_elsewhere(self._key) if self.location.compression == "gzip" else None
        block: np.ndarray
        if owner is not None:  # this file is inflated by one worker of the cluster
            block = run_on(owner, _read_as_owner, self.location, self._grid, selection)
        else:
            block = self._read_here(selection)
        block = _native(block)[tuple(post)]
        if self._channels:
            block = np.stack([block[name] for name in block.dtype.names or ()], axis=-1)
            block = block[(Ellipsis, key[-1])]
        return block

    def _read_here(self, selection: list[tuple[int, int, int]]) -> np.ndarray:
        """Read a region with this process's shared reader of the file."""
        # ``in_use`` makes a close of the reader (the last user's, or LRU eviction
        # when another file opens) wait until this read is done.
        with self._manager.acquire_context(needs_lock=False) as reader:
            serial = nullcontext() if reader.thread_safe else self._lock
            with serial, reader.in_use():
                if self._grid is not None:
                    reader.hint_chunk_grid(*self._grid)
                block: np.ndarray = self._read_unchanged(reader, selection)
        return block

    def _read_unchanged(self, reader: Any, selection: list[tuple[int, int, int]]) -> np.ndarray:
        """Read a region, checking before and after that the file is the one opened.

        Before: a full check (a HEAD request for a remote object, whose bytes
        may already sit in the reader's read-ahead cache). After: ``stat`` of
        local files only, to catch a rewrite during the read (s3fs makes every ranged GET
        conditional on the ETag it opened with). A read that fails (corrupt
        gzip, short file, an expired remote object) is blamed on a change when
        the file no longer matches its stamp.
        """
        stamps = self.location.stamps
        check_stamps(stamps)
        try:
            block: np.ndarray = reader.read_region(selection)
        except NiftiFileChangedError:
            raise
        except (NiftiFormatError, OSError, EOFError) as err:
            check_stamps(stamps)
            raise err from err.__cause__
        check_stamps(stamps, cheap_only=True, content=False)  # stat only: cheap per read
        return block

    def close(self) -> None:
        """Stop using this process's shared reader of the file; close it after its last user.

        Every array of the same file (every Dataset opened on it, and every
        unpickled copy) shares one reader per process with its inflate state
        and seek points. Closing one of them must not throw that away for the
        others, so users are counted per file; the reader is closed (waiting
        for a read in progress) when the last one closes. Closing twice is
        harmless.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if _drop_user(self._key):
                self._manager.close(needs_lock=False)


# Arrays through which an owner worker reads the gzip files it owns for others.
_OWNED: dict[str, NiftiBackendArray] = {}
_OWNED_LOCK = threading.Lock()


def _read_as_owner(
    location: DataLocation,
    grid: tuple[int, int, int] | None,
    selection: list[tuple[int, int, int]],
) -> np.ndarray:
    """Run on a file's owner worker: read a region with its one inflate stream."""
    key = location.cache_key()
    with _OWNED_LOCK:
        array = _OWNED.get(key)
        if array is None:
            array = _OWNED[key] = NiftiBackendArray(location)
    array._grid = array._grid or grid
    return array._read_here(selection)
