"""The ``.nifti`` accessor on Dataset and DataArray: a thin façade over the other modules."""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
from nibabel.nifti1 import Nifti1Header, Nifti1Image
from numpy.typing import ArrayLike, DTypeLike

from . import affine as affine_maths
from ._accessor_maskers import MaskerMembers
from ._metadata import time_step
from ._nifti_plan import time_seconds
from .grid import T_Xarray, current_affine, find_index, restore_grid, select_variable, set_space
from .index import VoxelAffineIndex
from .interchange import decode, encode, to_nibabel
from .plot import orthoview
from .reorient import reorient
from .resample import Chunks, resample_to
from .transform import NiftiGeometry
from .writer import DEFAULT_COMPRESSLEVEL, plan_nifti, to_nifti

__all__ = ["NiftiDataArrayAccessor", "NiftiDatasetAccessor"]

if TYPE_CHECKING:  # matplotlib is optional: the plot extra
    from matplotlib.figure import Figure


class _NiftiAccessor(MaskerMembers[T_Xarray]):
    def __init__(self, obj: T_Xarray) -> None:
        self._obj: T_Xarray = obj

    # -- geometry ------------------------------------------------------------------
    @property
    def _index(self) -> VoxelAffineIndex:
        # decode() is the one method that works without a grid
        return find_index(self._obj)

    @property
    def geometry(self) -> NiftiGeometry:
        """The full geometry (affine, sform, qform, codes), axes in the grid's order.

        That is the file's axis order, or the new order after ``reorient``;
        axes dropped by integer selection keep their place (with size 1).
        """
        return self._index.geometry

    @property
    def affine(self) -> np.ndarray:
        """4×4 affine from voxel centres to world RAS+ mm, for the current grid.

        Its columns follow the object's spatial dims in their current order;
        an axis dropped by integer selection keeps its column (last).
        """
        return current_affine(self._obj, self._index)

    @property
    def axcodes(self) -> tuple[str, ...]:
        """Axis direction codes of the spatial dims, e.g. ``("L", "A", "S")``."""
        index = self._index
        n_present = len(index.transform.present_axes)
        return affine_maths.axcodes(self.affine)[:n_present]

    @property
    def space(self) -> str:
        """World space of the affine: scanner, aligned, talairach, mni, template or unknown."""
        return self._index.geometry.space

    @property
    def zooms(self) -> tuple[float, ...]:
        """Voxel sizes (mm) of the spatial dims, then the time step (s) if there is a time dim."""
        index = self._index
        sizes = affine_maths.voxel_sizes(self.affine)[: len(index.transform.present_axes)]
        zooms = [float(z) for z in sizes]
        obj = self._obj
        if "time" in obj.dims:
            # The TR the header gets (see to_nifti), also for uneven time axes.
            tr = self._attrs().get("repetition_time")
            step = time_step(time_seconds(obj), None if tr is None else float(tr))[0]
            zooms.append(float(step or 0.0))
        return tuple(zooms)

    def _attrs(self) -> dict[Hashable, Any]:
        obj = self._obj
        if isinstance(obj, xr.DataArray):
            return dict(obj.attrs)
        for var in obj.data_vars.values():
            return dict(var.attrs)
        return dict(obj.attrs)

    def voxel_to_world(
        self, i: ArrayLike | xr.DataArray, j: ArrayLike | xr.DataArray, k: ArrayLike | xr.DataArray
    ) -> tuple[Any, Any, Any]:
        """World positions (RAS+ mm) of voxel coordinates, through :attr:`affine`.

        Parameters
        ----------
        i, j, k
            Voxel coordinates along the spatial dims in their current order:
            numbers, numpy arrays or DataArrays (broadcast against each
            other), whole or fractional.

        Returns
        -------
        tuple
            ``(x, y, z)`` in mm, each of the same kind as the input (a float
            for numbers, an array for arrays, a DataArray for DataArrays).
        """
        return _apply(self.affine, i, j, k)

    def world_to_voxel(
        self,
        x: ArrayLike | xr.DataArray,
        y: ArrayLike | xr.DataArray,
        z: ArrayLike | xr.DataArray,
        *,
        round: bool = False,
    ) -> tuple[Any, Any, Any]:
        """Voxel coordinates of world points (RAS+ mm): the inverse of :meth:`voxel_to_world`.

        Parameters
        ----------
        x, y, z
            World positions in mm: numbers, numpy arrays or DataArrays.
        round
            Round to the nearest voxel and return integers (``int`` for
            numbers, int64 arrays otherwise); by default the continuous
            coordinates are returned as floats.

        Returns
        -------
        tuple
            ``(i, j, k)`` along the spatial dims in their current order, each
            of the same kind as the input. Points outside the image give
            coordinates outside ``0 .. size - 1``.

        Raises
        ------
        ValueError
            If the affine is singular (a zero voxel size or collinear axes).
        """
        out = list(_apply(affine_maths.inverse_affine(self.affine), x, y, z))
        if round:
            out = [_round_to_int(v) for v in out]
        return out[0], out[1], out[2]

    # -- reorientation ------------------------------------------------------------------
    def reorient(self, axcodes: str | Sequence[str]) -> T_Xarray:
        """Lazily flip and transpose the spatial axes to the given axis codes.

        No resampling happens: every voxel keeps its world position; sform and
        qform (and their codes) follow the new grid. The spatial dims are
        renamed so that ``i, j, k`` are again the first, second and third axes.

        Parameters
        ----------
        axcodes
            Where each axis points, e.g. ``"LPS"`` or ``("L", "P", "S")``:
            three letters, one of R/L, A/P and S/I each.

        Returns
        -------
        Dataset or DataArray
            The same kind as the input, on the reoriented grid; nothing is
            computed.

        Raises
        ------
        TypeError
            If ``axcodes`` is not a string or a sequence of letters.
        ValueError
            If the letters are not one of R/L, A/P and S/I each.
        """
        return reorient(self._obj, axcodes)

    def to_canonical(self) -> T_Xarray:
        """Lazy closest RAS+ reorientation, as :func:`nibabel.as_closest_canonical`.

        Returns
        -------
        Dataset or DataArray
            ``reorient("RAS")``: the same kind as the input, on the closest
            RAS+ grid; nothing is computed.
        """
        return self.reorient("RAS")

    def set_space(self, space: str) -> T_Xarray:
        """The same object with its grid labelled as another world space (no resampling).

        The sform/qform codes that label the grid's affine change, the affine
        does not. Use it when two images are on the same grid but their
        headers name different spaces (nilearn's ``resample_to_img`` keeps
        the source's sform_code, for one).

        Parameters
        ----------
        space
            ``"scanner"``, ``"aligned"``, ``"talairach"``, ``"mni"``,
            ``"template"`` or ``"unknown"``.

        Returns
        -------
        Dataset or DataArray
            The same kind as the input, sharing its data.
        """
        return set_space(self._obj, space)

    def restore_grid(self, like: xr.Dataset | xr.DataArray | None = None) -> T_Xarray:
        """Re-attach the NIfTI grid that an xarray operation dropped (nothing is computed).

        Operations such as ``coarsen`` keep the lazy ``x, y, z`` coordinates
        but drop their index; see the table in the coordinates guide.

        Parameters
        ----------
        like
            The object the data came from: its grid is copied (its spatial
            dims must be in this object, with the same sizes). By default
            the grid is rebuilt from the lazy ``x, y, z`` coordinates.

        Returns
        -------
        Dataset or DataArray
            The same kind as the input, with the grid's index.
        """
        return restore_grid(self._obj, like)

    def resample_to(
        self,
        target: xr.Dataset | xr.DataArray | tuple[ArrayLike, Sequence[int]],
        order: int = 1,
        fill_value: float = 0.0,
        *,
        var: str | None = None,
        chunks: Chunks = None,
    ) -> T_Xarray:
        """Resample onto another grid, lazily and chunk by chunk.

        Target voxel ``v`` samples the source at ``inv(A) @ B @ v``, where
        ``A`` is the source's affine and ``B`` the target's.

        Parameters
        ----------
        target
            A Dataset/DataArray on a NIfTI grid, or an ``(affine, shape)`` pair.
        order
            Spline order from 0 to 5: 0 nearest, 1 linear (default), 3 cubic.
        fill_value
            Value for target voxels outside the source's field of view. With
            ``order=0`` on integer data, a fill that is not a whole number
            (``NaN``, ``0.5``) makes the result float; one outside the
            integer range raises ``ValueError``.
        var
            Keep only this data variable of a Dataset (default: resample all
            variables on the grid).
        chunks
            Spatial chunks of the output: an int, one size per spatial dim,
            a dict by dim name (``-1`` for a whole dim) or ``"auto"``. When
            given, the result is dask-backed even for in-memory input.

        Returns
        -------
        Dataset or DataArray
            The same kind as the input, on the target grid (same index, so it
            combines with the target); non-spatial dims (time, ...) and attrs
            are kept. Dask-backed input gives a lazy dask result; in-memory
            (or ``chunks=None``-opened) input is resampled right away.
        """
        return resample_to(
            self._obj, target, order=order, fill_value=fill_value, chunks=chunks, var=var
        )

    # -- headers and I/O ----------------------------------------------------------------
    def _array(self, var: str | None = None) -> xr.DataArray:
        return select_variable(self._obj, var)

    @property
    def header(self) -> Nifti1Header:
        """A nibabel header rebuilt from the index and attrs (what ``to_nifti`` writes).

        A ``Nifti2Header`` where ``to_nifti`` would write NIfTI-2; on a
        Dataset, the header of its one data variable. For edited data that
        still carries its source's scaling in ``encoding``, choosing the
        stored dtype reads the values once, block by block.
        """
        header: Nifti1Header = plan_nifti(self._array()).header
        return header

    def to_nifti(
        self,
        path: str | os.PathLike[str],
        *,
        var: str | None = None,
        version: int | None = None,
        dtype: DTypeLike | None = None,
        compresslevel: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> Path | str:
        """Write to ``.nii``, ``.nii.gz`` or a ``.hdr``/``.img`` pair, streaming and atomically.

        Parameters
        ----------
        path
            Target file; the suffix chooses the format.
        var
            Data variable to write, for a Dataset with several.
        version
            1 or 2 (NIfTI-2). Default: the source's version, or 2 when a dim
            exceeds NIfTI-1's limit of 32767.
        dtype
            Stored dtype. Default: the source's stored dtype and scaling while
            the values still fit them exactly (unchanged or only selected
            data); float results as float32; ``bool`` as uint8. An integer
            dtype for float data gets ``scl_slope``/``scl_inter`` from the
            data range, as ``nib.save`` (whole numbers that fit are stored as
            they are); ``scale_factor``/``add_offset`` in ``encoding`` are used
            when the values fit them. NaN is stored as the value nearest 0.
        compresslevel
            gzip level (0-9) of ``.gz`` outputs; the default, 1 (as nibabel),
            compresses with ISA-L, other levels with zlib-ng.
        storage_options
            fsspec options when ``path`` is a URL (``s3://...``): the file is
            written locally, then uploaded whole.

        Returns
        -------
        pathlib.Path or str
            The written file (the URL for URLs).

        Notes
        -----
        Writing onto the file a lazy dataset still reads from raises
        ``ValueError``: call ``.load()`` first, or write elsewhere. So does an
        empty dim. A time axis that is not evenly spaced warns
        (:class:`~xarray_nifti.NiftiTimeAxisWarning`).
        """
        level = DEFAULT_COMPRESSLEVEL if compresslevel is None else compresslevel
        return to_nifti(
            self._obj,
            path,
            var=var,
            version=version,
            dtype=dtype,
            compresslevel=level,
            storage_options=storage_options,
        )

    def to_nibabel(
        self, *, var: str | None = None, version: int | None = None, dtype: DTypeLike | None = None
    ) -> Nifti1Image:
        """A nibabel image with the header ``to_nifti`` writes; the data stay lazy.

        Parameters
        ----------
        var, version, dtype
            As for :meth:`to_nifti`.

        Returns
        -------
        nibabel.Nifti1Image or nibabel.Nifti2Image
            Its data object computes the array (in NIfTI axis order) only when
            nibabel reads it (``get_fdata``, ``dataobj[...]``, ``nib.save``).
            ``scl_slope``/``scl_inter`` are left unset, as in every in-memory
            nibabel image: ``nib.save`` chooses the scaling of integer output
            from the data, where :meth:`to_nifti` keeps the source's.
        """
        return to_nibabel(self._array(var), version=version, dtype=dtype)

    def plot(
        self,
        at: Sequence[float] | None = None,
        *,
        convention: str = "neurological",
        time: int | None = None,
        var: str | None = None,
        **kwargs: Any,
    ) -> Figure:
        """Orthogonal views (sagittal, coronal, axial) through a world point.

        Draws with :func:`xarray_nifti.plot.orthoview`; needs matplotlib
        (``pip install 'xarray-nifti[plot]'``). A 2-D plane of a grid (e.g.
        ``.isel(k=10)``) is drawn as its one view.

        Parameters
        ----------
        at, convention, time
            As for :func:`~xarray_nifti.plot.orthoview`: the world point
            ``(x, y, z)`` in mm (default: the grid's centre), ``"neurological"``
            or ``"radiological"``, and the volume of a 4-D image (default 0;
            ``IndexError`` outside the series).
        var
            Data variable to plot, for a Dataset with several.
        **kwargs
            ``cmap``, ``vmin``, ``vmax`` and ``figsize`` of
            :func:`~xarray_nifti.plot.orthoview`.

        Returns
        -------
        matplotlib.figure.Figure
            Made without pyplot, so the matplotlib backend in use is left alone.
        """
        return orthoview(self._array(var), at, convention=convention, time=time, **kwargs)

    def encode(self) -> T_Xarray:
        """Drop the lazy ``x, y, z`` and keep the geometry as plain attributes (Zarr, NetCDF).

        The world coordinates are dropped without being computed; each data
        variable gets the affines, codes and shape as ``nifti_*`` attributes,
        and the NIfTI-specific encoding (raw header fields, extensions) as a
        JSON string attribute ``nifti_encoding``. :meth:`decode` reverses it.

        Returns
        -------
        Dataset or DataArray
            The same kind as the input, without a grid index.
        """
        return encode(self._obj)

    def decode(self) -> T_Xarray:
        """Rebuild the grid index from attributes written by :meth:`encode`.

        The one member that works on an object without a grid.

        Returns
        -------
        Dataset or DataArray
            The same kind as the input, with the grid's index and the NIfTI
            encoding restored; the ``nifti_*`` attributes are removed.

        Raises
        ------
        ValueError
            If there are no ``nifti_*`` geometry attributes.
        """
        return decode(self._obj)


def _apply(matrix: np.ndarray, a: Any, b: Any, c: Any) -> tuple[Any, Any, Any]:
    # Plain arithmetic (not apply_affine) so DataArrays, arrays and scalars keep their kind.
    x, y, z = (
        matrix[row, 0] * a + matrix[row, 1] * b + matrix[row, 2] * c + matrix[row, 3]
        for row in range(3)
    )
    return x, y, z


def _round_to_int(value: Any) -> Any:
    rounded = np.rint(value)
    if isinstance(rounded, xr.DataArray):
        return rounded.astype(np.int64)
    if np.ndim(rounded) == 0:
        return int(rounded)
    return np.asarray(rounded).astype(np.int64)


@xr.register_dataset_accessor("nifti")
class NiftiDatasetAccessor(_NiftiAccessor[xr.Dataset]):
    """NIfTI geometry and I/O for a Dataset opened with ``engine="nifti"``."""


@xr.register_dataarray_accessor("nifti")
class NiftiDataArrayAccessor(_NiftiAccessor[xr.DataArray]):
    """NIfTI geometry and I/O for a DataArray on a NIfTI grid."""
