"""Per-process readers of one file's voxel data: memory map, file object, gzip stream.

A reader is opened by xarray's ``CachingFileManager`` in each process that
reads (the client, every dask worker) from the picklable
:class:`~xarray_nifti._source.DataLocation`. It checks, when it opens and
around every read, that the file is still the one that was opened (see
:mod:`._identity`), so a read never mixes two versions of a file.
"""

from __future__ import annotations

import mmap
import os
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

import numpy as np
from nibabel.openers import ImageOpener

from ._errors import NiftiFormatError, NiftiTruncatedError
from ._gzip import GzipStream
from ._identity import check_stamps
from ._region import contiguous_start, read_region
from ._source import DataLocation

__all__ = ["is_random_access", "open_reader"]


class _Reader:
    """Base of the per-process readers (one per file); subclasses fill ``read_into``.

    ``thread_safe`` readers may be used by several threads at once (positional
    reads, no shared seek position); the caller serialises the others. Either
    way :meth:`close` waits for the reads in progress (:meth:`in_use`), so
    closing never pulls a descriptor or a memory map from under a read.
    """

    thread_safe = False

    def __init__(self, location: DataLocation) -> None:
        self.location = location
        self._readers = 0
        self._idle = threading.Condition()

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark a read in progress for :meth:`close` to wait for."""
        with self._idle:
            self._readers += 1
        try:
            yield
        finally:
            with self._idle:
                self._readers -= 1
                self._idle.notify_all()

    def read_into(self, offset: int, out: memoryview) -> None:
        raise NotImplementedError

    def read_region(self, selection: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """Read ``start, count, step`` (positive step) per axis, F order on disk."""
        return read_region(self.read_into, self.location, selection)

    def hint_chunk_grid(self, first: int, stride: int, unit: int) -> None:
        """Chunks start at byte ``first + n * stride``, made of ``unit``-byte steps."""

    def close(self) -> None:
        """Release the file, after the reads in progress."""
        with self._idle:
            self._idle.wait_for(lambda: self._readers == 0)
        self._release()

    def _release(self) -> None:
        """Close what this reader holds (no read is in progress)."""


class _MappedReader(_Reader):
    """Uncompressed local file: ``pread`` for contiguous regions, a memory map for strided ones.

    A contiguous region (a volume, a k-slab, the whole image) is read with
    ``os.preadv`` straight into the output array: one kernel copy, and no
    mapped pages that would count in the process's RSS (a per-volume temporal
    mean through a map of the whole file keeps RSS at the file size). The map
    is created on the first strided read only, and after each strided read
    the pages it touched leave the process (``MADV_DONTNEED``; they stay in
    the page cache): the RSS that dask's worker memory limits watch does not
    grow with the mapped file.
    """

    thread_safe = True

    def __init__(self, location: DataLocation) -> None:
        super().__init__(location)
        self._map_lock = threading.Lock()
        assert location.path is not None
        self._file = open(location.path, "rb")  # noqa: SIM115 - closed in close()
        self._fd = self._file.fileno()
        self._map: mmap.mmap | None = None
        if os.fstat(self._fd).st_size == 0:
            self._file.close()
            raise NiftiTruncatedError(
                f"{location.name}: the file shrank to 0 bytes after it was opened (its data "
                f"needs {location.offset + location.nbytes}); reopen it"
            )

    def _shrank(self, size: int) -> NiftiTruncatedError:
        loc = self.location
        return NiftiTruncatedError(
            f"{loc.name}: the file shrank to {size} bytes after it was opened (its data "
            f"needs {loc.offset + loc.nbytes}); reopen it"
        )

    def _check_size(self) -> None:
        # Touching mapped pages past the end of a file that shrank would kill
        # the process with SIGBUS, so check the size before every read.
        loc = self.location
        size = os.fstat(self._fd).st_size
        if size < loc.offset + loc.nbytes or (self._map is not None and size < len(self._map)):
            raise self._shrank(size)

    def _mapped(self) -> mmap.mmap:
        with self._map_lock:
            if self._map is None:
                self._map = mmap.mmap(self._fd, 0, access=mmap.ACCESS_READ)
            return self._map

    def read_into(self, offset: int, out: memoryview) -> None:
        self._check_size()
        _pread_exactly(self._fd, offset, out, lambda: self._shrank(os.fstat(self._fd).st_size))

    def read_region(self, selection: Sequence[tuple[int, int, int]]) -> np.ndarray:
        loc = self.location
        counts = tuple(count for _, count, _ in selection)
        if 0 in counts or contiguous_start(loc.shape, selection) is not None:
            return read_region(self.read_into, loc, selection)
        self._check_size()
        mapped = self._mapped()
        view = np.ndarray(loc.shape, dtype=loc.dtype, buffer=mapped, offset=loc.offset, order="F")
        key = tuple(
            slice(start, start + (count - 1) * step + 1, step) for start, count, step in selection
        )
        out = np.array(view[key], order="K")
        self._forget_pages(mapped, selection)
        return out

    def _forget_pages(self, mapped: mmap.mmap, selection: Sequence[tuple[int, int, int]]) -> None:
        """Drop the mapped pages a strided read touched from the process (not the cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        loc = self.location
        stride, first, last = loc.dtype.itemsize, loc.offset, loc.offset
        for size, (start, count, step) in zip(loc.shape, selection, strict=True):
            first += start * stride
            last += (start + (count - 1) * step) * stride
            stride *= size
        begin = first - first % mmap.PAGESIZE
        mapped.madvise(mmap.MADV_DONTNEED, begin, last + loc.dtype.itemsize - begin)

    def _release(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()


# Linux moves at most 0x7ffff000 bytes per read call.
_PREAD_MAX = 1 << 30
# Large reads are split over a few threads: the kernel's copy and the page faults
# of the fresh output array then run on several cores (os.preadv releases the GIL).
_SPLIT_BYTES = 16 << 20
_SPLIT_THREADS = max(1, min(4, os.cpu_count() or 1))
_split_pool: ThreadPoolExecutor | None = None
_split_pool_lock = threading.Lock()


def _pread_exactly(
    fd: int,
    offset: int,
    out: memoryview,
    error: Callable[[], Exception],
    split_bytes: int = _SPLIT_BYTES,
) -> None:
    """Fill ``out`` from ``fd`` at ``offset``; a short read (file shrank) raises ``error()``.

    Reads of at least twice ``split_bytes`` run in parallel pieces.
    """
    out = out.cast("B") if out.format != "B" or out.ndim != 1 else out
    parts = min(_SPLIT_THREADS, len(out) // max(1, split_bytes))
    if parts < 2:
        _pread_range(fd, offset, out, error)
        return
    step = -(-len(out) // parts)
    pieces = [(start, out[start : start + step]) for start in range(0, len(out), step)]
    futures = [
        _pool().submit(_pread_range, fd, offset + start, piece, error) for start, piece in pieces
    ]
    wait(futures)  # every piece is done with ``out`` before a short read is re-raised
    for future in futures:
        future.result()


def _pread_range(fd: int, offset: int, out: memoryview, error: Callable[[], Exception]) -> None:
    done = 0
    while done < len(out):
        got = os.preadv(fd, [out[done : done + _PREAD_MAX]], offset + done)
        if got <= 0:
            raise error()
        done += got


def _pool() -> ThreadPoolExecutor:
    global _split_pool
    with _split_pool_lock:
        if _split_pool is None:
            _split_pool = ThreadPoolExecutor(_SPLIT_THREADS, thread_name_prefix="xarray-nifti-read")
        return _split_pool


class _FileReader(_Reader):
    """Uncompressed file object (BytesIO, fsspec file, open file), or a decompressing one.

    ``decompressing`` readers (``.bz2``/``.zst`` through nibabel's opener)
    turn the decompressor's errors into :class:`NiftiFormatError` naming the
    file; I/O errors of plain files (disk, network) propagate unchanged.
    """

    def __init__(
        self, location: DataLocation, fileobj: Any, owned: bool, decompressing: bool = False
    ) -> None:
        super().__init__(location)
        self._fileobj = fileobj
        self._owned = owned
        self._decompressing = decompressing

    def read_into(self, offset: int, out: memoryview) -> None:
        if not self._decompressing:
            self._read_into(offset, out)
            return
        name = self.location.name
        try:
            self._read_into(offset, out)
        except EOFError as err:
            raise NiftiTruncatedError(
                f"{name}: the compressed stream ends before byte {offset + len(out)} of the "
                f"image data; the file is truncated ({err})"
            ) from err
        except NiftiFormatError:
            raise
        except (OSError, ValueError, zlib.error) as err:
            raise NiftiFormatError(
                f"{name}: cannot decompress the image data near byte {offset}: {err}; the "
                "file is damaged"
            ) from err

    def _read_into(self, offset: int, out: memoryview) -> None:
        self._fileobj.seek(offset)
        data = self._fileobj.read(len(out))
        if len(data) != len(out):
            raise NiftiTruncatedError(
                f"{self.location.name}: expected {len(out)} bytes of image data at offset "
                f"{offset}, got {len(data)}; the file is truncated"
            )
        out[:] = data

    def _release(self) -> None:
        if self._owned:
            self._fileobj.close()


class _GzipReader(_Reader):
    """gzip-compressed file: one checkpointed inflate stream (thread-safe for local files)."""

    def __init__(self, location: DataLocation, fileobj: Any, owned: bool) -> None:
        super().__init__(location)
        self._fileobj = fileobj
        self._owned = owned
        self._stream = GzipStream(fileobj, location.name, location.offset + location.nbytes)
        self.thread_safe = self._stream.concurrent

    def read_into(self, offset: int, out: memoryview) -> None:
        self._stream.read_into(offset, out)

    def hint_chunk_grid(self, first: int, stride: int, unit: int) -> None:
        if self._stream.stride is None:  # the first array's grid wins
            self._stream.set_chunk_grid(first, stride, unit)

    def _release(self) -> None:
        self._stream.close()
        if self._owned:
            self._fileobj.close()


def open_reader(location: DataLocation, mode: str = "rb") -> _Reader:
    """Open the per-process reader for ``location`` (the file manager's opener).

    ``mode`` is always ``"rb"``; it is passed explicitly because xarray's
    ``CachingFileManager`` loses its "no mode" sentinel when it is pickled into
    another process and then passes ``mode=<omitted>`` to the opener.
    """
    if mode != "rb":
        raise ValueError(f"{location.name}: NIfTI data is opened read-only, not {mode!r}")
    check_stamps(location.stamps)  # also in a fresh worker: the file must be the one opened
    try:
        return _open_reader(location)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{location.name}: the file was removed or renamed after it was opened ({err})"
        ) from err


def is_random_access(location: DataLocation) -> bool:
    """Whether any region of ``location`` costs the same to read, in any order.

    True for a local uncompressed file (read with ``pread`` and a memory map);
    a gzip stream inflates again what lies behind its position, a remote
    object or a file object pays a request or a seek per region.
    """
    return location.path is not None and location.compression is None


def _open_reader(location: DataLocation) -> _Reader:
    fileobj, owned = location.fileobj, False
    if is_random_access(location):
        return _MappedReader(location)
    if location.path is not None:
        if location.compression == "gzip":
            fileobj, owned = open(location.path, "rb"), True  # noqa: SIM115
        else:
            opener = ImageOpener(location.path, "rb")
            return _FileReader(location, opener, owned=True, decompressing=True)
    elif hasattr(fileobj, "open") and not hasattr(fileobj, "read"):  # fsspec OpenFile
        # Uncompressed data: fetch exactly the byte ranges a region needs.
        # gzip: the inflate stream reads forward, so 1 MiB read-ahead pays off.
        if location.compression is None:
            options: dict[str, Any] = {"cache_type": "none"}
        else:
            options = {"block_size": 1 << 20, "cache_type": "readahead"}
        fileobj, owned = fileobj.fs.open(fileobj.path, mode="rb", **options), True
    if location.compression == "gzip":
        return _GzipReader(location, fileobj, owned)
    return _FileReader(location, fileobj, owned)
