"""Resampling onto another grid: target voxel ``w`` samples the source at ``inv(A) @ B @ w``.

This module handles the xarray side (target grids, Datasets, dims, dtypes,
chunks); :mod:`xarray_nifti._resample_engine` does the array maths.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import xarray as xr

from ._resample_engine import (
    MARGIN,
    Sampling,
    default_block_shape,
    is_dask,
    resample_dask,
    resample_numpy,
)
from .affine import inverse_affine
from .grid import T_Xarray, axis_order, current_affine, find_index
from .index import VoxelAffineIndex
from .transform import NiftiGeometry

__all__ = ["output_dtype", "resample_to"]


Chunks = int | str | Sequence[int] | Mapping[Hashable, int] | None


class _TargetGrid:
    """Affine, shape, dim names and coordinates of the grid to resample onto."""

    def __init__(self, target: Any, source_geometry: NiftiGeometry) -> None:
        if isinstance(target, xr.Dataset | xr.DataArray):
            index = find_index(target)
            if len(index.transform.present_axes) != 3:
                raise ValueError(
                    "the target grid must have three spatial dims; this one has only "
                    f"{list(index.transform.dims)} (an integer selection dropped the others)"
                )
            order = axis_order(target, index)
            self.dims = tuple(str(index.transform.axis_dims[a]) for a in order)
            self.shape = tuple(int(index.geometry.shape[a]) for a in order)
            self.affine = current_affine(target, index)
            self.coords = xr.Coordinates.from_xindex(index)
            return
        try:
            affine, shape = target
            affine = np.asarray(affine, dtype=np.float64)
            shape = tuple(int(n) for n in shape)
        except (TypeError, ValueError) as err:
            raise TypeError(
                "target must be a Dataset/DataArray on a NIfTI grid or an (affine, shape) "
                f"pair, got {type(target).__name__}"
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
        self.dims = ("i", "j", "k")
        self.shape = shape
        self.affine = affine
        self.coords = xr.Coordinates.from_xindex(VoxelAffineIndex.from_geometry(geometry))


def output_dtype(input_dtype: Any, order: int, fill_value: float) -> np.dtype[Any]:
    """The dtype of resampled data.

    Interpolation (``order >= 1``) gives floats: float32 for integers of up
    to 16 bits, float64 for wider ones, float inputs keep their dtype.
    Nearest neighbour (``order=0``) keeps the dtype, so labels stay labels,
    unless ``fill_value`` is not a whole number (``NaN``, ``0.5``): then
    integers become floats by the same rule. A whole ``fill_value`` outside
    the integer type's range raises ``ValueError``: it could only be stored
    wrapped or clipped.

    Examples
    --------
    >>> output_dtype("int16", 1, 0)
    dtype('float32')
    >>> output_dtype("int16", 0, 0), output_dtype("int16", 0, float("nan"))
    (dtype('int16'), dtype('float32'))
    """
    dtype: np.dtype[Any] = np.dtype(input_dtype)
    as_float: np.dtype[Any] = np.dtype(np.float32 if dtype.itemsize <= 2 else np.float64)
    if dtype.kind == "f":
        return as_float if dtype.itemsize < 4 else dtype
    if dtype.kind not in "biu":
        return dtype
    fill = float(fill_value)
    if order > 0 or not fill.is_integer():
        return as_float
    low, high = (0, 1) if dtype.kind == "b" else (np.iinfo(dtype).min, np.iinfo(dtype).max)
    if not low <= fill <= high:
        raise ValueError(
            f"fill_value={fill_value!r} does not fit the image's {dtype} data (range {low} to "
            f"{high}) with order=0; cast first (e.g. .astype('int32') or 'float32') or choose "
            "a fill value in that range"
        )
    return dtype


def _block_shape(
    chunks: Chunks, target: _TargetGrid, extra_dims: Sequence[str], default: tuple[int, int, int]
) -> tuple[tuple[int, int, int] | None, dict[str, int]]:
    """Validate ``chunks=``: the output's spatial block, and chunks of other dims to apply."""
    if chunks is None:
        return None, {}
    if isinstance(chunks, str):
        if chunks != "auto":
            raise ValueError(f"chunks must be an int, a tuple, a dict or 'auto', not {chunks!r}")
        return default, {}
    if isinstance(chunks, bool) or not isinstance(chunks, int | Sequence | Mapping):
        raise TypeError(
            "chunks must be an int, a tuple with one size per spatial dim of the target "
            f"{target.dims}, or a dict by dim name, not {type(chunks).__name__}"
        )
    if isinstance(chunks, int):
        sizes: dict[Hashable, int] = dict.fromkeys(target.dims, chunks)
    elif isinstance(chunks, Mapping):
        sizes = dict(chunks)
        unknown = [d for d in sizes if d not in target.dims and d not in extra_dims]
        if unknown:
            raise ValueError(
                f"chunks names dims {unknown} that the result does not have; its dims are "
                f"{[*target.dims, *extra_dims]}"
            )
    else:
        if len(chunks) != 3:
            raise ValueError(
                f"chunks={tuple(chunks)!r} needs one size per spatial dim of the target "
                f"{target.dims} (3 entries), got {len(chunks)}; pass an int for cubic blocks "
                "or a dict such as {'k': 32}"
            )
        sizes = dict(zip(target.dims, cast(Sequence[int], chunks), strict=True))
    checked: dict[str, int] = {}
    for dim, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise TypeError(f"chunks[{dim!r}] must be an int, got {size!r}")
        if size == -1:
            size = target.shape[target.dims.index(str(dim))] if dim in target.dims else -1
        elif size <= 0:
            raise ValueError(
                f"chunks[{dim!r}] must be positive (or -1 for the whole dim), got {size}"
            )
        checked[str(dim)] = int(size)
    block = tuple(checked.get(d, default[n]) for n, d in enumerate(target.dims))
    others = {d: s for d, s in checked.items() if d not in target.dims}
    return (block[0], block[1], block[2]), others


