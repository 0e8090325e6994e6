"""Streaming NIfTI writer: values pulled in file order, encoded and written as they come.

Data are pulled in file order (Fortran order: the last axis is slowest) as
slabs (:mod:`xarray_nifti._slabs`): about 8 MiB for data in memory or read
from local uncompressed files, up to ``SLAB_BYTES`` for gzip and remote
sources (read in the fewest slabs), runs of whole chunks of about ``SLAB_BYTES``
for dask data. They are encoded to the stored dtype
(:mod:`xarray_nifti._scaling`) and written while the next slab is read or
computed, so memory stays bounded by a few slabs whatever the image size. For
dask data the slabs follow the chunk boundaries, so that no chunk is computed
twice; when the chunks do not allow that in file order (e.g. whole time series
per chunk of a 4-D image) the chunks are computed one batch at a time and
written to their offsets in the uncompressed data instead (for ``.gz``
through an uncompressed scratch file that is then streamed through the
compressor).

Output is atomic (:mod:`xarray_nifti._atomic`): a temporary file beside the
target, moved into place only when complete. fsspec URLs (``s3://``,
``memory://``...) are written to a local temporary folder first and uploaded
with the filesystem's ``put`` when complete, so the object appears only whole.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any, cast

import numpy as np
import xarray as xr
from nibabel.nifti1 import Nifti1Header
from numpy.typing import DTypeLike

from . import _slabs
from ._atomic import Staging, staged
from ._nifti_plan import NiftiPlan, plan_nifti
from ._optional import require
from ._scaling import encode_block, work_itemsize
from ._slabs import slab_keys, slab_plan
from ._targets import (
    SUFFIXES,
    is_url,
    output_paths,
    reads_in_any_order,
    refuse_overwriting_source,
    suffix_of,
)
from .grid import select_variable

__all__ = ["DEFAULT_COMPRESSLEVEL", "NiftiPlan", "plan_nifti", "to_nifti"]

_TILE = 16  # rows per step when transposing C-ordered blocks to file order
# Slabs of data in memory or read from a local .nii: small enough that reading the next
# one overlaps encoding and writing this one (one 64 MiB slab would leave the two in
# series), large enough that per-slab costs stay small. A 22 MiB T1 reoriented and
# saved as .nii: 22 ms with one slab, 15 ms with 8 MiB slabs, 17-21 ms with 2-4 MiB (in
# the full benchmark run on 2 shared cores, 23.5 → 21.3 ms). The slabs of a reoriented
# image are strided regions of the source, read through the reader's memory map, which
# drops the pages of each read from the process afterwards (see _readers._MappedReader).
_PIPELINE_SLAB_BYTES = 8 << 20
# Bytes per piece when a block is put in file order and written piece by piece: the
# copy is still in the CPU cache when it is written (1 MiB pieces: 12 → 10 ms for 22 MiB).
_WRITE_PIECE_BYTES = 1 << 20
# A chunk-aligned slab larger than this many slabs switches dask data to positional writes.
_ROW_FACTOR = 4
#: gzip level for ``.nii.gz`` (ISA-L level 1: as small as zlib level 1, about 4× faster).
DEFAULT_COMPRESSLEVEL = 1


def _encode(block: np.ndarray, plan: NiftiPlan) -> np.ndarray:
    """Values → stored values in the header's dtype and byte order."""
    out_dtype = plan.header.get_data_dtype()
    if plan.channels:
        records = np.empty(block.shape[:-1], dtype=out_dtype, order="F")
        for n, name in enumerate(out_dtype.names or ()):
            records[name] = block[..., n]
        return records
    return encode_block(block, plan.storage, out_dtype)


def _work_itemsize(plan: NiftiPlan) -> int:
    return work_itemsize(plan.data.dtype, plan.storage, plan.header.get_data_dtype())


def _compute(data: xr.DataArray, key: tuple[Any, ...]) -> np.ndarray:
    return np.asarray(data.variable[key].values)


