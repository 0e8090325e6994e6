"""The ``.nifti`` accessor on Dataset and DataArray: a thin façade over the other modules."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import xarray as xr

from . import affine as affine_maths
from ._metadata import time_step
from ._nifti_plan import time_seconds
from .epi_mask import compute_mask as compute_epi_mask
from .grid import current_affine, find_index, restore_grid, select_variable, set_space
from .index import VoxelAffineIndex
from .interchange import decode, encode, to_nibabel
from .masking import mask as mask_voxels
from .masking import unmask as unmask_voxels
from .plot import orthoview
from .regions import regions as region_signals
from .reorient import reorient
from .resample import resample_to
from .transform import NiftiGeometry
from .writer import DEFAULT_COMPRESSLEVEL, plan_nifti, to_nifti

__all__ = ["NiftiDataArrayAccessor", "NiftiDatasetAccessor"]

T_Xarray = TypeVar("T_Xarray", xr.Dataset, xr.DataArray)


class _NiftiAccessor(Generic[T_Xarray]):
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

        Examples
        --------
        >>> import os, nibabel, numpy as np, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "example4d.nii.gz")
        >>> ds = xr.open_dataset(path, engine="nifti")
        >>> bool(np.allclose(ds.nifti.affine, nibabel.load(path).affine))
        True
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

    def voxel_to_world(self, i: Any, j: Any, k: Any) -> tuple[Any, Any, Any]:
        """World RAS+ mm of voxel coordinates, same kind as the input.

        Examples
        --------
        >>> import os, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "anatomical.nii")
        >>> ds = xr.open_dataset(path, engine="nifti")
        >>> [round(float(c), 2) for c in ds.nifti.voxel_to_world(0, 0, 0)]
        [32.0, -40.0, -16.0]
        """
        return _apply(self.affine, i, j, k)

    def world_to_voxel(
        self, x: Any, y: Any, z: Any, *, round: bool = False
    ) -> tuple[Any, Any, Any]:
        """Continuous voxel coordinates ``(i, j, k)`` of world points (``round=True``: ints).

        Raises ``ValueError`` when the affine is singular.

        Examples
        --------
        >>> import os, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "anatomical.nii")
        >>> ds = xr.open_dataset(path, engine="nifti")
        >>> ds.nifti.world_to_voxel(32.0, -40.0, -16.0, round=True)
        (0, 0, 0)
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
        ``axcodes`` is a string such as ``"LPS"`` or a sequence of three
        letters, one of R/L, A/P and S/I each: anything else raises
        ``TypeError`` (not letters) or ``ValueError`` (wrong letters).

        Examples
        --------
        >>> import os, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "example4d.nii.gz")
        >>> ds = xr.open_dataset(path, engine="nifti")
        >>> ds.nifti.reorient("LPS").nifti.axcodes
        ('L', 'P', 'S')
        """

        return reorient(self._obj, axcodes)

    def to_canonical(self) -> T_Xarray:
        """Lazy closest RAS+ reorientation, as :func:`nibabel.as_closest_canonical`."""
        return self.reorient("RAS")

    def set_space(self, space: str) -> T_Xarray:
        """The same object with its grid labelled as another world space (no resampling).

        ``space`` is ``"scanner"``, ``"aligned"``, ``"talairach"``, ``"mni"``,
        ``"template"`` or ``"unknown"``; the sform/qform codes that label the
        grid's affine change, the affine does not. Use it when two images are
        on the same grid but their headers name different spaces (nilearn's
        ``resample_to_img`` keeps the source's sform_code, for one).

        Examples
        --------
        >>> import os, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "example4d.nii.gz")
        >>> ds = xr.open_dataset(path, engine="nifti")
        >>> ds.nifti.set_space("aligned").nifti.space
        'aligned'
        """
        return set_space(self._obj, space)

    def restore_grid(self, like: xr.Dataset | xr.DataArray | None = None) -> T_Xarray:
        """Re-attach the NIfTI grid that an xarray operation dropped (nothing is computed).

        Without ``like``, the grid is rebuilt from the lazy ``x, y, z`` that
        operations such as ``coarsen`` keep while dropping their index. With
        ``like`` (the object it came from), that object's grid is copied; the
        spatial dims must match. See the table in the coordinates guide.

        Examples
        --------
        >>> import os, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "example4d.nii.gz")
        >>> bold = xr.open_dataset(path, engine="nifti")
        >>> bold.coarsen(time=2).mean().nifti.restore_grid().nifti.axcodes
        ('L', 'A', 'S')
        """
        return restore_grid(self._obj, like)

    def resample_to(
        self,
        target: Any,
        order: int = 1,
        fill_value: float = 0.0,
        *,
        var: str | None = None,
        chunks: Any = None,
    ) -> T_Xarray:
        """Resample onto another grid (target voxel ``v`` samples ``inv(A) @ B @ v``).

        Parameters
        ----------
        target
            A Dataset/DataArray on a NIfTI grid, or an ``(affine, shape)`` pair.
        order
            Spline order: 0 nearest, 1 linear (default), 3 cubic.
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

        Examples
        --------
        >>> import os, numpy as np, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "anatomical.nii")
        >>> ds = xr.open_dataset(path, engine="nifti")
        >>> out = ds.nifti.resample_to((np.diag([4.0, 4, 4, 1]), (10, 10, 10)))
        >>> out.data.shape
        (10, 10, 10)
        """

        return resample_to(
            self._obj, target, order=order, fill_value=fill_value, chunks=chunks, var=var
        )

    # -- headers and I/O ----------------------------------------------------------------
    def _array(self, var: str | None = None) -> xr.DataArray:

        return select_variable(self._obj, var)

    @property
    def header(self) -> Any:
        """A nibabel header rebuilt from the index and attrs (what ``to_nifti`` writes).

        For edited data that still carries its source's scaling in ``encoding``,
        choosing the stored dtype reads the values once, block by block.
        """

        return plan_nifti(self._array()).header

    def to_nifti(
        self,
        path: Any,
        *,
        var: str | None = None,
        version: int | None = None,
        dtype: Any = None,
        compresslevel: int | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> Any:
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
            gzip level for ``.gz`` outputs (default 1, as nibabel).
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

        Examples
        --------
        >>> import os, tempfile, nibabel, xarray as xr
        >>> from nibabel.testing import data_path
        >>> path = os.path.join(data_path, "example4d.nii.gz")
        >>> ds = xr.open_dataset(path, engine="nifti", chunks={})
        >>> target = os.path.join(tempfile.mkdtemp(), "mean.nii.gz")
        >>> out = ds.data.mean("time").nifti.to_nifti(target)
        >>> nibabel.load(out).shape
        (128, 96, 24)
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
        self, *, var: str | None = None, version: int | None = None, dtype: Any = None
    ) -> Any:
        """A nibabel ``Nifti1Image``/``Nifti2Image`` with the header ``to_nifti`` writes.

        The data stay lazy (dask) until nibabel reads them.
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
    ) -> Any:
        """Orthogonal views (sagittal, coronal, axial) through a world point.

        See :func:`xarray_nifti.plot.orthoview`; needs matplotlib
        (``pip install 'xarray-nifti[plot]'``). A 2-D plane of a grid (e.g.
        ``.isel(k=10)``) is drawn as its one view; ``time=`` outside the
        series raises ``IndexError``. Returns a
        :class:`matplotlib.figure.Figure` made without pyplot, so the
        matplotlib backend in use is left alone.
        """

        return orthoview(self._array(var), at, convention=convention, time=time, **kwargs)

    def encode(self) -> T_Xarray:
        """Drop the lazy ``x, y, z`` and keep the geometry as plain attributes (Zarr, NetCDF)."""

        return encode(self._obj)

    def decode(self) -> T_Xarray:
        """Rebuild the grid index from attributes written by :meth:`encode`."""

        return decode(self._obj)

    # -- masks and atlases ------------------------------------------------------------
    def mask(self, mask: Any) -> T_Xarray:
        """The voxels inside a brain mask, as a ``(…, voxel)`` array (image → matrix).

        Parameters
        ----------
        mask
            A boolean (or 0/1) 3-D image on the same grid: a DataArray or
            Dataset opened with this package, a nibabel image, or the path of
            a NIfTI file.

        Returns
        -------
        DataArray or Dataset
            The non-spatial dims first (e.g. ``time``), then ``voxel``, in
            nilearn's voxel order (``data[mask]``: C order over the grid's
            axes ``i, j, k``, whatever the order of the object's dims), with
            the same values as ``NiftiMasker(mask_img=mask).fit_transform``
            and the input's dtype (nilearn casts integers to float32). Along
            ``voxel`` the coordinates ``i, j, k`` (voxel indices) and
            ``x, y, z`` (world mm) are kept, and the attributes of ``i, j, k``
            hold the grid for :meth:`unmask`. Dask input gives a lazy result
            with the same chunks along the other dims; the mask itself is
            read (or computed) right away, as its voxel count is the
            result's size.

        Raises
        ------
        ValueError
            If the mask is not on the data's grid (resample it first with
            ``mask.nifti.resample_to(data, order=0)``), is not binary, or is
            empty.

        Examples
        --------
        >>> import os, numpy as np, xarray as xr
        >>> from nibabel.testing import data_path
        >>> bold = xr.open_dataarray(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
        >>> brain = bold.mean("time") > 1000
        >>> masked = bold.nifti.mask(brain)
        >>> masked.dims, masked.sizes["voxel"] == int(brain.sum())
        (('time', 'voxel'), True)
        """
        return mask_voxels(self._obj, mask)

    def unmask(self, fill_value: float = 0) -> T_Xarray:
        """Put ``(…, voxel)`` values made by :meth:`mask` back onto their grid (matrix → image).

        Parameters
        ----------
        fill_value
            Value of the voxels outside the mask. A value that is not a whole
            number turns integer data into floats.

        Returns
        -------
        DataArray or Dataset
            The spatial dims ``i, j, k`` first, then the other dims, with the
            grid's index (so ``to_nifti``, ``plot`` and arithmetic with the
            original image work); equal to nilearn's
            ``NiftiMasker.inverse_transform``. Dask input stays lazy.

        Raises
        ------
        ValueError
            If there is no ``voxel`` dim, or its ``i, j, k`` coordinates or
            the grid attributes on them were dropped.

        Examples
        --------
        >>> import os, numpy as np, xarray as xr
        >>> from nibabel.testing import data_path
        >>> bold = xr.open_dataarray(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
        >>> masked = bold.nifti.mask(bold.mean("time") > 1000)
        >>> back = (masked - masked.mean("time")).nifti.unmask()
        >>> back.dims, back.nifti.axcodes
        (('i', 'j', 'k', 'time'), ('L', 'A', 'S'))
        """
        return unmask_voxels(self._obj, fill_value)

    def regions(self, labels: Any, reduce: str = "mean", names: Any = None) -> T_Xarray:
        """One signal per atlas region (as nilearn's ``NiftiLabelsMasker``).

        Parameters
        ----------
        labels
            A 3-D atlas of integer labels (0 is background): DataArray,
            Dataset, nibabel image or path. On another grid it is resampled
            onto the data's with nearest neighbour, as nilearn does by
            default; labels that vanish in that resampling are left out with
            a :class:`~xarray_nifti.regions.LabelsResamplingWarning`.
        reduce
            ``"mean"``, ``"median"``, ``"sum"``, ``"std"``
            (``"standard_deviation"``), ``"variance"``, ``"minimum"`` or
            ``"maximum"`` (nilearn's ``strategy``).
        names
            Region names: a mapping ``{label: name}``, a pandas Series, or a
            lookup table (DataFrame with ``index`` and ``name`` columns).

        Returns
        -------
        DataArray or Dataset
            The non-spatial dims, then ``region`` with the label values as
            its coordinate (and a ``name`` coordinate when ``names`` is
            given); float32 for float32 data, float64 otherwise. Voxels
            holding NaN make their region's value NaN (nilearn counts them
            as 0). Dask input stays lazy (the atlas is read right away); the
            reduction runs through xarray's ``groupby`` (flox).

        Raises
        ------
        ValueError
            For an unknown ``reduce``, labels that are not whole numbers, or
            an atlas with no labelled voxel on the data's grid.

        Examples
        --------
        >>> import os, numpy as np, xarray as xr
        >>> from nibabel.testing import data_path
        >>> bold = xr.open_dataarray(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
        >>> halves = (bold.isel(time=0, drop=True) * 0 + 1).astype("int16")
        >>> halves[64:] = 2
        >>> signals = bold.nifti.regions(halves, names={1: "left", 2: "right"})
        >>> signals.dims, signals["name"].values.tolist()
        (('time', 'region'), ['left', 'right'])
        """
        return region_signals(self._obj, labels, reduce=reduce, names=names)

    def compute_mask(self, *, var: str | None = None) -> xr.DataArray:
        """Brain mask of a 3-D or 4-D EPI image, as ``nilearn.masking.compute_epi_mask``.

        With nilearn's default parameters (``lower_cutoff=0.2``,
        ``upper_cutoff=0.85``, ``connected=True``, ``opening=2``,
        ``exclude_zeros=False``). The temporal mean is computed chunk by
        chunk; the mask itself is computed right away.

        Parameters
        ----------
        var
            Data variable to use, for a Dataset with several.

        Returns
        -------
        xarray.DataArray
            Boolean, named ``mask``, on the image's grid (with its index, so
            it can be passed to :meth:`mask` or saved with ``to_nifti``).

        Examples
        --------
        >>> import os, xarray as xr
        >>> from nibabel.testing import data_path
        >>> ds = xr.open_dataset(os.path.join(data_path, "example4d.nii.gz"), engine="nifti")
        >>> brain = ds.nifti.compute_mask()
        >>> brain.dtype, brain.dims, int(brain.sum())
        (dtype('bool'), ('i', 'j', 'k'), 84767)
        """
        return compute_epi_mask(self._obj, var=var)


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