def _snap(values: np.ndarray) -> np.ndarray:
    # inv(A) @ B carries float noise: a voxel centre at -1e-16 would count as
    # outside the image in scipy's "constant" mode, so snap near-integers.
    nearest = np.rint(values)
    return np.where(np.abs(values - nearest) < 1e-9, nearest, values)


def _resample_array(
    array: xr.DataArray,
    index: VoxelAffineIndex,
    target: _TargetGrid,
    *,
    order: int,
    fill_value: float,
    chunks: Chunks,
) -> xr.DataArray:
    order_axes = axis_order(array, index)
    spatial = [str(index.transform.axis_dims[a]) for a in order_axes]
    extra = [str(d) for d in array.dims if d not in spatial]
    mapping = _snap(inverse_affine(current_affine(array, index)) @ target.affine)
    matrix, offset = mapping[:3, :3], mapping[:3, 3]
    source_shape = [array.sizes[d] for d in spatial]
    default = default_block_shape(target.shape, source_shape, matrix)
    block, extra_chunks = _block_shape(chunks, target, extra, default)
    dtype = output_dtype(array.dtype, order, fill_value)
    sampling = Sampling(matrix, offset, target.shape, order, fill_value, dtype)
    source = array.transpose(*spatial, *extra)
    if extra_chunks:
        source = source.chunk(extra_chunks)
    data = source.data
    if block is None and not is_dask(data):
        result: Any = resample_numpy(np.asarray(data), sampling)
    else:
        if not is_dask(data):
            source = source.chunk(dict.fromkeys(spatial, -1))
            data = source.data
        result = resample_dask(data, sampling, block or default, batch_volumes=not extra_chunks)
    # One Coordinates object built from the target's index and the kept
    # non-spatial coordinates: assign_coords would align them all again.
    variables = dict(target.coords.variables)
    indexes = dict(target.coords.xindexes)
    for name, coord in source.coords.items():
        if set(coord.dims) <= set(extra):
            variables[name] = coord.variable
            if name in source.xindexes:
                indexes[name] = source.xindexes[name]
    # xarray's fast path: the public constructor deep-copies every coordinate
    # (attrs and lazy arrays), which costs as much as resampling a small image.
    variable = xr.Variable((*target.dims, *extra), result, attrs=dict(array.attrs))
    # Shallow copies: the result's coordinates get their own attrs, sharing the lazy data.
    coords = {name: coord.copy(deep=False) for name, coord in variables.items()}
    return xr.DataArray(variable, coords=coords, name=array.name, indexes=indexes, fastpath=True)


def resample_to(
    obj: T_Xarray,
    target: Any,
    *,
    order: int = 1,
    fill_value: float = 0.0,
    chunks: Chunks = None,
    var: str | None = None,
) -> T_Xarray:
    """Resample ``obj`` onto ``target``'s grid (see ``.nifti.resample_to``).

    A Dataset gives a Dataset: every data variable on the grid is resampled,
    variables without spatial dims are kept; ``var=`` keeps only one image
    variable.
    """
    if isinstance(order, bool) or not isinstance(order, int | np.integer) or order not in MARGIN:
        raise ValueError(f"order must be an integer from 0 to 5, got {order!r}")
    if not isinstance(fill_value, int | float | np.number) or isinstance(fill_value, complex):
        raise TypeError(f"fill_value must be a real number, got {fill_value!r}")
    index = find_index(obj)
    if len(index.transform.present_axes) != 3:
        raise ValueError(
            "resampling needs all three spatial dims of the source; this grid has only "
            f"{list(index.transform.dims)} (an integer selection dropped the others)"
        )
    grid = _TargetGrid(target, index.geometry)
    options: dict[str, Any] = {"order": order, "fill_value": fill_value, "chunks": chunks}
    if isinstance(obj, xr.DataArray):
        return _resample_array(obj, index, grid, **options)
    return _resample_dataset(obj, index, grid, var, options)


def _resample_dataset(
    ds: xr.Dataset,
    index: VoxelAffineIndex,
    grid: _TargetGrid,
    var: str | None,
    options: dict[str, Any],
) -> xr.Dataset:
    spatial = {str(d) for d in index.transform.dims}
    if var is not None and var not in ds.data_vars:
        raise KeyError(f"no data variable {var!r}; the dataset has {list(ds.data_vars)}")
    resampled: dict[Hashable, xr.DataArray] = {}
    kept: dict[Hashable, xr.DataArray] = {}
    for name, variable in ds.data_vars.items():
        dims = {str(d) for d in variable.dims}
        if not dims & spatial:
            kept[name] = variable.drop_vars(list(variable.coords))
        elif var is not None and name != var:
            continue
        elif spatial <= dims:
            resampled[name] = _resample_array(variable, index, grid, **options)
        else:
            raise ValueError(
                f"data variable {name!r} has only the spatial dims {sorted(dims & spatial)} of "
                f"the grid {sorted(spatial)}, so it cannot be resampled; drop it first "
                f"(ds.drop_vars({str(name)!r})) or pick the image with var=..."
            )
    if not resampled:
        raise ValueError(f"the dataset has no data variable with all of the dims {sorted(spatial)}")
    coords = {
        name: coord.variable
        for name, coord in ds.coords.items()
        if not {str(d) for d in coord.dims} & spatial
    }
    out = xr.Dataset({**resampled, **kept}, coords=coords, attrs=dict(ds.attrs))
    return out[[*ds.data_vars]] if var is None else out