def _fortran(block: np.ndarray) -> np.ndarray:
    """``block`` in Fortran order; C-ordered blocks are transposed in tiles (about 1.7× faster).

    Other layouts (a reoriented view: permuted, flipped axes) are left to numpy,
    whose copy follows the source's strides better than row tiles do (2× faster).
    """
    if block.flags.f_contiguous or block.ndim < 2 or not block.flags.c_contiguous:
        return np.asfortranarray(block)
    out = np.empty(block.shape, dtype=block.dtype, order="F")
    for start in range(0, block.shape[0], _TILE):
        out[start : start + _TILE] = block[start : start + _TILE]
    return out


def _write_block(fileobj: IO[bytes], block: np.ndarray) -> None:
    """Write ``block`` in file order, in pieces along its last axis when it must be copied.

    File order is Fortran order, whose slowest axis is the last: the pieces
    ``block[..., a:b]`` in order are consecutive in the file. C-ordered blocks
    keep the whole-block tiled transpose of :func:`_fortran`.
    """
    contiguous = block.flags.f_contiguous or block.flags.c_contiguous
    if block.ndim < 2 or contiguous or block.nbytes <= _WRITE_PIECE_BYTES:
        pieces: Iterator[np.ndarray] = iter((block,))
    else:
        step = max(1, _WRITE_PIECE_BYTES // max(block[..., 0].nbytes, 1))
        pieces = (block[..., start : start + step] for start in range(0, block.shape[-1], step))
    for piece in pieces:
        flat = _fortran(piece).reshape(-1, order="F")
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
    # A gzip stream or a remote object read out of file order (a reoriented image) would
    # be inflated or fetched once per slab: such sources are read in the fewest slabs.
    small_slabs = chunks is None and reads_in_any_order(data)
    target = _PIPELINE_SLAB_BYTES if small_slabs else None
    slabs = slab_plan(plan.shape, _work_itemsize(plan), chunks, target)
    if chunks is not None and slabs.moved and slabs.slab_bytes > _ROW_FACTOR * _slabs.SLAB_BYTES:
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

        # One task per chunk, computed without dask's final assembly: that would
        # copy each Fortran-ordered chunk into a C-ordered array, only for it to
        # be transposed back for the file.
        tasks = data.data.to_delayed()
        edges = list(itertools.accumulate(all_chunks[slabs.cut], initial=0))

        def compute_blocks(key: tuple[Any, ...]) -> Sequence[np.ndarray]:
            span = key[slabs.cut]
            first, last = edges.index(span.start), edges.index(span.stop)
            outer = tuple(int(i) for i in key[slabs.cut + 1 :])
            index = (0,) * slabs.cut
            rest = (0,) * (len(all_chunks) - ndim)
            blocks = [tasks[(*index, n, *outer, *rest)] for n in range(first, last)]
            return list(dask_compute(*blocks))

        _pipelined(slab_keys(plan.shape, slabs), compute_blocks, consume)
        return

    def compute(key: tuple[Any, ...]) -> Sequence[np.ndarray]:
        return [_compute(data, key + full_key)]

    _pipelined(slab_keys(plan.shape, slabs), compute, consume)


class _UsePositional(Exception):
    """The dask chunks do not fit file order: write chunks at their offsets instead."""


def _block_batches(darr: Any, ndim: int) -> Iterator[list[tuple[tuple[int, ...], Any]]]:
    """Chunk tasks of a dask array in file order, grouped up to ``SLAB_BYTES``.

    Tasks, not ``darr.blocks[...]``: computing a block array would copy the
    Fortran-ordered chunk into a C-ordered one.
    """
    grid = [range(n) for n in darr.numblocks]
    tasks = darr.to_delayed()
    batch: list[tuple[tuple[int, ...], Any]] = []
    size = 0
    for combo in itertools.product(*reversed(grid[:ndim])):
        index = tuple(reversed(combo)) + (0,) * (len(grid) - ndim)
        block = tasks[index]
        block_shape = [darr.chunks[axis][n] for axis, n in enumerate(index)]
        nbytes = int(math.prod(block_shape)) * max(darr.dtype.itemsize, 4)
        if batch and size + nbytes > _slabs.SLAB_BYTES:
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
        piece = source.read(_slabs.SLAB_BYTES // 4)
        if not piece:
            return
        target.write(piece)


# -- files ----------------------------------------------------------------------------------------


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
    dtype: DTypeLike | None = None,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
    storage_options: dict[str, Any] | None = None,
) -> Path | str:
    """Write ``obj`` as NIfTI, streaming and atomically (see ``.nifti.to_nifti``).

    ``compresslevel`` is the gzip level (0-9) of ``.gz`` outputs: the default
    1 uses ISA-L, other levels zlib-ng. ``path`` may be an fsspec URL
    (``storage_options`` go to fsspec); the URL is returned for those, the
    local path otherwise.

    Examples
    --------
    >>> import fsspec, numpy as np, xarray as xr
    >>> from nibabel.testing import data_path
    >>> ds = xr.open_dataset(f"{data_path}/anatomical.nii", engine="nifti")
    >>> to_nifti(ds, "memory://doctest/anatomical.nii.gz")
    'memory://doctest/anatomical.nii.gz'
    >>> fsspec.filesystem("memory").exists("/doctest/anatomical.nii.gz")
    True
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"to_nifti writes to a path or URL, not {type(path).__name__}")
    name = os.fspath(path)
    level = _check_compresslevel(compresslevel)
    array = select_variable(obj, var)
    if is_url(name):
        return _to_url(array, name, version, dtype, level, storage_options or {})
    if name.startswith("file://"):
        name = name[len("file://") :]
    target = Path(name).expanduser()
    suffix_of(target.name)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT, f"{target}: the folder {target.parent} does not exist"
        )
    _write_local(array, target, version, dtype, level)
    return target


def _write_local(
    array: xr.DataArray, target: Path, version: int | None, dtype: DTypeLike | None, level: int
) -> None:
    pair, compressed = SUFFIXES[suffix_of(target.name)]
    plan = plan_nifti(array, version=version, dtype=dtype, pair=pair)
    outputs = [Path(p) for p in output_paths(str(target))]
    for output in outputs:
        if output.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"{output}: is a directory")
    refuse_overwriting_source(array, [str(p) for p in outputs])
    with staged() as staging:
        _write_files(plan, outputs, pair, compressed, level, staging)


def _to_url(
    array: xr.DataArray,
    url: str,
    version: int | None,
    dtype: DTypeLike | None,
    level: int,
    storage_options: dict[str, Any],
) -> str:
    suffix_of(url)
    fsspec = require("fsspec", "remote", f"writing {url}")
    fs, remote_path = fsspec.core.url_to_fs(url, **storage_options)
    refuse_overwriting_source(array, output_paths(url))
    with tempfile.TemporaryDirectory(prefix="xarray-nifti-upload-") as folder:
        local = Path(folder) / remote_path.rstrip("/").rsplit("/", 1)[-1]
        _write_local(array, local, version, dtype, level)
        pieces = list(zip(output_paths(str(local)), output_paths(remote_path), strict=True))
        # The image before its header: a pair is found by its header only when complete.
        for local_file, remote_file in reversed(pieces):
            fs.put_file(local_file, remote_file)
    return url


def _write_files(
    plan: NiftiPlan,
    outputs: list[Path],
    pair: bool,
    compressed: bool,
    level: int,
    staging: Staging,
) -> None:
    header = plan.header
    image_path = outputs[-1]
    gz_name = image_path.name[:-3] if compressed else image_path.name
    with ExitStack() as stack:
        if pair:
            header_handle = staging.open(outputs[0], stack)
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
        handle = staging.open(image_path, stack)
        image: IO[bytes] = _compressor(handle, gz_name, level, stack) if compressed else handle
        if not pair:
            header.write_to(image)
            image.write(b"\x00" * (offset - _written(header)))
        try:
            _write_data(image, plan)
        except _UsePositional:
            if compressed:
                # Assemble uncompressed data in a scratch file, then compress it.
                scratch = staging.open(image_path, stack, scratch=True)
                _write_positional(scratch.fileno(), 0, plan)
                _copy_stream(scratch, image)
                staging.discard(scratch)
            else:
                image.flush()
                _write_positional(image.fileno(), offset, plan)
                image.seek(0, os.SEEK_END)


def _written(header: Nifti1Header) -> int:
    """Bytes that ``header.write_to`` writes for a single file (header, extender, extensions)."""
    return int(header.sizeof_hdr) + 4 + int(header.extensions.get_sizeondisk())


def _single_file_offset(header: Nifti1Header) -> int:
    needed = _written(header)
    return int(-(-needed // 16) * 16)
