"""What writing a DataArray as NIfTI means: axis order, header, stored dtype and scaling.

:func:`plan_nifti` checks everything that can be checked before a byte is
written: dims NIfTI can hold, no empty dims, dtypes it can store, values that
fit the stored type (see :mod:`xarray_nifti._scaling`), and a time axis the
header can describe (else a :class:`~xarray_nifti.NiftiTimeAxisWarning`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr
from nibabel.nifti1 import Nifti1Header
from numpy.typing import DTypeLike

from ._errors import NiftiTimeAxisWarning
from ._metadata import DIM_NAMES, build_header
from ._scaling import Storage, choose_storage
from ._time_axis import time_step
from .grid import axis_order, find_index
from .transform import NiftiGeometry

__all__ = ["NiftiPlan", "plan_nifti", "time_seconds"]

_NIFTI1_MAX_DIM = 32767
_MAX_DIMS = 7
_RGB_DIM = "rgb"


@dataclass(frozen=True)
class NiftiPlan:
    """Everything needed to write one DataArray as NIfTI."""

    data: xr.DataArray  # transposed to NIfTI axis order, spatial dims padded (rgb last)
    header: Nifti1Header
    storage: Storage  # stored dtype (uint8 for RGB) and scaling
    geometry: NiftiGeometry
    channels: int = 0  # 3 (RGB) or 4 (RGBA) when the data has an ``rgb`` dim

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the stored array (without the ``rgb`` dim)."""
        shape = tuple(int(n) for n in self.data.shape)
        return shape[:-1] if self.channels else shape


def time_seconds(obj: xr.DataArray | xr.Dataset) -> np.ndarray | None:
    """Values of the ``time`` coordinate in seconds (``None`` without a numeric one)."""
    array = obj
    if "time" not in array.dims or "time" not in array.coords:
        return None
    values = array["time"].values
    if values.dtype.kind == "m":  # decoded as timedeltas by a NetCDF/Zarr reader
        return np.asarray(values / np.timedelta64(1, "s"), dtype=np.float64)
    if values.dtype.kind not in "iuf":
        return None
    return np.asarray(values, dtype=np.float64)


def _check_time_axis(times: np.ndarray | None, attrs: dict[Any, Any]) -> None:
    tr_attr = attrs.get("repetition_time")
    tr, regular = time_step(times, None if tr_attr is None else float(tr_attr))
    if not regular and times is not None:
        shown = ", ".join(f"{t:g}" for t in times[:6]) + (", ..." if len(times) > 6 else "")
        warnings.warn(
            f"the time coordinate ({shown} s) is not evenly spaced in increasing order, which "
            f"NIfTI cannot store: writing TR={tr} s from the first volume's time on; keep the "
            "times beside the file (e.g. a BIDS events/confounds table) if they matter",
            NiftiTimeAxisWarning,
            stacklevel=4,
        )


def _check_not_empty(array: xr.DataArray) -> None:
    empty = [str(dim) for dim, size in array.sizes.items() if size == 0]
    if empty:
        raise ValueError(
            f"cannot write an empty image: dim {', '.join(map(repr, empty))} has size 0 "
            f"(sizes {dict(array.sizes)}); NIfTI readers reject zero-sized dims, check the "
            "selection"
        )


def plan_nifti(
    array: xr.DataArray,
    *,
    version: int | None = None,
    dtype: DTypeLike | None = None,
    pair: bool = False,
) -> NiftiPlan:
    """Work out header, axis order, stored dtype and scaling for writing ``array``.

    Raises ``ValueError`` for objects without a grid, with dims NIfTI cannot
    hold or with an empty dim, ``TypeError`` for dtypes it cannot store.
    Deciding the scaling may read the data once, block by block (see
    :mod:`xarray_nifti._scaling`).

    Examples
    --------
    >>> import os, xarray as xr
    >>> from nibabel.testing import data_path
    >>> ds = xr.open_dataset(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
    >>> plan = plan_nifti(ds.data)
    >>> plan.shape, plan.storage.dtype
    ((128, 96, 24, 2), dtype('int16'))
    """
    index = find_index(array)
    transform = index.transform
    order = axis_order(array, index)
    present = [str(transform.axis_dims[a]) for a in order if transform.axis_dims[a] is not None]
    _check_not_empty(array)
    channels = 0
    if _RGB_DIM in array.dims:
        channels = int(array.sizes[_RGB_DIM])
        if channels not in (3, 4):
            raise ValueError(f"an 'rgb' dim must have 3 (RGB) or 4 (RGBA) entries, not {channels}")
    extra = [str(d) for d in array.dims if d not in present and d != _RGB_DIM]
    unknown = [d for d in extra if d not in DIM_NAMES[3:]]
    if unknown:
        raise ValueError(
            f"cannot map dims {unknown} to NIfTI axes: besides the spatial dims "
            f"{present}, NIfTI has 'time', 'u', 'v', 'w' only (at most {_MAX_DIMS} dims); "
            "select or reduce the others first (or rename one to 'time')"
        )
    extra = [d for d in DIM_NAMES[3:] if d in extra]
    data = array.transpose(*present, *extra, *([_RGB_DIM] if channels else []))
    # Dropped spatial axes get size 1 in the file, in their original position.
    expand = [f"__axis{a}" for a in order[len(present) :]]
    for name in expand:
        data = data.expand_dims(name, axis=len(present))
        present.append(name)
    shape = tuple(int(n) for n in data.shape[: len(data.shape) - (1 if channels else 0)])
    if len(shape) > _MAX_DIMS:
        raise ValueError(f"NIfTI holds at most {_MAX_DIMS} dims, this array has {len(shape)}")
    permutation = np.eye(4)[:, [*order, 3]]
    geometry = index.geometry.transformed(permutation, shape[:3])
    # Dropped spatial axes come last in ``order``: without extra dims they are
    # trailing singletons, which NIfTI leaves out (dim[0] counts only real axes).
    nifti_shape = shape if extra else shape[: max(1, len(transform.present_axes))]
    encoding = dict(array.encoding)
    if version is None:
        version = 2 if encoding.get("format") == "nifti2" else 1
        if max(shape) > _NIFTI1_MAX_DIM:
            version = 2
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    if version == 1 and max(shape) > _NIFTI1_MAX_DIM:
        raise ValueError(f"NIfTI-1 dims are at most {_NIFTI1_MAX_DIM}; use version=2")
    if channels:
        if dtype is not None or array.dtype != np.uint8:
            raise TypeError(
                f"RGB data (an 'rgb' dim) is stored as uint8 per channel; got {array.dtype}"
                + (f" and dtype={dtype!r}" if dtype is not None else "")
            )
        storage = Storage(np.dtype(np.uint8))
        names = ("R", "G", "B", "A")[:channels]
        header_dtype = np.dtype([(n, "u1") for n in names])
    else:
        storage = choose_storage(array, dtype, encoding)
        header_dtype = storage.dtype
    times = time_seconds(array)
    if len(nifti_shape) > 3:
        _check_time_axis(times, dict(array.attrs))
    header = build_header(
        geometry,
        nifti_shape,
        header_dtype,
        array.attrs,
        encoding,
        version=version,
        pair=pair,
        times=times,
    )
    if storage.slope is not None:
        header.set_slope_inter(storage.slope, storage.inter)
    if encoding.get("byteorder") == "big" and header_dtype.itemsize > 1:
        header = header.as_byteswapped(">")
    return NiftiPlan(data, header, storage, geometry, channels=channels)
