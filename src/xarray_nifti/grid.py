"""Grid lookup: find an object's ``VoxelAffineIndex`` and read its geometry in the object's order.

Every operation module (reorientation, resampling, writing, interchange, plotting,
maskers) starts from these helpers; the accessor sits on top of all of them and
nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import xarray as xr

from .index import VoxelAffineIndex

__all__ = ["axis_order", "current_affine", "find_index", "select_variable"]


def find_index(obj: xr.Dataset | xr.DataArray) -> VoxelAffineIndex:
    """The object's ``VoxelAffineIndex``, or a ``ValueError`` saying why there is none."""
    for index in obj.xindexes.get_unique():
        if isinstance(index, VoxelAffineIndex):
            return index
    raise ValueError(
        "this object has no NIfTI voxel grid (no VoxelAffineIndex on x, y, z). Open files "
        "with xr.open_dataset(..., engine='nifti'); note that fancy (array) indexing and "
        "reductions over i/j/k drop the grid. Use `.nifti.decode()` after reading a Zarr or "
        "NetCDF copy made with `.nifti.encode()`."
    )


def data_dims(obj: xr.Dataset | xr.DataArray, index: VoxelAffineIndex) -> tuple[Hashable, ...]:
    """Dim order of the image: the first data variable with all the grid's dims."""
    if isinstance(obj, xr.DataArray):
        return tuple(obj.dims)
    grid_dims = set(index.transform.dims)
    for var in obj.data_vars.values():
        if grid_dims <= set(var.dims):
            return tuple(var.dims)
    name = index.transform.coord_names[0]
    return tuple(obj[name].dims) if name in obj.coords else tuple(obj.dims)


def axis_order(obj: xr.Dataset | xr.DataArray, index: VoxelAffineIndex) -> list[int]:
    """Voxel axes of the index in the object's dim order, then dropped axes."""
    t = index.transform
    dims = data_dims(obj, index)
    present = [a for a in t.present_axes if t.axis_dims[a] in dims]
    present.sort(key=lambda a: dims.index(t.axis_dims[a]))
    present += [a for a in t.present_axes if a not in present]
    return present + [a for a in range(3) if a not in present]


def current_affine(obj: xr.Dataset | xr.DataArray, index: VoxelAffineIndex) -> np.ndarray:
    """Affine whose columns follow the object's dim order (dropped axes last)."""
    order = axis_order(obj, index)
    return index.geometry.affine[:, [*order, 3]]


def select_variable(obj: xr.Dataset | xr.DataArray, var: str | None) -> xr.DataArray:
    """The one image variable of ``obj`` (``var=`` picks one of several data variables)."""
    if isinstance(obj, xr.DataArray):
        return obj
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"expected an xarray Dataset or DataArray, not {type(obj).__name__}")
    if var is not None:
        if var not in obj.data_vars:
            raise KeyError(f"no data variable {var!r}; the dataset has {list(obj.data_vars)}")
        return obj[var]
    names = list(obj.data_vars)
    if len(names) != 1:
        raise ValueError(
            f"the dataset has {len(names)} data variables {names}; choose one with var=..."
        )
    return obj[names[0]]
