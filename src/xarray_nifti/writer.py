"""Streaming, atomic NIfTI writer.

Data are pulled in file order (Fortran order: the last axis is slowest) as
slabs of about ``_SLAB_BYTES``, encoded to the stored dtype and written as
they come, while the next slab is computed, so memory stays bounded by a few
slabs whatever the image size. For dask data the slabs follow the chunk
boundaries, so that no chunk is computed twice; when the chunks do not allow
that in file order (e.g. whole time series per chunk of a 4-D image) the
chunks are computed one batch at a time and written to their offsets in the
uncompressed data instead (for ``.gz`` through an uncompressed scratch file
that is then streamed through the compressor).

Output goes to a temporary file beside the target (``.NAME.*.part``) and is
moved into place with :func:`os.replace` only when complete; any exception
(including ``KeyboardInterrupt``) removes the temporary file and leaves an
existing target untouched. A process killed with ``SIGKILL`` can leave a
hidden ``.part`` file behind, never a partial target.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import xarray as xr

from ._metadata import DIM_NAMES, build_header
from .array import NiftiBackendArray
from .grid import axis_order, find_index, select_variable
from .transform import NiftiGeometry

__all__ = ["DEFAULT_COMPRESSLEVEL", "NiftiPlan", "plan_nifti", "to_nifti"]

_SLAB_BYTES = 64 << 20
_TILE = 16  # rows per step when transposing C-ordered blocks to file order
# A chunk-aligned slab larger than this switches dask data to positional writes.
_ROW_FACTOR = 4
_NIFTI1_MAX_DIM = 32767
_MAX_DIMS = 7
_RGB_DIM = "rgb"
_SUFFIXES = {
    ".nii": (False, False),
    ".nii.gz": (False, True),
    ".hdr": (True, False),
    ".img": (True, False),
    ".hdr.gz": (True, True),
    ".img.gz": (True, True),
}
#: gzip level for ``.nii.gz`` (ISA-L level 1: as small as zlib level 1, about 4× faster).
DEFAULT_COMPRESSLEVEL = 1


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise ValueError(
        f"{path}: unsupported suffix; write NIfTI as .nii, .nii.gz, .hdr/.img or .img.gz"
    )


@dataclass(frozen=True)
class _Storage:
    """How values become stored values."""

    dtype: np.dtype[Any]
    slope: float | None = None  # header scl_slope
    inter: float | None = None  # header scl_inter
    transform: bool = False  # stored = (value - inter) / slope, else values are stored as they are


def _number(value: Any) -> float | None:
    """A finite, non-zero scaling factor (NIfTI: a zero slope means unscaled)."""
    if value is None:
        return None
    number = float(np.asarray(value).item())
    return number if math.isfinite(number) and number != 0 else None


def _same_numeric(stored: Any, dtype: np.dtype[Any]) -> bool:
    try:
        return bool(np.dtype(stored).newbyteorder("=") == dtype.newbyteorder("="))
    except TypeError:
        return False


def _storage(array: xr.DataArray, dtype: Any, encoding: Mapping[str, Any]) -> _Storage:
    scale = _number(encoding.get("scale_factor"))
    offset = _number(encoding.get("add_offset"))
    scaled = scale is not None or offset is not None
    from_encoding = False
    try:
        requested = None if dtype is None else np.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"dtype={dtype!r} is not a dtype NIfTI can store") from err
    if requested is not None:
        target = requested
    elif scaled and "dtype" in encoding:
        target, from_encoding = np.dtype(encoding["dtype"]), True
    elif "dtype" in encoding and _same_numeric(encoding["dtype"], array.dtype):
        # Unchanged since it was read: stored as the file stored it.
        target = np.dtype(encoding["dtype"])
    elif array.dtype == np.bool_:
        target = np.dtype(np.uint8)
    elif array.dtype.kind == "f":
        # Float results are stored as float32 unless asked otherwise: other
        # tools read float32 everywhere and the files are half the size.
        target = np.dtype(np.float32)
    else:
        target = array.dtype
    if target.kind not in "iufc" or array.dtype.kind not in "biufc":
        what = target if target.kind not in "iufc" else array.dtype
        raise TypeError(
            f"NIfTI cannot store dtype {what}; convert with .astype(...) to a numeric dtype "
            "(or pass dtype=)"
        )
    if scaled and (target.kind in "iu" or from_encoding):
        return _Storage(target, 1.0 if scale is None else scale, offset or 0.0, transform=True)
    raw_scale = _number(array.attrs.get("scale_factor"))
    raw_offset = _number(array.attrs.get("add_offset"))
    if array.dtype.kind in "iu" and (raw_scale is not None or raw_offset is not None):
        # mask_and_scale=False: stored values with their factors in attrs.
        return _Storage(target, 1.0 if raw_scale is None else raw_scale, raw_offset or 0.0)
    return _Storage(target)


@dataclass(frozen=True)
class NiftiPlan:
    """Everything needed to write one DataArray as NIfTI."""

    data: xr.DataArray  # transposed to NIfTI axis order, spatial dims padded (rgb last)
    header: Any
    stored: np.dtype[Any]  # numeric dtype of the values (uint8 for RGB)
    slope: float | None
    inter: float | None
    geometry: NiftiGeometry
    transform: bool = False  # whether values are scaled by slope/inter when stored
    channels: int = 0  # 3 (RGB) or 4 (RGBA) when the data has an ``rgb`` dim

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the stored array (without the ``rgb`` dim)."""
        shape = tuple(int(n) for n in self.data.shape)
        return shape[:-1] if self.channels else shape


