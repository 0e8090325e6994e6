"""From image to matrix and back: ``(…, i, j, k)`` ⇄ ``(…, voxel)`` through a brain mask.

:func:`mask` selects the voxels of a boolean mask in nilearn's order (C order
over the grid's three voxel axes, as ``data[mask]``) and gives a
``(…, voxel)`` array whose ``voxel`` coordinates carry everything needed to go
back: the voxel indices ``i, j, k``, the world positions ``x, y, z``, and the
grid's geometry in the attributes of ``i, j, k``. Coordinates and their
attributes survive arithmetic, reductions over the other dims,
``xr.apply_ufunc`` and a Zarr or NetCDF round trip, so :func:`unmask` works on
any result that still has them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from typing import Any, TypeAlias

import numpy as np
import xarray as xr
from nibabel.spatialimages import SpatialImage

from .grid import T_Xarray, find_index, select_variable
from .index import VoxelAffineIndex, grid_mismatch_message
from .interchange import decode, encode, from_nibabel

__all__ = [
    "VOXEL_DIM",
    "GridImage",
    "as_grid_image",
    "check_same_grid",
    "grid_dims",
    "map_grid_variables",
    "mask",
    "mask_array",
    "mask_values",
    "unmask",
]


#: Name of the dimension of masked (flattened) voxels.
VOXEL_DIM = "voxel"

#: A mask or atlas: an object on a NIfTI grid, a nibabel image or a NIfTI file's path.
GridImage: TypeAlias = xr.DataArray | xr.Dataset | SpatialImage | str | os.PathLike[str]


def _is_dask(data: Any) -> bool:
    return hasattr(data, "__dask_graph__") and data.__dask_graph__() is not None


def as_grid_image(image: GridImage, what: str) -> xr.DataArray:
    """The 3-D image ``image`` (DataArray, Dataset, nibabel image or path) as a DataArray.

    ``what`` names the argument in errors. Trailing non-spatial dims of size
    one (a 4-D file with one volume) are dropped, as nilearn does.

    Examples
    --------
    >>> import numpy as np, nibabel as nib
    >>> img = nib.Nifti1Image(np.ones((2, 3, 4), "uint8"), np.eye(4))
    >>> as_grid_image(img, "mask").dims
    ('i', 'j', 'k')
    """
    if isinstance(image, xr.DataArray):
        array = image
    elif isinstance(image, xr.Dataset):
        array = select_variable(image, None)
    elif isinstance(image, SpatialImage):
        array = select_variable(from_nibabel(image), None)
    elif isinstance(image, str | os.PathLike):
        array = select_variable(xr.open_dataset(image, engine="nifti"), None)
    else:
        raise TypeError(
            f"{what} must be a DataArray or Dataset on a NIfTI grid, a nibabel image or the "
            f"path of a NIfTI file, not {type(image).__name__}"
        )
    index = find_index(array)
    spatial = set(index.transform.dims)
    if len(spatial) != 3:
        raise ValueError(
            f"{what} must be a 3-D image; its grid has only the spatial dims "
            f"{sorted(spatial)} (an integer selection dropped the others)"
        )
    extra = [d for d in array.dims if d not in spatial]
    too_big = {d: array.sizes[d] for d in extra if array.sizes[d] != 1}
    if too_big:
        raise ValueError(
            f"{what} must be a 3-D image, but it also has the dims {too_big}; select one "
            f"volume first, e.g. {what}.isel({next(iter(too_big))}=0)"
        )
    return array.isel(dict.fromkeys(extra, 0), drop=True) if extra else array


def grid_dims(obj: xr.Dataset | xr.DataArray, index: VoxelAffineIndex) -> list[str]:
    """Names of the three spatial dims in the grid's axis order (``i, j, k`` of the file)."""
    if len(index.transform.present_axes) != 3:
        raise ValueError(
            "masks and atlases work on all three spatial dims; this grid has only "
            f"{list(index.transform.dims)} (an integer selection dropped the others)"
        )
    return [str(index.transform.axis_dims[a]) for a in range(3)]


