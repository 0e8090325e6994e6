"""Grid lookup: find an object's ``VoxelAffineIndex`` and read its geometry in the object's order.

Every operation module (reorientation, resampling, writing, interchange, plotting,
maskers) starts from these helpers; the accessor sits on top of all of them and
nothing here imports it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, TypeVar

import numpy as np
import xarray as xr

from ._world_coords import WorldCoordinateArray
from .affine import space_code
from .index import VoxelAffineIndex
from .transform import SPATIAL_DIMS, WORLD_COORDS, VoxelAffineTransform

__all__ = [
    "T_Xarray",
    "axis_order",
    "current_affine",
    "find_index",
    "restore_grid",
    "select_variable",
    "set_space",
    "with_index",
]

T_Xarray = TypeVar("T_Xarray", xr.Dataset, xr.DataArray)

#: The attribute that ``.nifti.encode()`` stores the affine in.
ENCODED_GRID_ATTR = "nifti_affine"


def find_index(obj: xr.Dataset | xr.DataArray) -> VoxelAffineIndex:
    """The object's ``VoxelAffineIndex``, or a ``ValueError`` saying why there is none."""
    for index in obj.xindexes.get_unique():
        if isinstance(index, VoxelAffineIndex):
            return index
    raise ValueError(
        f"this object has no NIfTI voxel grid (no VoxelAffineIndex on x, y, z): {_why_no_grid(obj)}"
    )


