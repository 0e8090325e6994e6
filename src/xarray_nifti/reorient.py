"""Lazy reorientation: flips via ``isel`` with negative steps, then ``transpose`` and renames."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import xarray as xr

from .affine import orientation_plan
from .grid import find_index

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
    spatial = [str(d) for d in transform.dims]
    layout = _layout(obj, spatial)
    # spatial dims in the order of the data (file order if no variable has all three)
    names = [str(d) for d in layout if d in spatial]
    if len(names) != 3:
        names, layout = spatial, list(spatial)
    axes: list[int] = [transform.axis_dims.index(name) for name in names]
    geometry = index.geometry
    affine = geometry.affine[:, [*axes, 3]]
    shape = [geometry.shape[a] for a in axes]
    order, flips, _ = orientation_plan(affine, axcodes, shape)
    flipped = obj.isel(
        {name: slice(None, None, -1) for name, flip in zip(names, flips, strict=True) if flip}
    )
    new_order = [names[axis] for axis in order]
    if new_order == names:
        return flipped
    replacements = iter(new_order)
    new_layout = [next(replacements) if dim in names else dim for dim in layout]
    transposed = flipped.transpose(*new_layout, ...)
    # Dims keep positional names: the first spatial dim is always "i", etc.
    temporary = {name: f"__reorient_{name}" for name in names}
    final = {f"__reorient_{old}": new for old, new in zip(new_order, names, strict=True)}
    return transposed.rename(temporary).rename(final)