def check_same_grid(
    data_index: VoxelAffineIndex, other: xr.DataArray, what: str, advice: str
) -> None:
    """Raise ``ValueError`` unless ``other`` lies on the data's grid."""
    other_index = find_index(other)
    if data_index.equals(other_index):
        return
    message = grid_mismatch_message(
        data_index.geometry,
        other_index.geometry,
        data_index.transform.axis_dims,
        other_index.transform.axis_dims,
        data_index.transform.source,
        other_index.transform.source,
    )
    raise ValueError(f"{what} is not on the data's voxel grid ({advice}); {message}")


def mask_values(mask_image: xr.DataArray, dims: Sequence[str]) -> np.ndarray:
    """The mask as a boolean numpy array in ``dims`` order; non-binary or empty masks raise."""
    values = np.asarray(mask_image.transpose(*dims).values)
    if values.dtype == bool:
        selected = values
    else:
        if values.dtype.kind not in "biuf":
            raise TypeError(f"the mask must hold booleans or 0/1 numbers, not {values.dtype}")
        found = np.unique(values)
        if not np.isin(found, (0, 1)).all():
            shown = ", ".join(str(v) for v in found[:6]) + (", ..." if found.size > 6 else "")
            raise ValueError(
                f"the mask must be binary (0/1 or booleans) but holds the values {shown}; "
                "threshold it first, e.g. `mask > 0`, or use `.nifti.regions(labels)` for an "
                "atlas of several labels"
            )
        selected = values == 1
    if not selected.any():
        raise ValueError("the mask is empty: it selects no voxel")
    return selected


def _take_voxels(block: np.ndarray, flat_index: np.ndarray) -> np.ndarray:
    """The selected voxels of a ``(…, i, j, k)`` block, C order over ``i, j, k``."""
    flat = block.reshape(*block.shape[:-3], -1)
    return flat[..., flat_index]


def _geometry_attrs(index: VoxelAffineIndex) -> dict[str, Any]:
    # The one serialisation of a grid is `encode`'s: reuse it on coordinates only.
    coords = xr.Dataset(coords=xr.Coordinates.from_xindex(index))
    return dict(encode(coords).attrs)


def _voxel_coords(index: VoxelAffineIndex, dims: Sequence[str], selected: np.ndarray) -> Any:
    positions = np.nonzero(selected)
    attrs = _geometry_attrs(index)
    ijk = np.stack([p.astype(np.float64) for p in positions])
    world = index.geometry.affine[:3, :3] @ ijk + index.geometry.affine[:3, 3:4]
    coords: dict[Hashable, Any] = {
        name: (VOXEL_DIM, pos.astype(np.int64), dict(attrs))
        for name, pos in zip(dims, positions, strict=True)
    }
    for row, name in enumerate(("x", "y", "z")):
        units = {"units": "mm", "long_name": f"world {name} (RAS+)"}
        coords[name] = (VOXEL_DIM, world[row], units)
    return coords


def mask_array(
    array: xr.DataArray, index: VoxelAffineIndex, dims: list[str], selected: np.ndarray
) -> xr.DataArray:
    """``array``'s voxels where ``selected`` (in ``dims`` order) is true, as ``(…, voxel)``.

    Dask input stays lazy: each block of whole volumes gives one block of the
    result, so chunks along the other dims (``time``) are kept.
    """
    lead = [str(d) for d in array.dims if d not in dims]
    ordered = array.transpose(*lead, *dims)
    flat_index = np.flatnonzero(selected)
    flat_index = flat_index.astype(np.int32 if flat_index[-1] < 2**31 else np.int64)
    data = ordered.data
    if _is_dask(data):
        # Whole volumes per block: each block's selection is one C-order take.
        data = data.rechunk({len(lead) + n: -1 for n in range(3)})
        result: Any = data.map_blocks(
            partial(_take_voxels, flat_index=flat_index),
            drop_axis=[len(lead) + 1, len(lead) + 2],
            chunks=(*data.chunks[: len(lead)], (flat_index.size,)),
            dtype=data.dtype,
        )
    else:
        result = _take_voxels(np.asarray(data), flat_index)
    kept = {
        name: coord.variable
        for name, coord in ordered.coords.items()
        if set(coord.dims) <= set(lead) and name not in ("x", "y", "z")
    }
    out = xr.DataArray(result, dims=(*lead, VOXEL_DIM), coords=kept, name=array.name)
    out.attrs = dict(array.attrs)
    return out.assign_coords(_voxel_coords(index, dims, selected))


