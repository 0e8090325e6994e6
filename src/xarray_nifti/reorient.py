"""Lazy reorientation: flips via ``isel`` with negative steps, then ``transpose`` and renames."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import xarray as xr

from .accessor import axis_order, current_affine, find_index
from .affine import orientation_plan

__all__ = ["reorient"]

T_Xarray = TypeVar("T_Xarray", xr.Dataset, xr.DataArray)


def _layout(obj: xr.Dataset | xr.DataArray, spatial: Sequence[str]) -> list[Hashable]:
    """Dim order of the object's main array (a data variable holding the whole grid)."""
    if isinstance(obj, xr.DataArray):
        return list(obj.dims)
    for var in obj.data_vars.values():
        if set(spatial) <= set(var.dims):
            return list(var.dims)
    return list(obj.dims)


def reorient(obj: T_Xarray, axcodes: str | Sequence[str]) -> T_Xarray:
    """Reorient ``obj`` to ``axcodes`` without resampling (see ``.nifti.reorient``).

    Spatial axes are flipped with negative-step slices (the index derives the
    new affine exactly) and permuted with ``transpose``; the spatial dims are
    then renamed so that the first spatial dim keeps the first name (``i``),
    and so on. Non-spatial dims (``time``, ...) keep their positions. Nothing
    is computed.
    """
    index = find_index(obj)
    transform = index.transform
    if len(transform.present_axes) != 3:
        raise ValueError(
            "reorientation needs all three spatial dims; this grid has only "
            f"{list(transform.dims)} (an integer selection dropped the others)"
        )
    order_axes = axis_order(obj, index)
    names = [str(transform.axis_dims[a]) for a in order_axes]
    shape = [index.geometry.shape[a] for a in order_axes]
    order, flips, _ = orientation_plan(current_affine(obj, index), axcodes, shape)
    flipped = obj.isel(
        {name: slice(None, None, -1) for name, flip in zip(names, flips, strict=True) if flip}
    )
    new_order = [names[axis] for axis in order]
    if new_order == names:
        return flipped
    replacements = iter(new_order)
    layout = [next(replacements) if dim in names else dim for dim in _layout(obj, names)]
    transposed = flipped.transpose(*layout, ...)
    # Dims keep positional names: the first spatial dim is always "i", etc.
    temporary = {name: f"__reorient_{name}" for name in names}
    final = {f"__reorient_{old}": new for old, new in zip(new_order, names, strict=True)}
    return transposed.rename(temporary).rename(final)