def _times(array: xr.DataArray) -> np.ndarray | None:
    if "time" not in array.dims or "time" not in array.coords:
        return None
    values = array["time"].values
    if values.dtype.kind == "m":  # decoded as timedeltas by a NetCDF/Zarr reader
        return np.asarray(values / np.timedelta64(1, "s"), dtype=np.float64)
    if values.dtype.kind not in "iuf":
        return None
    return np.asarray(values, dtype=np.float64)


def plan_nifti(
    array: xr.DataArray,
    *,
    version: int | None = None,
    dtype: Any = None,
    pair: bool = False,
) -> NiftiPlan:
    """Work out header, axis order and stored dtype for writing ``array``.

    Raises ``ValueError`` for objects without a grid or with dims NIfTI cannot
    hold, ``TypeError`` for dtypes it cannot store.
    """
    index = find_index(array)
    transform = index.transform
    order = axis_order(array, index)
    present = [str(transform.axis_dims[a]) for a in order if transform.axis_dims[a] is not None]
    channels = 0
    if _RGB_DIM in array.dims:
        channels = int(array.sizes[_RGB_DIM])
        if channels not in (3, 4):
            raise ValueError(f"an 'rgb' dim must have 3 (RGB) or 4 (RGBA) entries, not {channels}")
    extra = [str(d) for d in array.dims if d not in present and d != _RGB_DIM]
    unknown = [d for d in extra if d not in DIM_NAMES[3:]]
    if unknown:
        raise ValueError(
            f"cannot map dims {unknown} to NIfTI axes: besides the spatial dims "
            f"{present}, NIfTI has 'time', 'u', 'v', 'w' only (at most {_MAX_DIMS} dims); "
            "select or reduce the others first (or rename one to 'time')"
        )
    extra = [d for d in DIM_NAMES[3:] if d in extra]
    data = array.transpose(*present, *extra, *([_RGB_DIM] if channels else []))
    # Dropped spatial axes get size 1 in the file, in their original position.
    expand = [f"__axis{a}" for a in order[len(present) :]]
    for name in expand:
        data = data.expand_dims(name, axis=len(present))
        present.append(name)
    shape = tuple(int(n) for n in data.shape[: len(data.shape) - (1 if channels else 0)])
    if len(shape) > _MAX_DIMS:
        raise ValueError(f"NIfTI holds at most {_MAX_DIMS} dims, this array has {len(shape)}")
    permutation = np.eye(4)[:, [*order, 3]]
    geometry = index.geometry.transformed(permutation, shape[:3])
    # Dropped spatial axes come last in ``order``: without extra dims they are
    # trailing singletons, which NIfTI leaves out (dim[0] counts only real axes).
    nifti_shape = shape if extra else shape[: max(1, len(transform.present_axes))]
    encoding = dict(array.encoding)
    if channels:
        if dtype is not None or array.dtype != np.uint8:
            raise TypeError(
                f"RGB data (an 'rgb' dim) is stored as uint8 per channel; got {array.dtype}"
                + (f" and dtype={dtype!r}" if dtype is not None else "")
            )
        storage = _Storage(np.dtype(np.uint8))
        names = ("R", "G", "B", "A")[:channels]
        header_dtype = np.dtype([(n, "u1") for n in names])
    else:
        storage = _storage(array, dtype, encoding)
        header_dtype = storage.dtype
    if version is None:
        version = 2 if encoding.get("format") == "nifti2" else 1
        if max(shape) > _NIFTI1_MAX_DIM:
            version = 2
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    if version == 1 and max(shape) > _NIFTI1_MAX_DIM:
        raise ValueError(f"NIfTI-1 dims are at most {_NIFTI1_MAX_DIM}; use version=2")
    header = build_header(
        geometry,
        nifti_shape,
        header_dtype,
        array.attrs,
        encoding,
        version=version,
        pair=pair,
        times=_times(array),
    )
    if storage.slope is not None:
        header.set_slope_inter(storage.slope, storage.inter)
    if encoding.get("byteorder") == "big" and header_dtype.itemsize > 1:
        header = header.as_byteswapped(">")
    return NiftiPlan(
        data,
        header,
        storage.dtype,
        storage.slope,
        storage.inter,
        geometry,
        transform=storage.transform,
        channels=channels,
    )


