"""Lazy, chunked resampling onto another grid via ``inv(B) @ A``.

Each output block maps its voxel corners into the source grid, reads only the
source region that covers them (plus an interpolation margin), and runs
:func:`scipy.ndimage.map_coordinates` on that region: no task ever touches
the whole image.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.delayed import delayed

from .affine import inverse_affine
from .grid import axis_order, current_affine, find_index
from .index import VoxelAffineIndex
from .transform import NiftiGeometry

__all__ = ["resample_to"]

_BLOCK_VOXELS = 64**3
# Interpolation needs neighbours: 1 voxel for linear; cubic splines are
# prefiltered per block, and a margin of 8 voxels damps the block-edge error
# of the prefilter below 1e-4 of the signal.
_MARGIN = {0: 1, 1: 1, 2: 6, 3: 8, 4: 8, 5: 8}


def _target_grid(
    target: Any, source_geometry: NiftiGeometry
) -> tuple[np.ndarray, tuple[int, int, int], xr.Coordinates, tuple[str, str, str]]:
    if isinstance(target, xr.Dataset | xr.DataArray):
        index = find_index(target)
        if len(index.transform.present_axes) != 3:
            raise ValueError("the target grid must have three spatial dims")
        order = axis_order(target, index)
        names = tuple(str(index.transform.axis_dims[a]) for a in order)
        shape = tuple(index.geometry.shape[a] for a in order)
        coords = xr.Coordinates.from_xindex(index)
        return current_affine(target, index), shape, coords, names  # type: ignore[return-value]
    try:
        affine, shape = target
        affine = np.asarray(affine, dtype=np.float64)
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "target must be a Dataset/DataArray on a NIfTI grid or an (affine, shape) pair"
        ) from err
    if affine.shape != (4, 4) or len(shape) != 3:
        raise ValueError(
            f"target needs a 4×4 affine and a 3-D shape, got {affine.shape} and {shape}"
        )
    geometry = NiftiGeometry(
        affine,
        shape,
        sform=affine,
        qform=affine,
        sform_code=source_geometry.sform_code or 2,
        qform_code=source_geometry.qform_code,
    )
    coords = xr.Coordinates.from_xindex(VoxelAffineIndex.from_geometry(geometry))
    return affine, shape, coords, ("i", "j", "k")


def _resample_block(
    source: np.ndarray,
    source_start: np.ndarray,
    mapping: np.ndarray,
    out_start: Sequence[int],
    out_shape: Sequence[int],
    order: int,
    fill_value: float,
    dtype: np.dtype[Any],
) -> np.ndarray:
    from scipy import ndimage

    grids = np.meshgrid(
        *(np.arange(s, s + n, dtype=np.float64) for s, n in zip(out_start, out_shape, strict=True)),
        indexing="ij",
    )
    voxels = np.stack([g.ravel() for g in grids])
    coords = mapping[:3, :3] @ voxels + mapping[:3, 3:4] - source_start[:, None]
    # inv(A) @ B carries float noise: a voxel centre at -1e-16 would count as
    # outside the image in scipy's "constant" mode, so snap near-integers.
    nearest = np.rint(coords)
    coords = np.where(np.abs(coords - nearest) < 1e-9, nearest, coords)
    extra_shape = source.shape[3:]
    out = np.empty(tuple(out_shape) + extra_shape, dtype=dtype)
    flat_source = source.reshape((*source.shape[:3], -1))
    flat_out = out.reshape((*out_shape, -1))
    for n in range(flat_source.shape[3]):
        values = ndimage.map_coordinates(
            np.asarray(
                flat_source[..., n], dtype=dtype if dtype.kind == "f" else flat_source.dtype
            ),
            coords,
            order=order,
            mode="constant",
            cval=fill_value,
            prefilter=order > 1,
        )
        flat_out[..., n] = values.reshape(out_shape)
    return out


def _blocks(shape: Sequence[int], chunks: Sequence[int]) -> list[list[tuple[int, int]]]:
    return [
        [(s, min(s + c, n)) for s in range(0, n, c)] for n, c in zip(shape, chunks, strict=True)
    ]


def resample_to(
    obj: xr.DataArray,
    target: Any,
    *,
    order: int = 1,
    fill_value: float = 0.0,
    chunks: Sequence[int] | None = None,
) -> xr.DataArray:
    """Resample ``obj`` onto ``target``'s grid (see ``.nifti.resample_to``)."""
    if order not in _MARGIN:
        raise ValueError(f"order must be an integer from 0 to 5, got {order!r}")
    index = find_index(obj)
    if len(index.transform.present_axes) != 3:
        raise ValueError("resampling needs all three spatial dims of the source")
    source_affine = current_affine(obj, index)
    target_affine, target_shape, target_coords, target_dims = _target_grid(target, index.geometry)
    mapping = inverse_affine(source_affine) @ target_affine
    order_axes = axis_order(obj, index)
    spatial = [str(index.transform.axis_dims[a]) for a in order_axes]
    extra = [str(d) for d in obj.dims if d not in spatial]
    source = obj.transpose(*spatial, *extra)
    data = source.data
    if not isinstance(data, da.Array):
        data = source.chunk({**dict.fromkeys(spatial, -1), **dict.fromkeys(extra, 1)}).data
    source_shape = np.array(data.shape[:3])
    if order == 0:
        dtype = np.dtype(obj.dtype)
    else:
        dtype = np.dtype(
            np.float32
            if np.dtype(obj.dtype).itemsize <= 4 and obj.dtype.kind != "c"
            else np.float64
        )
        if obj.dtype.kind == "f":
            dtype = np.dtype(obj.dtype)
    side = round(_BLOCK_VOXELS ** (1 / 3))
    out_chunks = tuple(chunks) if chunks is not None else (side, side, side)
    margin = _MARGIN[order]
    extra_blocks = data.chunks[3:]
    extra_starts = [np.cumsum((0, *c))[:-1] for c in extra_blocks]

    rows: dict[tuple[int, ...], Any] = {}
    spatial_blocks = _blocks(target_shape, out_chunks)
    for block_id in itertools.product(*(range(len(b)) for b in spatial_blocks)):
        bounds = [spatial_blocks[a][block_id[a]] for a in range(3)]
        out_start = [b[0] for b in bounds]
        out_shape = [b[1] - b[0] for b in bounds]
        corners = np.array(
            list(itertools.product(*[(b[0], b[1] - 1) for b in bounds])), dtype=float
        )
        mapped = mapping[:3, :3] @ corners.T + mapping[:3, 3:4]
        low = np.maximum(np.floor(mapped.min(axis=1)).astype(int) - margin, 0)
        high = np.minimum(np.ceil(mapped.max(axis=1)).astype(int) + margin + 1, source_shape)
        for extra_id in itertools.product(*(range(len(c)) for c in extra_blocks)):
            extra_sizes = tuple(extra_blocks[a][e] for a, e in enumerate(extra_id))
            key = tuple(block_id) + tuple(extra_id)
            if np.any(high <= low):  # the block lies outside the source image
                rows[key] = da.full(tuple(out_shape) + extra_sizes, fill_value, dtype=dtype)
                continue
            extra_slices = tuple(
                slice(int(extra_starts[a][e]), int(extra_starts[a][e]) + extra_sizes[a])
                for a, e in enumerate(extra_id)
            )
            region = data[
                tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high, strict=True))
                + extra_slices
            ]
            task = delayed(_resample_block, pure=True)(
                region, low.astype(float), mapping, out_start, out_shape, order, fill_value, dtype
            )
            rows[key] = da.from_delayed(task, shape=tuple(out_shape) + extra_sizes, dtype=dtype)
    nested = _nest(rows, [len(b) for b in spatial_blocks] + [len(c) for c in extra_blocks])
    result = da.block(nested)
    kept = {
        name: source.coords[name]
        for name in source.coords
        if set(source.coords[name].dims) <= set(extra)
    }
    out = xr.DataArray(
        result, dims=(*target_dims, *extra), coords=kept, attrs=dict(obj.attrs), name=obj.name
    )
    return out.assign_coords(target_coords)


def _nest(blocks: dict[tuple[int, ...], Any], counts: Sequence[int]) -> Any:
    def build(prefix: tuple[int, ...]) -> Any:
        depth = len(prefix)
        if depth == len(counts):
            return blocks[prefix]
        return [build((*prefix, n)) for n in range(counts[depth])]

    return build(())