def _why_no_grid(obj: xr.Dataset | xr.DataArray) -> str:
    """The likely reason an object has no grid, and how to get it back."""
    if _lazy_world_transform(obj) is not None:
        return (
            "it still has the grid's lazy x, y, z coordinates, but an xarray operation "
            "rebuilt its coordinates without their index (coarsen does). Call "
            "`.nifti.restore_grid()` to re-attach it; nothing is computed."
        )
    holders = [obj] if isinstance(obj, xr.DataArray) else [obj, *obj.data_vars.values()]
    if any(ENCODED_GRID_ATTR in holder.attrs for holder in holders):
        return "it holds an encoded grid (from `.nifti.encode()`): call `.nifti.decode()`."
    if set(WORLD_COORDS) <= set(obj.coords):
        return (
            "x, y, z are plain coordinates here: fancy (array) indexing, such as "
            "isel(i=[0, 5, 7]), leaves voxels that no longer form a regular grid, so the "
            "index is dropped (x, y, z keep the right world positions); select with "
            "integers and slices to keep the grid."
        )
    if set(SPATIAL_DIMS) <= set(obj.dims):
        return (
            "its spatial dims i, j, k are intact but x, y, z and their index are gone "
            "(xarray's polyfit and the map_blocks workaround drop them, and so do drop_vars "
            "and writing NetCDF/Zarr without `.nifti.encode()`). Copy the grid of the object "
            "it came from with `.nifti.restore_grid(like=original)` (nothing is computed); "
            "an array that never had one comes from xr.open_dataset(..., engine='nifti')."
        )
    return (
        "open files with xr.open_dataset(..., engine='nifti'). Fancy (array) indexing and "
        "reductions over i/j/k remove the grid for good, as the result is no longer a "
        "regular voxel grid."
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


def _world_array(data: Any) -> WorldCoordinateArray | None:
    """The lazy world coordinates behind ``data``: ``data`` itself, or the source of a
    dask array that ``chunks=`` made of them and nothing has changed since."""
    if isinstance(data, WorldCoordinateArray):
        return data
    graph = getattr(data, "dask", None)
    # exactly dask's from_array: the wrapped source and one getter per chunk
    if graph is None or len(getattr(graph, "layers", ())) != 2:
        return None
    for value in graph.values():
        for _ in range(4):  # xarray's adapters around the source
            if isinstance(value, WorldCoordinateArray):
                return value if tuple(value.shape) == tuple(data.shape) else None
            value = getattr(value, "array", None)
    return None


def _lazy_world_transform(obj: xr.Dataset | xr.DataArray) -> VoxelAffineTransform | None:
    """The grid behind ``obj``'s lazy world coordinates, if they survived without their index.

    Only coordinates that are still the grid's own lazy arrays, on the grid's
    dims with the grid's sizes, qualify: anything sliced, renamed or loaded
    since may no longer match the data.
    """
    found: VoxelAffineTransform | None = None
    for name, coord in obj.coords.items():
        data = _world_array(coord.variable._data)
        if data is None or name in obj.xindexes:
            continue
        transform = data._transform
        if not isinstance(transform, VoxelAffineTransform):
            continue
        if found is None:
            found = transform
        elif not found.equals(transform):
            return None
    if found is None:
        return None
    for name in found.coord_names:
        if name not in obj.coords:
            return None
        coord = obj.coords[name].variable
        data = _world_array(coord._data)
        if data is None or set(data._dims) != set(coord.dims):
            return None
        if set(coord.dims) != set(found.dims):
            return None
    if any(obj.sizes.get(dim) != size for dim, size in found.dim_size.items()):
        return None
    return found


def with_index(obj: T_Xarray, index: VoxelAffineIndex) -> T_Xarray:
    """``obj`` with ``index`` (and its lazy coordinates) as its grid, replacing any other.

    Attributes of existing ``x, y, z`` coordinates are kept; nothing is computed.
    """
    names = [n for n in index.transform.coord_names if n in obj.coords]
    attrs = {name: dict(obj.coords[name].attrs) for name in names}
    out = obj.drop_vars(names).assign_coords(xr.Coordinates.from_xindex(index))
    for name, kept in attrs.items():
        if kept:
            out.coords[name].attrs = kept
    return out


def restore_grid(obj: T_Xarray, like: xr.Dataset | xr.DataArray | None = None) -> T_Xarray:
    """Re-attach a NIfTI grid that an xarray operation dropped (see ``.nifti.restore_grid``).

    Without ``like``, the grid comes from the lazy ``x, y, z`` coordinates that
    operations such as ``coarsen`` keep while dropping their index. With
    ``like``, the grid of ``like`` is copied; its spatial dims must be in
    ``obj`` with the same sizes. Nothing is computed.

    Examples
    --------
    >>> import os, xarray as xr
    >>> from nibabel.testing import data_path
    >>> bold = xr.open_dataset(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
    >>> coarse = bold.coarsen(time=2).mean()
    >>> restore_grid(coarse).nifti.axcodes
    ('L', 'A', 'S')
    """
    if like is None:
        if any(isinstance(i, VoxelAffineIndex) for i in obj.xindexes.get_unique()):
            return obj
        transform = _lazy_world_transform(obj)
        if transform is None:
            raise ValueError(
                "cannot restore the NIfTI grid: this object has no lazy x, y, z coordinates "
                "of a grid on its dims (they were dropped, loaded or sliced). Copy the grid "
                "of the object it came from with `.nifti.restore_grid(like=original)`."
            )
        return with_index(obj, VoxelAffineIndex(transform))
    index = find_index(like)
    t = index.transform
    wrong = {
        str(dim): (obj.sizes.get(dim), size)
        for dim, size in t.dim_size.items()
        if obj.sizes.get(dim) != size
    }
    if wrong:
        details = ", ".join(
            f"{d}: {have} here, {want} in like" for d, (have, want) in wrong.items()
        )
        raise ValueError(
            f"cannot copy the grid of `like`: its spatial dims do not match this object's "
            f"({details}). Only objects on the same voxel grid can share it; resample with "
            "`.nifti.resample_to(like)` instead."
        )
    return with_index(obj, index)


def set_space(obj: T_Xarray, space: str) -> T_Xarray:
    """``obj`` with its grid labelled as world space ``space`` (see ``.nifti.set_space``).

    Examples
    --------
    >>> import os, xarray as xr
    >>> from nibabel.testing import data_path
    >>> bold = xr.open_dataset(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
    >>> set_space(bold, "mni").nifti.space
    'mni'
    """
    code = space_code(space)
    index = find_index(obj)
    t = index.transform
    geometry = t.geometry.in_space(code)
    relabelled = VoxelAffineTransform(geometry, t.axis_dims, t.coord_names, t.source)
    return with_index(obj, VoxelAffineIndex(relabelled))