def _encode(block: np.ndarray, plan: NiftiPlan) -> np.ndarray:
    """Values → stored values in the header's dtype and byte order.

    Integer output is rounded and clipped to the dtype's range; NaN becomes 0.
    """
    out_dtype = plan.header.get_data_dtype()
    if plan.channels:
        records = np.empty(block.shape[:-1], dtype=out_dtype, order="F")
        for n, name in enumerate(out_dtype.names or ()):
            records[name] = block[..., n]
        return records
    stored = plan.stored
    if plan.transform and plan.slope is not None:
        work = block.astype(np.complex128 if block.dtype.kind == "c" else np.float64)
        work -= plan.inter or 0.0
        work /= plan.slope
        block = work
    if stored.kind in "iu" and block.dtype.kind in "fc":
        values = block.real if block.dtype.kind == "c" else block
        if not plan.transform or values.dtype != np.float64:
            values = values.astype(np.float64)  # a copy: the caller's block is not changed
        info = np.iinfo(stored)
        # NaN has no integer value: stored as 0, as nibabel does.
        np.rint(values, out=values)
        np.nan_to_num(values, copy=False, nan=0.0, posinf=info.max, neginf=info.min)
        block = np.clip(values, info.min, info.max, out=values)
    elif stored.kind in "iu" and block.dtype.kind in "iu" and block.dtype != stored:
        info = np.iinfo(stored)
        if np.iinfo(block.dtype).min < info.min or np.iinfo(block.dtype).max > info.max:
            block = np.clip(block, info.min, info.max)
    elif stored.kind in "iuf" and block.dtype.kind == "c":
        block = block.real
    return np.asarray(block).astype(out_dtype, copy=False)