def map_grid_variables(
    ds: xr.Dataset, needed: set[str], apply: Callable[[xr.DataArray], xr.DataArray], job: str
) -> xr.Dataset:
    """Apply ``apply`` to every data variable with all ``needed`` dims; keep the others."""
    done: dict[Hashable, xr.DataArray] = {}
    kept: dict[Hashable, xr.DataArray] = {}
    for name, variable in ds.data_vars.items():
        dims = {str(d) for d in variable.dims}
        if needed <= dims:
            done[name] = apply(variable)
        elif not dims & needed:
            kept[name] = variable
        else:
            raise ValueError(
                f"data variable {name!r} has only the dims {sorted(dims & needed)} of "
                f"{sorted(needed)}, so it cannot be {job}; drop it first "
                f"(ds.drop_vars({str(name)!r}))"
            )
    if not done:
        raise ValueError(f"the dataset has no data variable with all of the dims {sorted(needed)}")
    # xr.merge would drop the coordinates' attributes, which hold the grid.
    out = xr.Dataset({**done, **kept}, attrs=dict(ds.attrs))
    return out[[name for name in ds.data_vars if name in out.data_vars]]


def mask(obj: T_Xarray, mask_image: GridImage) -> T_Xarray:
    """The voxels of ``mask_image`` as a ``(…, voxel)`` array (see ``.nifti.mask``)."""
    index = find_index(obj)
    dims = grid_dims(obj, index)
    image = as_grid_image(mask_image, "mask")
    check_same_grid(
        index, image, "the mask", "resample it with `mask.nifti.resample_to(data, order=0)`"
    )
    selected = mask_values(image, dims)
    if isinstance(obj, xr.DataArray):
        return mask_array(obj, index, dims, selected)
    return map_grid_variables(
        obj, set(dims), lambda var: mask_array(var, index, dims, selected), "masked"
    )


# -- back onto the grid ------------------------------------------------------------------------


def _voxel_index(array: xr.DataArray) -> tuple[VoxelAffineIndex, list[np.ndarray]]:
    """The grid and the voxel positions recorded on the ``voxel`` coordinates."""
    if VOXEL_DIM not in array.dims:
        raise ValueError(
            f"unmask needs a {VOXEL_DIM!r} dim as made by `.nifti.mask(...)`; this array has "
            f"the dims {list(array.dims)}"
        )
    holders = [
        coord for coord in array.coords.values() if coord.dims == (VOXEL_DIM,) and coord.attrs
    ]
    source = next((c for c in holders if "nifti_affine" in c.attrs), None)
    if source is None:
        raise ValueError(
            f"the {VOXEL_DIM!r} coordinates have lost the grid geometry (the nifti_affine, "
            "nifti_shape, ... attributes of the i, j, k coordinates made by `.nifti.mask`), so "
            "unmask does not know the grid; keep the coordinates, or copy them back with "
            "`result.assign_coords(masked.coords)`"
        )
    index = find_index(decode(xr.Dataset(attrs=dict(source.attrs))))
    names = [str(index.transform.axis_dims[a]) for a in range(3)]
    missing = [n for n in names if n not in array.coords or array[n].dims != (VOXEL_DIM,)]
    if missing:
        raise ValueError(
            f"unmask needs the voxel-index coordinates {names} along {VOXEL_DIM!r}; missing "
            f"{missing}. Keep the coordinates made by `.nifti.mask`, or copy them back with "
            "`result.assign_coords(masked.coords)`"
        )
    positions = [np.asarray(array[n].values).astype(np.int64) for n in names]
    shape = index.geometry.shape
    for name, pos, size in zip(names, positions, shape, strict=True):
        if pos.size and (pos.min() < 0 or pos.max() >= size):
            raise ValueError(
                f"coordinate {name!r} holds voxel indices outside the grid (0..{size - 1})"
            )
    flat = np.ravel_multi_index(tuple(positions), shape)
    if np.unique(flat).size != flat.size:
        raise ValueError(
            f"the {VOXEL_DIM!r} coordinates name the same voxel more than once, so it would "
            "get two values; select unique voxels first"
        )
    return index, positions


