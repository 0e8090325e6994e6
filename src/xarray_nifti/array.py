"""Lazy, picklable access to the voxel data of a NIfTI/Analyze file.

:class:`NiftiBackendArray` holds only a description of where the data lives
(:class:`~xarray_nifti._source.DataLocation`); open files and inflate state
live in per-process readers shared through xarray's ``CachingFileManager``,
so the array pickles at any time and carries no file handle to a dask worker.

Read strategies, chosen per file:

* uncompressed local file: memory map; a region read is one numpy copy, as
  fast as copying a ``np.memmap``;
* gzip: one shared inflate stream per file and process with checkpoints
  (:class:`~xarray_nifti._gzip.GzipStream`), so chunked reads are linear
  and random access costs at most one checkpoint interval;
* file objects and fsspec files: ``seek`` + ``readinto`` of the byte ranges
  a region needs.
"""

from __future__ import annotations

import itertools
import mmap
import os
import threading
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from nibabel.openers import ImageOpener
from xarray.backends import BackendArray, CachingFileManager
from xarray.backends.locks import SerializableLock
from xarray.core import indexing

from ._errors import NiftiFormatError, NiftiTruncatedError
from ._gzip import GzipStream
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


# Read a region as one covering byte range unless that wastes more than this
# factor of the needed bytes (and more than _SPAN_FLOOR bytes).
_SPAN_WASTE = 4
_SPAN_FLOOR = 8 << 20


def _native(array: np.ndarray) -> np.ndarray:
    if array.dtype.fields is None and not array.dtype.isnative:
        array = array.byteswap().view(array.dtype.newbyteorder("="))
    elif array.dtype.fields is not None and not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


class _Reader:
    """Base of the per-process readers (one per file); subclasses fill ``read_into``."""

    def __init__(self, location: DataLocation) -> None:
        self.location = location

    def read_into(self, offset: int, out: memoryview) -> None:
        raise NotImplementedError

    def read_region(self, selection: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """Read ``start, count, step`` (positive step) per axis, F order on disk."""
        return read_region(self.read_into, self.location, selection)

    def hint_chunk_grid(self, first: int, stride: int) -> None:
        """Chunks start at byte ``first + n * stride`` (used by readers that index the file)."""

    def close(self) -> None:
        """Release the file."""


class _MappedReader(_Reader):
    """Uncompressed local file: ``pread`` for contiguous regions, a memory map for strided ones.

    A contiguous region (a volume, a k-slab, the whole image) is read with
    ``os.preadv`` straight into the output array: one kernel copy, and no
    mapped pages that would count in the process's RSS (a per-volume temporal
    mean through a map of the whole file keeps RSS at the file size). The map
    is created on the first strided read only.
    """

    def __init__(self, location: DataLocation) -> None:
        super().__init__(location)
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
        view = np.ndarray(
            loc.shape, dtype=loc.dtype, buffer=self._mapped(), offset=loc.offset, order="F"
        )
        key = tuple(
            slice(start, start + (count - 1) * step + 1, step) for start, count, step in selection
        )
        return np.array(view[key], order="K")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()


# Linux moves at most 0x7ffff000 bytes per read call.
_PREAD_MAX = 1 << 30


def _pread_exactly(fd: int, offset: int, out: memoryview, error: Callable[[], Exception]) -> None:
    """Fill ``out`` from ``fd`` at ``offset``; a short read (file shrank) raises ``error()``."""
    out = out.cast("B") if out.format != "B" or out.ndim != 1 else out
    done = 0
    while done < len(out):
        got = os.preadv(fd, [out[done : done + _PREAD_MAX]], offset + done)
        if got <= 0:
            raise error()
        done += got


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

    def close(self) -> None:
        if self._owned:
            self._fileobj.close()


class _GzipReader(_Reader):
    """gzip-compressed file: one checkpointed inflate stream."""

    def __init__(self, location: DataLocation, fileobj: Any, owned: bool) -> None:
        super().__init__(location)
        self._fileobj = fileobj
        self._owned = owned
        self._stream = GzipStream(fileobj, location.name, location.offset + location.nbytes)

    def read_into(self, offset: int, out: memoryview) -> None:
        self._stream.read_into(offset, out)

    def hint_chunk_grid(self, first: int, stride: int) -> None:
        if self._stream.stride is None:  # the first array's grid wins
            self._stream.set_chunk_grid(first, stride)

    def close(self) -> None:
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
    try:
        return _open_reader(location)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{location.name}: the file was removed or renamed after it was opened ({err})"
        ) from err


def _open_reader(location: DataLocation) -> _Reader:
    fileobj, owned = location.fileobj, False
    if location.path is not None:
        if location.compression is None:
            return _MappedReader(location)
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


