"""Region signals from an atlas: one value per label and volume, as nilearn's ``NiftiLabelsMasker``.

The labelled voxels are selected with :func:`~xarray_nifti.masking.mask_array`
(whole volumes per dask block, chunks along ``time`` kept) and reduced with
xarray's ``groupby`` over the ``voxel`` dim, which uses flox when it is
installed. Values are reduced in float64 and returned as float32 for float32
data, float64 otherwise: nilearn's rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import xarray as xr
from xarray.groupers import UniqueGrouper

from ._errors import LabelsResamplingWarning
from .grid import T_Xarray, find_index
from .index import VoxelAffineIndex
from .masking import (
    VOXEL_DIM,
    GridImage,
    as_grid_image,
    grid_dims,
    map_grid_variables,
    mask_array,
)
from .resample import resample_to

__all__ = [
    "REDUCTIONS",
    "REGION_DIM",
    "LabelsResamplingWarning",
    "RegionNames",
    "label_values",
    "regions",
]


#: Name of the dimension of region signals.
REGION_DIM = "region"

#: Region names: ``{label: name}``, a Series by label, or a lookup table with the
#: columns ``index`` (label) and ``name``.
RegionNames: TypeAlias = Mapping[int, str] | pd.Series | pd.DataFrame

#: ``reduce=`` names (nilearn's ``strategy`` names and short aliases) → xarray reduction.
REDUCTIONS: dict[str, str] = {
    "mean": "mean",
    "median": "median",
    "sum": "sum",
    "std": "std",
    "standard_deviation": "std",
    "variance": "var",
    "minimum": "min",
    "maximum": "max",
}


def label_values(labels: xr.DataArray, dims: list[str]) -> np.ndarray:
    """The atlas as an integer numpy array in ``dims`` order; non-integer labels raise.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> atlas = xr.DataArray(np.array([[[0.0, 2.0]]]), dims=("i", "j", "k"))
    >>> label_values(atlas, ["i", "j", "k"]).dtype
    dtype('int64')
    """
    values = np.asarray(labels.transpose(*dims).values)
    if values.dtype == bool:
        return values.astype(np.int64)
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    if values.dtype.kind != "f":
        raise TypeError(f"the labels image must hold integer labels, not {values.dtype} values")
    if not np.isfinite(values).all():
        raise ValueError("the labels image holds NaN or infinite values; labels must be integers")
    fractional = values != np.round(values)
    if fractional.any():
        shown = ", ".join(str(v) for v in np.unique(values[fractional])[:5])
        raise ValueError(
            f"the labels image holds values that are not whole numbers ({shown}, ...); an "
            "atlas needs integer labels: was it resampled with interpolation? Resample "
            "atlases with order=0 (nearest neighbour)"
        )
    return values.astype(np.int64)


def _labels_on_grid(
    obj: xr.Dataset | xr.DataArray, index: VoxelAffineIndex, labels: GridImage, dims: list[str]
) -> np.ndarray:
    atlas = as_grid_image(labels, "labels")
    atlas_index = find_index(atlas)
    # Check before resampling: nearest neighbour keeps values, so the check holds after.
    before = label_values(atlas, [str(atlas_index.transform.axis_dims[a]) for a in range(3)])
    if index.equals(atlas_index):
        return label_values(atlas, dims)
    resampled = resample_to(atlas, obj, order=0, fill_value=0)
    values = label_values(resampled, dims)
    vanished = sorted(set(np.unique(before).tolist()) - set(np.unique(values).tolist()) - {0})
    if vanished:
        warnings.warn(
            f"the labels {vanished} vanished when the atlas was resampled (nearest neighbour) "
            "onto the data's grid, which is coarser than their regions; they are left out of "
            "the result",
            LabelsResamplingWarning,
            stacklevel=4,
        )
    return values


def _region_names(names: Any, regions: np.ndarray) -> list[str]:
    """Each region's name from a mapping, a Series or a lookup table (index, name columns)."""
    if hasattr(names, "columns"):
        if not {"index", "name"} <= set(names.columns):
            raise ValueError(
                "a lookup table for names= needs the columns 'index' (label values) and 'name'; "
                f"this one has {list(names.columns)}"
            )
        table = {int(i): str(n) for i, n in zip(names["index"], names["name"], strict=True)}
    elif isinstance(names, Mapping) or hasattr(names, "to_dict"):
        mapping = names if isinstance(names, Mapping) else names.to_dict()
        table = {int(i): str(n) for i, n in mapping.items()}
    else:
        raise TypeError(
            "names must be a mapping {label: name}, a pandas Series or a lookup table "
            f"(DataFrame with 'index' and 'name' columns), not {type(names).__name__}"
        )
    missing = [int(r) for r in regions if int(r) not in table]
    if missing:
        raise ValueError(f"names has no entry for the labels {missing[:10]}")
    return [table[int(r)] for r in regions]


def _reduce_array(
    array: xr.DataArray,
    index: VoxelAffineIndex,
    dims: list[str],
    atlas: np.ndarray,
    present: np.ndarray,
    method: str,
) -> xr.DataArray:
    selected = atlas != 0
    voxels = mask_array(array, index, dims, selected)
    voxels = voxels.drop_vars([n for n in voxels.coords if voxels[n].dims == (VOXEL_DIM,)])
    voxels = voxels.assign_coords({REGION_DIM: (VOXEL_DIM, atlas[selected])})
    out_dtype = np.float32 if array.dtype == np.float32 else np.float64
    grouped = voxels.astype(np.float64).groupby({REGION_DIM: UniqueGrouper(labels=present)})
    reduced: xr.DataArray = getattr(grouped, method)(dim=VOXEL_DIM, skipna=False)
    reduced = reduced.astype(out_dtype)
    lead = [d for d in reduced.dims if d != REGION_DIM]
    reduced = reduced.transpose(*lead, REGION_DIM)
    reduced.attrs = dict(array.attrs)
    return reduced


def regions(
    obj: T_Xarray, labels: GridImage, reduce: str = "mean", names: RegionNames | None = None
) -> T_Xarray:
    """Region signals of ``obj`` over the atlas ``labels`` (see ``.nifti.regions``)."""
    if not isinstance(reduce, str) or reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(REDUCTIONS)}, got {reduce!r}")
    index = find_index(obj)
    dims = grid_dims(obj, index)
    atlas = _labels_on_grid(obj, index, labels, dims)
    present = np.unique(atlas)
    present = present[present != 0]
    if present.size == 0:
        raise ValueError(
            "the labels image has no labelled voxel on the data's grid (all are background 0)"
        )
    coords: dict[Hashable, Any] = {REGION_DIM: present}
    if names is not None:
        coords["name"] = (REGION_DIM, _region_names(names, present))
    method = REDUCTIONS[reduce]

    def one(array: xr.DataArray) -> xr.DataArray:
        return _reduce_array(array, index, dims, atlas, present, method).assign_coords(coords)

    if isinstance(obj, xr.DataArray):
        return one(obj)
    return map_grid_variables(obj, set(dims), one, "reduced to regions")