def _work_itemsize(plan: NiftiPlan) -> int:
    """Bytes per voxel that computing and encoding a slab may hold at once."""
    size = max(plan.data.dtype.itemsize, plan.header.get_data_dtype().itemsize, 4)
    if plan.transform or (plan.stored.kind in "iu" and plan.data.dtype.kind in "fc"):
        size = max(size, 8)
    return int(size)


# -- slabs in file order ------------------------------------------------------------------


@dataclass(frozen=True)
class _SlabPlan:
    cut: int  # axes < cut are whole in every slab; axes > cut are single indices
    bounds: tuple[tuple[int, int], ...]  # ranges along the cut axis
    slab_bytes: int
    moved: bool  # the cut moved outwards to follow the chunks


def _slab_plan(
    shape: Sequence[int], itemsize: int, chunks: Sequence[Sequence[int]] | None
) -> _SlabPlan:
    """Where to cut the array into slabs that are contiguous in the file."""
    ndim = len(shape)
    if ndim == 0:
        return _SlabPlan(0, ((0, 1),), itemsize, False)
    inner = 1
    cut = ndim - 1
    for axis, size in enumerate(shape):
        if inner * size * itemsize > _SLAB_BYTES:
            cut = axis
            break
        inner *= size
    moved = False
    if chunks is not None:
        # Axes after the cut are written one index at a time: a chunk spanning
        # several indices there would be computed once per index. Move the cut
        # out to the slowest such axis.
        for axis in range(ndim - 1, cut, -1):
            if any(c > 1 for c in chunks[axis]):
                cut, moved = axis, True
                break
    inner = math.prod(shape[:cut])
    row = max(inner * itemsize, 1)
    if chunks is not None:
        edges = list(itertools.accumulate(chunks[cut], initial=0))
    else:
        step = max(1, _SLAB_BYTES // row)
        edges = [*range(0, shape[cut], step), shape[cut]]
    bounds: list[tuple[int, int]] = []
    start = previous = 0
    for edge in edges[1:]:
        # Close the slab at the previous edge when this piece would overflow it.
        if (edge - start) * row > _SLAB_BYTES and previous > start:
            bounds.append((start, previous))
            start = previous
        previous = edge
    if shape[cut] > start:
        bounds.append((start, shape[cut]))
    largest = max(stop - begin for begin, stop in bounds) if bounds else 0
    return _SlabPlan(cut, tuple(bounds), largest * row, moved)


def _slab_keys(shape: Sequence[int], plan: _SlabPlan) -> Iterator[tuple[Any, ...]]:
    ndim = len(shape)
    if ndim == 0:
        yield ()
        return
    cut = plan.cut
    outer = [range(shape[a]) for a in range(ndim - 1, cut, -1)]
    for combo in itertools.product(*outer):
        for start, stop in plan.bounds:
            yield (slice(None),) * cut + (slice(start, stop),) + tuple(reversed(combo))


def _compute(data: xr.DataArray, key: tuple[Any, ...]) -> np.ndarray:
    return np.asarray(data.variable[key].values)


def _fortran(block: np.ndarray) -> np.ndarray:
    """``block`` in Fortran order; C-ordered blocks are transposed in tiles (about 3× faster)."""
    if block.flags.f_contiguous or block.ndim < 2:
        return np.asfortranarray(block)
    out = np.empty(block.shape, dtype=block.dtype, order="F")
    for start in range(0, block.shape[0], _TILE):
        out[start : start + _TILE] = block[start : start + _TILE]
    return out


def _write_block(fileobj: IO[bytes], block: np.ndarray) -> None:
    flat = _fortran(block).reshape(-1, order="F")
    fileobj.write(flat.view(np.uint8).data)


def _pipelined(
    keys: Iterator[Any], compute: Callable[[Any], Any], consume: Callable[[Any, Any], None]
) -> None:
    """``consume(key, compute(key))`` in order, computing the next key meanwhile."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xarray-nifti-write")
    pending: tuple[Any, Future[Any]] | None = None
    try:
        for key in keys:
            future = pool.submit(compute, key)
            if pending is not None:
                consume(pending[0], pending[1].result())
            pending = (key, future)
        if pending is not None:
            consume(pending[0], pending[1].result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_data(fileobj: IO[bytes], plan: NiftiPlan) -> None:
    data = plan.data
    ndim = len(plan.shape)
    full_key = (slice(None),) * (len(data.dims) - ndim)
    all_chunks = data.chunks
    chunks = all_chunks[:ndim] if all_chunks is not None else None
    slabs = _slab_plan(plan.shape, _work_itemsize(plan), chunks)
    if chunks is not None and slabs.moved and slabs.slab_bytes > _ROW_FACTOR * _SLAB_BYTES:
        raise _UsePositional

    def consume(key: Any, blocks: Sequence[np.ndarray]) -> None:
        for block in blocks:
            _write_block(fileobj, _encode(np.asarray(block), plan))

    if all_chunks is not None and all(
        len(c) == 1 for n, c in enumerate(all_chunks) if n < slabs.cut or n >= ndim
    ):
        # Each slab is a run of whole chunks in file order: compute them
        # together and write them one by one (no concatenated copy).
        from dask.base import compute as dask_compute

        darr = data.data
        edges = list(itertools.accumulate(all_chunks[slabs.cut], initial=0))

        def compute_blocks(key: tuple[Any, ...]) -> Sequence[np.ndarray]:
            span = key[slabs.cut]
            first, last = edges.index(span.start), edges.index(span.stop)
            outer = tuple(int(i) for i in key[slabs.cut + 1 :])
            index = (0,) * slabs.cut
            rest = (0,) * (len(all_chunks) - ndim)
            blocks = [darr.blocks[(*index, n, *outer, *rest)] for n in range(first, last)]
            return list(dask_compute(*blocks))

        _pipelined(_slab_keys(plan.shape, slabs), compute_blocks, consume)
        return

    def compute(key: tuple[Any, ...]) -> Sequence[np.ndarray]:
        return [_compute(data, key + full_key)]

    _pipelined(_slab_keys(plan.shape, slabs), compute, consume)


class _UsePositional(Exception):
    """The dask chunks do not fit file order: write chunks at their offsets instead."""


def _block_batches(darr: Any, ndim: int) -> Iterator[list[tuple[tuple[int, ...], Any]]]:
    """Blocks of a dask array in file order, grouped up to ``_SLAB_BYTES``."""
    grid = [range(n) for n in darr.numblocks]
    batch: list[tuple[tuple[int, ...], Any]] = []
    size = 0
    for combo in itertools.product(*reversed(grid[:ndim])):
        index = tuple(reversed(combo)) + (0,) * (len(grid) - ndim)
        block = darr.blocks[index]
        nbytes = int(math.prod(block.shape)) * max(darr.dtype.itemsize, 4)
        if batch and size + nbytes > _SLAB_BYTES:
            yield batch
            batch, size = [], 0
        starts = tuple(sum(darr.chunks[a][:i]) for a, i in enumerate(index[:ndim]))
        batch.append((starts, block))
        size += nbytes
    if batch:
        yield batch


def _pwrite_block(
    fd: int, offset: int, shape: Sequence[int], starts: Sequence[int], block: np.ndarray
) -> None:
    """Write an F-ordered block at its place in an F-ordered array starting at ``offset``."""
    ndim = len(shape)
    itemsize = block.dtype.itemsize
    block = _fortran(block)
    whole = 0
    while whole < ndim and block.shape[whole] == shape[whole]:
        whole += 1
    run_axes = min(whole + 1, ndim)  # axes < run_axes form one contiguous run
    strides = [1, *itertools.accumulate(shape[:-1], lambda a, b: a * b)]
    outer = [range(block.shape[a]) for a in range(ndim - 1, run_axes - 1, -1)]
    base = sum(starts[a] * strides[a] for a in range(run_axes))
    for combo in itertools.product(*outer):
        local = tuple(reversed(combo))
        position = base + sum(
            (starts[a] + i) * strides[a] for a, i in zip(range(run_axes, ndim), local, strict=True)
        )
        piece = block[(slice(None),) * run_axes + local]
        raw = np.asfortranarray(piece).reshape(-1, order="F").view(np.uint8)
        view = memoryview(raw.data)
        written = 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + position * itemsize + written)


def _write_positional(fd: int, offset: int, plan: NiftiPlan) -> None:
    from dask.base import compute as dask_compute

    darr = plan.data.data
    shape = plan.shape
    if darr.ndim > len(shape):  # the rgb channels: one chunk
        darr = darr.rechunk({axis: -1 for axis in range(len(shape), darr.ndim)})

    def compute(batch: list[tuple[tuple[int, ...], Any]]) -> Any:
        return dask_compute(*[block for _, block in batch])

    def consume(batch: list[tuple[tuple[int, ...], Any]], results: Any) -> None:
        for (starts, _), block in zip(batch, results, strict=True):
            _pwrite_block(fd, offset, shape, starts, _encode(np.asarray(block), plan))

    _pipelined(_block_batches(darr, len(shape)), compute, consume)


def _copy_stream(source: IO[bytes], target: IO[bytes]) -> None:
    source.seek(0)
    while True:
        piece = source.read(_SLAB_BYTES // 4)
        if not piece:
            return
        target.write(piece)


# -- files ----------------------------------------------------------------------------------------


def _umask() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _new_temp(path: Path, stack: ExitStack, temps: list[Path]) -> IO[bytes]:
    try:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed by the stack
            dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
        )
    except PermissionError as err:
        raise PermissionError(
            errno.EACCES, f"{path}: no permission to write in the folder {path.parent}"
        ) from err
    temps.append(Path(handle.name))
    stack.callback(handle.close)
    return cast(IO[bytes], handle)


def _compressor(handle: IO[bytes], name: str, compresslevel: int, stack: ExitStack) -> IO[bytes]:
    stream: Any
    if compresslevel == DEFAULT_COMPRESSLEVEL:
        from isal import igzip

        stream = igzip.IGzipFile(
            filename=name, fileobj=handle, mode="wb", compresslevel=compresslevel, mtime=0
        )
    else:
        from zlib_ng import gzip_ng

        stream = gzip_ng.GzipNGFile(
            filename=name, fileobj=handle, mode="wb", compresslevel=compresslevel, mtime=0
        )
    stack.callback(stream.close)
    return cast(IO[bytes], stream)


def _pair_paths(path: Path, suffix: str) -> tuple[Path, Path]:
    gz = ".gz" if suffix.endswith(".gz") else ""
    stem = path.name[: -len(suffix)]
    return path.with_name(stem + ".hdr" + gz), path.with_name(stem + ".img" + gz)


def _companions(name: str) -> set[Path]:
    path = Path(name)
    try:
        suffix = _suffix(path)
    except ValueError:
        return {path}
    if _SUFFIXES[suffix][0]:
        return {path, *_pair_paths(path, suffix)}
    return {path}


def _backend_paths(obj: Any, depth: int = 0) -> Iterator[str]:

    while obj is not None and depth < 16:
        if isinstance(obj, NiftiBackendArray):
            yield obj.location.name
            if obj.location.path is not None:
                yield obj.location.path
            return
        obj = getattr(obj, "array", None)
        depth += 1


def _sources_read(array: xr.DataArray) -> set[Path]:
    """Files that computing ``array`` still reads (by its encoding and its dask graph)."""
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
    paths: set[Path] = set()
    for name in names:
        if "://" not in name:
            paths.update(_companions(name))
    return paths


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _refuse_overwriting_source(array: xr.DataArray, targets: list[Path]) -> None:
    sources = _sources_read(array)
    for target in targets:
        if any(_same_file(target, source) for source in sources):
            raise ValueError(
                f"{target}: refusing to overwrite the file this lazy dataset reads from; "
                "write to another path, or call .load() first to read the data into memory"
            )


def _check_compresslevel(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, int | np.integer) or not 0 <= level <= 9:
        raise ValueError(f"compresslevel must be an integer from 0 to 9, got {level!r}")
    return int(level)


def to_nifti(
    obj: xr.Dataset | xr.DataArray,
    path: str | os.PathLike[str],
    *,
    var: str | None = None,
    version: int | None = None,
    dtype: Any = None,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
) -> Path:
    """Write ``obj`` as NIfTI, streaming and atomically (see ``.nifti.to_nifti``).

    ``compresslevel`` is the gzip level (0-9) of ``.gz`` outputs: the default
    1 uses ISA-L, other levels zlib-ng.
    """
    target = Path(os.fspath(path)).expanduser()
    suffix = _suffix(target)
    pair, compressed = _SUFFIXES[suffix]
    level = _check_compresslevel(compresslevel)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"{target}: the folder {target.parent} does not exist"
        )
    array = select_variable(obj, var)
    plan = plan_nifti(array, version=version, dtype=dtype, pair=pair)
    outputs = list(_pair_paths(target, suffix)) if pair else [target]
    for output in outputs:
        if output.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"{output}: is a directory")
    _refuse_overwriting_source(array, outputs)
    temps: list[Path] = []
    try:
        _write_files(plan, outputs, pair, compressed, level, temps)
        mode = 0o666 & ~_umask()
        for temp, final in zip(temps, outputs, strict=False):
            with suppress(OSError):
                os.chmod(temp, os.stat(final).st_mode & 0o7777 if final.exists() else mode)
        for temp, final in zip(temps, outputs, strict=False):
            os.replace(temp, final)
        temps.clear()
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)
    return target


def _write_files(
    plan: NiftiPlan,
    outputs: list[Path],
    pair: bool,
    compressed: bool,
    level: int,
    temps: list[Path],
) -> None:
    header = plan.header
    image_path = outputs[-1]
    gz_name = image_path.name[:-3] if compressed else image_path.name
    with ExitStack() as stack:
        if pair:
            header_handle = _new_temp(outputs[0], stack, temps)
            header.set_data_offset(0)
            if compressed:
                with ExitStack() as header_stack:
                    stream = _compressor(header_handle, outputs[0].name[:-3], level, header_stack)
                    header.write_to(stream)
            else:
                header.write_to(header_handle)
            offset = 0
        else:
            offset = _single_file_offset(header)
            header.set_data_offset(offset)
        handle = _new_temp(image_path, stack, temps)
        image: IO[bytes] = _compressor(handle, gz_name, level, stack) if compressed else handle
        if not pair:
            header.write_to(image)
            image.write(b"\x00" * (offset - _written(header)))
        try:
            _write_data(image, plan)
        except _UsePositional:
            if compressed:
                # Assemble uncompressed data in a scratch file, then compress it.
                scratch = _new_temp(image_path.with_name(image_path.name + ".raw"), stack, temps)
                _write_positional(scratch.fileno(), 0, plan)
                _copy_stream(scratch, image)
                scratch.close()
                temps.pop().unlink(missing_ok=True)
            else:
                image.flush()
                _write_positional(image.fileno(), offset, plan)
                image.seek(0, os.SEEK_END)


def _written(header: Any) -> int:
    """Bytes that ``header.write_to`` writes for a single file (header, extender, extensions)."""
    return int(header.sizeof_hdr) + 4 + int(header.extensions.get_sizeondisk())


def _single_file_offset(header: Any) -> int:
    needed = _written(header)
    return int(-(-needed // 16) * 16)