def contiguous_start(shape: Sequence[int], selection: Sequence[tuple[int, int, int]]) -> int | None:
    """Flat element index where the region starts if it is one contiguous range, else ``None``.

    True when, for some axis ``p``, every faster axis is selected whole, axis
    ``p`` has step 1 (or one element), and every slower axis has one element.
    """
    start_flat, stride = 0, 1
    partial = False  # a faster axis is not selected whole: slower axes must have count 1
    for (start, count, step), size in zip(selection, shape, strict=True):
        if partial and count != 1:
            return None
        if count > 1 and step != 1:
            return None
        if count != size:
            partial = True
        start_flat += start * stride
        stride *= size
    return start_flat


def _bytes_of(array: np.ndarray) -> memoryview:
    """Writable byte view of a contiguous array's buffer."""
    flat: Any = array.reshape(-1, order="A").view(np.uint8)
    return memoryview(flat)


def read_region(
    read_into: Callable[[int, memoryview], None],
    location: DataLocation,
    selection: Sequence[tuple[int, int, int]],
) -> np.ndarray:
    """Assemble a strided region from contiguous byte ranges, in file order.

    The innermost axes are read as one covering range per combination of the
    outer indices; the split point is the deepest axis whose covering range
    wastes no more than ``_SPAN_WASTE`` times the bytes it needs.
    """
    shape = location.shape
    dtype = location.dtype
    itemsize = dtype.itemsize
    ndim = len(shape)
    counts = tuple(count for _, count, _ in selection)
    out = np.empty(counts, dtype=dtype, order="F")
    if out.size == 0:
        return out
    flat_start = contiguous_start(shape, selection)
    if flat_start is not None:
        # One byte range in the file, laid out exactly as ``out``: read it in place.
        read_into(location.offset + flat_start * itemsize, _bytes_of(out))
        return out
    strides = [1]
    for size in shape[:-1]:
        strides.append(strides[-1] * size)

    # The covering box for axes < p: full extent on axes < p-1, the selected
    # range on axis p-1.
    split, needed = 0, 1
    for axis in range(ndim):
        _, count, step = selection[axis]
        box = strides[axis] * ((count - 1) * step + 1)
        needed_here = needed * count
        if box * itemsize > max(_SPAN_WASTE * needed_here * itemsize, _SPAN_FLOOR) and axis > 0:
            break
        split, needed = axis + 1, needed_here

    inner_shape = [*shape[: split - 1], (counts[split - 1] - 1) * selection[split - 1][2] + 1]
    inner_key = (
        *(
            slice(start, start + (count - 1) * step + 1, step)
            for start, count, step in selection[: split - 1]
        ),
        slice(None, None, selection[split - 1][2]),
    )
    buffer = np.empty(int(np.prod(inner_shape)), dtype=dtype)
    raw = buffer.view(np.uint8).data
    box_view = buffer.reshape(inner_shape, order="F")[inner_key]
    first_inner = selection[split - 1][0] * strides[split - 1]

    outer_axes = list(range(split, ndim))
    # Iterate with the slowest (last) axis outermost so byte offsets only grow.
    ranges = [
        range(selection[a][0], selection[a][0] + selection[a][1] * selection[a][2], selection[a][2])
        for a in reversed(outer_axes)
    ]
    for combo in itertools.product(*ranges):
        outer = tuple(reversed(combo))
        flat = first_inner + sum(i * strides[a] for i, a in zip(outer, outer_axes, strict=True))
        read_into(location.offset + flat * itemsize, raw)
        position: tuple[int, ...] = tuple(
            (i - selection[a][0]) // selection[a][2] for i, a in zip(outer, outer_axes, strict=True)
        )
        where: tuple[Any, ...] = (Ellipsis, *position)
        out[where] = box_view
    return out


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
        # One lock per file and process: the shared reader's seek/inflate state is not thread-safe.
        self._lock = SerializableLock(token=key)
        self._manager = CachingFileManager(
            open_reader, location, mode="rb", manager_id=key, lock=False
        )
        self._grid: tuple[int, int] | None = None
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
        block = 1
        for size, chunk in zip(shape, chunks, strict=False):
            if 0 < chunk < size and size % chunk == 0:
                block *= chunk
                break
            # Whole axis, or irregular chunks: only starts along slower axes are regular.
            block *= size
        else:
            return  # a single chunk, or no regular grid: nothing to hint
        self._grid = (self.location.offset, block * self.location.dtype.itemsize)

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
        # The per-file lock serialises the shared reader's seek/inflate state;
        # acquire_context pins the reader so that another file's open cannot
        # close it (LRU eviction) in the middle of this read.
        if self._closed:  # read after close: this array uses the reader again
            self._closed = False
            _add_user(self._key)
        with self._lock, self._manager.acquire_context(needs_lock=False) as reader:
            if self._grid is not None:
                reader.hint_chunk_grid(*self._grid)
            block = reader.read_region(selection)
        block = _native(block)[tuple(post)]
        if self._channels:
            block = np.stack([block[name] for name in block.dtype.names or ()], axis=-1)
            block = block[(Ellipsis, key[-1])]
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
