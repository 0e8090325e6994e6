"""The array maths of resampling: ``scipy.ndimage.affine_transform`` on numpy or dask arrays.

Arrays here have the three spatial axes first and any others (time, ...) after
them. A target voxel ``w`` samples the source at ``matrix @ w + offset``.

In-memory data is resampled volume by volume with one ``affine_transform``
call each, as nilearn does: ``affine_transform`` walks the output grid
incrementally and is several times faster than ``map_coordinates`` with an
explicit coordinate grid. Dask data gets one task per (spatial block, chunk
of volumes): small targets are a single spatial block, so a 4-D series costs
one task per input chunk of volumes; large targets are split into blocks
that each read only the source region they map onto, plus an interpolation
margin, so no task ever holds the whole image.

dask and scipy are imported on first use, not when the package is imported.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = [
    "MARGIN",
    "Sampling",
    "default_block_shape",
    "is_dask",
    "resample_dask",
    "resample_numpy",
]

# Interpolation needs neighbours: 1 voxel for linear; cubic splines are
# prefiltered per block, and a margin of 8 voxels damps the block-edge error
# of the prefilter below 1e-4 of the signal.
MARGIN = {0: 1, 1: 1, 2: 6, 3: 8, 4: 8, 5: 8}

# Targets up to this many voxels are one spatial block: a 256³ float32 block
# is 64 MB, and below that splitting only adds tasks and prefilter margins.
_SINGLE_BLOCK_VOXELS = 256**3
_BLOCK_SIDE = 128
# Output bytes per task when volumes of a series are batched together.
_TASK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Sampling:
    """Where and how each voxel of the output samples the source.

    Output voxel ``w`` (spatial axes) takes the source's value at
    ``matrix @ w + offset``, interpolated with a spline of ``order``;
    positions outside the source get ``fill_value``.
    """

    matrix: np.ndarray
    offset: np.ndarray
    out_shape: tuple[int, ...]  # spatial shape of the output
    order: int
    fill_value: float
    dtype: np.dtype[Any]  # of the output


def is_dask(data: Any) -> bool:
    """Whether ``data`` is a dask array (without importing dask if nobody has)."""
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(data, dask_array.Array)


def default_block_shape(
    shape: Sequence[int],
    source_shape: Sequence[int] | None = None,
    matrix: np.ndarray | None = None,
) -> tuple[int, int, int]:
    """Spatial block of the output.

    The whole target when both grids are small; otherwise cubes whose source
    region holds about 128³ voxels (a coarse target over a large source gets
    proportionally smaller blocks), so memory per task stays bounded.
    """
    small_source = source_shape is None or int(np.prod(source_shape)) <= _SINGLE_BLOCK_VOXELS
    if int(np.prod(shape)) <= _SINGLE_BLOCK_VOXELS and small_source:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    # source voxels per target voxel along the most stretched direction
    stretch = 1.0 if matrix is None else float(np.linalg.norm(matrix, ord=2))
    side = max(_BLOCK_SIDE // 8, int(_BLOCK_SIDE / max(stretch, 1.0)))
    return (side, side, side)


def _native(array: np.ndarray) -> np.ndarray:
    # scipy's diagonal (zoom/shift) path mishandles non-native byte order
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


def resample_numpy(source: np.ndarray, sampling: Sampling) -> np.ndarray:
    """Resample every volume of an in-memory array (spatial axes first) in one go."""
    from scipy import ndimage

    matrix, dtype = sampling.matrix, sampling.dtype
    source = _native(np.asarray(source))
    if source.dtype == np.bool_:
        source = source.view(np.uint8)
    work_dtype = np.dtype(np.uint8) if dtype == np.bool_ else dtype
    extra = source.shape[3:]
    out = np.empty((*sampling.out_shape, *extra), dtype=work_dtype)
    # A diagonal matrix takes scipy's faster zoom/shift path, as in nilearn.
    is_diagonal = bool(np.all(matrix == np.diag(np.diag(matrix))))
    scipy_matrix = np.diag(matrix) if is_diagonal else matrix
    spatial = (slice(None),) * 3
    for volume in np.ndindex(*extra):
        ndimage.affine_transform(
            source[spatial + volume],
            scipy_matrix,
            offset=sampling.offset,
            output_shape=sampling.out_shape,
            output=out[spatial + volume],
            order=sampling.order,
            mode="constant",
            cval=sampling.fill_value,
            prefilter=sampling.order > 1,
        )
    return out.view(np.bool_) if dtype == np.bool_ else out


def _spans(shape: Sequence[int], block: Sequence[int]) -> list[list[tuple[int, int]]]:
    return [[(s, min(s + c, n)) for s in range(0, n, c)] for n, c in zip(shape, block, strict=True)]


def resample_dask(
    source: Any, sampling: Sampling, block_shape: Sequence[int], *, batch_volumes: bool = True
) -> Any:
    """Lazily resample a dask array.

    With ``batch_volumes``, small chunks along a single non-spatial axis are
    merged so that each task transforms a batch of volumes of about
    ``_TASK_BYTES`` output (one task per volume costs more in scheduling than
    in interpolation for typical EPI sizes); otherwise those chunks are kept.
    """
    import dask.array as da

    out_shape, dtype = sampling.out_shape, sampling.dtype
    block_shape = tuple(min(int(b), n) for b, n in zip(block_shape, out_shape, strict=True))
    if batch_volumes and source.ndim == 4:
        block_bytes = int(np.prod(block_shape)) * dtype.itemsize
        per_task = max(1, _TASK_BYTES // block_bytes)
        if max(source.chunks[3]) < per_task:
            source = source.rechunk({3: per_task})
    extra_chunks = source.chunks[3:]
    if block_shape == out_shape:
        # One spatial block: each task transforms a chunk of whole volumes.
        whole = source.rechunk({0: -1, 1: -1, 2: -1})
        return da.map_blocks(
            resample_numpy,
            whole,
            sampling,
            dtype=dtype,
            chunks=(*((n,) for n in out_shape), *extra_chunks),
            meta=np.empty((0,) * source.ndim, dtype=dtype),
        )
    return _blockwise_graph(source, sampling, block_shape)


def _blockwise_graph(source: Any, sampling: Sampling, block_shape: tuple[int, ...]) -> Any:
    import dask.array as da
    from dask.delayed import delayed

    matrix, offset, dtype = sampling.matrix, sampling.offset, sampling.dtype
    margin = MARGIN[sampling.order]
    source_shape = np.array(source.shape[:3])
    extra_chunks = source.chunks[3:]
    extra_starts = [np.cumsum((0, *c))[:-1] for c in extra_chunks]
    spatial_spans = _spans(sampling.out_shape, block_shape)
    blocks: dict[tuple[int, ...], Any] = {}
    for block_id in itertools.product(*(range(len(s)) for s in spatial_spans)):
        bounds = [spatial_spans[a][block_id[a]] for a in range(3)]
        start = np.array([b[0] for b in bounds], dtype=np.float64)
        shape = tuple(b[1] - b[0] for b in bounds)
        corners = np.array(list(itertools.product(*[(b[0], b[1] - 1) for b in bounds])), float)
        mapped = matrix @ corners.T + offset[:, None]
        low = np.maximum(np.floor(mapped.min(axis=1)).astype(int) - margin, 0)
        high = np.minimum(np.ceil(mapped.max(axis=1)).astype(int) + margin + 1, source_shape)
        # the block's own offset: source voxel of its first voxel, relative to the region read
        block_offset = matrix @ start + offset - low
        for extra_id in itertools.product(*(range(len(c)) for c in extra_chunks)):
            extra_sizes = tuple(extra_chunks[a][e] for a, e in enumerate(extra_id))
            key = (*block_id, *extra_id)
            if np.any(high <= low):  # the block lies outside the source image
                blocks[key] = da.full((*shape, *extra_sizes), sampling.fill_value, dtype=dtype)
                continue
            extra_slices = tuple(
                slice(int(extra_starts[a][e]), int(extra_starts[a][e]) + extra_sizes[a])
                for a, e in enumerate(extra_id)
            )
            region = source[
                tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
                + extra_slices
            ]
            block = replace(sampling, offset=block_offset, out_shape=shape)
            task = delayed(resample_numpy, pure=True)(region, block)
            blocks[key] = da.from_delayed(task, shape=(*shape, *extra_sizes), dtype=dtype)
    counts = [len(s) for s in spatial_spans] + [len(c) for c in extra_chunks]
    return da.block(_nest(blocks, counts))


def _nest(blocks: dict[tuple[int, ...], Any], counts: Sequence[int]) -> Any:
    def build(prefix: tuple[int, ...]) -> Any:
        if len(prefix) == len(counts):
            return blocks[prefix]
        return [build((*prefix, n)) for n in range(counts[len(prefix)])]

    return build(())