def _scatter(
    values: np.ndarray, flat: np.ndarray, shape: tuple[int, int, int], fill: Any
) -> np.ndarray:
    """``(…, voxel)`` values placed into ``(…, *shape)`` volumes filled with ``fill``."""
    out = np.full((*values.shape[:-1], int(np.prod(shape))), fill, dtype=values.dtype)
    out[..., flat] = values
    return out.reshape(*values.shape[:-1], *shape)


def _unmask_array(array: xr.DataArray, fill_value: float) -> xr.DataArray:
    index, positions = _voxel_index(array)
    shape = index.geometry.shape
    names = [str(index.transform.axis_dims[a]) for a in range(3)]
    lead = [str(d) for d in array.dims if d != VOXEL_DIM]
    clash = [d for d in lead if d in names]
    if clash:
        raise ValueError(f"the array already has the spatial dims {clash}; it cannot be unmasked")
    dtype = np.result_type(array.dtype, np.min_scalar_type(fill_value))
    if array.dtype.kind in "biu" and not float(fill_value).is_integer():
        dtype = np.result_type(array.dtype, np.float32)
    ordered = array.transpose(*lead, VOXEL_DIM)
    data = ordered.data.astype(dtype) if ordered.dtype != dtype else ordered.data
    flat = np.ravel_multi_index(tuple(positions), shape)
    fill = np.asarray(fill_value, dtype=dtype)
    if _is_dask(data):
        data = data.rechunk({len(lead): -1})
        result: Any = data.map_blocks(
            partial(_scatter, flat=flat, shape=shape, fill=fill),
            new_axis=[len(lead) + 1, len(lead) + 2],
            chunks=(*data.chunks[: len(lead)], (shape[0],), (shape[1],), (shape[2],)),
            dtype=dtype,
        )
    else:
        result = _scatter(np.asarray(data), flat, shape, fill)
    voxel_coords = {name for name, coord in array.coords.items() if VOXEL_DIM in coord.dims}
    kept = {
        name: coord.variable for name, coord in ordered.coords.items() if name not in voxel_coords
    }
    out = xr.DataArray(result, dims=(*lead, *names), coords=kept, name=array.name)
    out.attrs = dict(array.attrs)
    out = out.transpose(*names, *lead)
    return out.assign_coords(xr.Coordinates.from_xindex(index))


def unmask(obj: T_Xarray, fill_value: float = 0) -> T_Xarray:
    """``(…, voxel)`` data back onto its grid (see ``.nifti.unmask``)."""
    if isinstance(fill_value, bool) or not isinstance(fill_value, int | float | np.number):
        raise TypeError(f"fill_value must be a real number, got {fill_value!r}")
    if isinstance(obj, xr.DataArray):
        return _unmask_array(obj, fill_value)
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"expected an xarray Dataset or DataArray, not {type(obj).__name__}")
    return map_grid_variables(
        obj, {VOXEL_DIM}, lambda var: _unmask_array(var, fill_value), "unmasked"
    )
